#include "launch/mesh_outputs.h"

#include <cstring>

#include "models/sharding.h"
#include "models/tp_context.h"
#include "parallel/shard_gather.h"

namespace weft::cli {
namespace {

// World rank of the given coordinates (sp = 0).
int rank_at(const parallel::ParallelDims& d, int tp, int dp, int pp) {
  return tp + d.tp * d.sp * (dp + d.dp * pp);
}

Tensor concat_rows(const std::vector<Tensor>& parts) {
  int64_t rows = 0;
  for (const Tensor& p : parts) rows += p.dim(0);
  Shape shape = parts.front().shape();
  shape[0] = rows;
  Tensor out = Tensor::empty(shape, parts.front().dtype(), Device::cpu());
  int64_t at = 0;
  for (const Tensor& p : parts) {
    out.slice(at, at + p.dim(0)).copy_from(p);
    at += p.dim(0);
  }
  return out;
}

// Everything here runs on the host: the outputs are assembled in host memory for writing.

// Sends a named tensor as three messages: name bytes (with its length first), shape, data.
void send_named(comm::Communicator& world, const std::string& name, const Tensor& t, int dst) {
  Tensor header = Tensor::from_ints({static_cast<int64_t>(name.size()), t.ndim()}, {2});
  world.send(header, dst);
  Tensor bytes = Tensor::empty({static_cast<int64_t>(name.size())}, DType::kU8, Device::cpu());
  std::memcpy(bytes.raw(), name.data(), name.size());
  world.send(bytes, dst);
  world.send(Tensor::from_ints(std::vector<int64_t>(t.shape()), {t.ndim()}), dst);
  world.send(t.host(), dst);
}

std::pair<std::string, Tensor> recv_named(comm::Communicator& world, int src) {
  Tensor header = Tensor::empty({2}, DType::kI64, Device::cpu());
  world.recv(header, src);
  const std::vector<int64_t> h = header.to_ints();
  Tensor bytes = Tensor::empty({h[0]}, DType::kU8, Device::cpu());
  world.recv(bytes, src);
  Tensor shape = Tensor::empty({h[1]}, DType::kI64, Device::cpu());
  world.recv(shape, src);
  Tensor t = Tensor::empty(shape.to_ints(), DType::kF32, Device::cpu());
  world.recv(t, src);
  return {std::string(static_cast<const char*>(bytes.raw()), h[0]), t};
}

// Writes x [b, c, V] into columns `positions` of into [b, T, V].
void scatter_positions(const Tensor& x, const std::vector<int64_t>& positions, Tensor& into) {
  const int64_t b = x.dim(0), c = x.dim(1), v = x.dim(2), t = into.dim(1);
  const Tensor src = x.view({b * c, v});
  Tensor dst = into.view({b * t, v});
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < c; ++j) {
      dst.slice(i * t + positions[j], i * t + positions[j] + 1)
          .copy_from(src.slice(i * c + j, i * c + j + 1));
    }
  }
}

// The sp group's position blocks [b, c, V] -> [b, T, V] on sp rank 0 (undefined elsewhere).
Tensor gather_sequence(comm::Communicator& sp, const Tensor& mine,
                       const std::vector<int64_t>& positions, int64_t seq_len) {
  if (sp.size() == 1) return mine;
  const int64_t c = static_cast<int64_t>(positions.size());
  if (sp.rank() != 0) {
    sp.send(Tensor::from_ints(positions, {c}), 0);
    sp.send(mine, 0);
    return Tensor();
  }
  Tensor whole = Tensor::empty({mine.dim(0), seq_len, mine.dim(2)}, DType::kF32, Device::cpu());
  scatter_positions(mine, positions, whole);
  for (int r = 1; r < sp.size(); ++r) {
    Tensor theirs_at = Tensor::empty({c}, DType::kI64, Device::cpu());
    sp.recv(theirs_at, r);
    Tensor theirs = Tensor::empty(mine.shape(), DType::kF32, Device::cpu());
    sp.recv(theirs, r);
    scatter_positions(theirs, theirs_at.to_ints(), whole);
  }
  return whole;
}

}  // namespace

Tensor gather_logits(const parallel::Mesh& mesh, const std::vector<Tensor>& local_blocks,
                     const std::vector<int64_t>& positions, int64_t seq_len, int64_t vocab,
                     const std::vector<int64_t>& rows_of_dp) {
  const parallel::ParallelDims& d = mesh.dims();
  const parallel::Coord& c = mesh.coord();
  const int last = d.pp - 1;
  comm::Communicator& world = mesh.world();
  Tensor whole;  // [b, T, V] on this dp rank's last-stage ranks with sp = 0
  if (c.pp == last) {
    Tensor mine = concat_rows(local_blocks);  // [b, c, V_r]
    Shape global = mine.shape();
    global[2] = vocab;
    const int64_t vocab_start =
        models::shard_extent(vocab, models::TpContext{d.tp, c.tp}.vocab()).offset;
    whole = parallel::gather_shards(mesh.tp(), mine, 2, vocab_start, global);
    if (c.tp == 0) whole = gather_sequence(mesh.sp(), whole, positions, seq_len);
  }
  if (mesh.rank() != 0) {
    if (c.pp == last && c.sp == 0 && c.tp == 0) world.send(whole, 0);
    return Tensor();
  }
  std::vector<Tensor> parts;
  for (int dp = 0; dp < d.dp; ++dp) {
    const int src = rank_at(d, 0, dp, last);
    if (src == 0) {
      parts.push_back(whole);
      continue;
    }
    Tensor part = Tensor::empty({rows_of_dp[dp], seq_len, vocab}, DType::kF32, Device::cpu());
    world.recv(part, src);
    parts.push_back(part);
  }
  return concat_rows(parts);
}

std::map<std::string, Tensor> gather_parameters(const parallel::Mesh& mesh,
                                                const std::vector<models::Param*>& params,
                                                Tensor models::Param::*pick) {
  const parallel::Coord& c = mesh.coord();
  comm::Communicator& world = mesh.world();
  std::map<std::string, Tensor> out;
  // The whole tensors this rank contributes: a dense one from tp, dp and sp rank 0 of its stage,
  // an expert-parallel one from etp and edp rank 0 of its host.
  std::vector<std::pair<std::string, Tensor>> mine;
  for (const models::Param* p : params) {
    Tensor whole = models::gather_whole(p->*pick, p->spec, &mesh);  // collective over tp or etp
    const bool owner = p->expert_parallel()
                           ? c.etp == 0 && c.edp == 0
                           : p->spec.replica == 0 && c.tp == 0 && c.dp == 0 && c.sp == 0;
    if (owner) mine.emplace_back(p->name, whole);
  }
  if (mesh.rank() == 0) {
    for (auto& [name, t] : mine) out[name] = t;
    for (int src = 1; src < world.size(); ++src) {
      Tensor count = Tensor::empty({1}, DType::kI64, Device::cpu());
      world.recv(count, src);
      for (int64_t i = 0; i < count.to_ints()[0]; ++i) out.insert(recv_named(world, src));
    }
  } else {
    world.send(Tensor::from_ints({static_cast<int64_t>(mine.size())}, {1}), 0);
    for (const auto& [name, t] : mine) send_named(world, name, t, 0);
  }
  return out;
}

}  // namespace weft::cli
