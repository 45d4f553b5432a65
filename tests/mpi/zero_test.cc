// weft-mpi-ranks: 2 3 4
// ZeRO-1 AdamW (runtime/train/optimizer.h): its weights equal plain AdamW on the summed grads
// step after step (uneven row splits, a one-row parameter, clipping), its moments are row slices
// of ~1/dp of the state with the offsets a checkpoint needs, its traffic is one reduce-scatter
// plus one all-gather of the padded shares, and the global grad norm counts every element once
// under tensor parallelism.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "comm/mpi_communicator.h"
#include "kernels/ops.h"
#include "runtime/train/optimizer.h"
#include "tests/support/test_util.h"

namespace weft::train {
namespace {

using models::Param;
using parallel::RowRange;
using parallel::shard_rows;

// Uneven row counts for 2, 3 and 4 ranks, a one-row matrix, 1-D parameters.
const std::vector<Shape> kShapes = {{7, 5}, {1, 9}, {3}, {13}, {2, 3, 4}, {10, 4}, {5}};

kernels::AdamWConfig config() {
  return {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
}

// Parameters with the same values on every rank (grads zero).
struct Params {
  std::vector<Param> params;
  explicit Params(const std::vector<Shape>& shapes) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      Param p;
      p.name = "p" + std::to_string(i);
      p.value = testing::random_tensor(shapes[i], 100 + i);
      p.grad = Tensor::zeros(shapes[i]);
      p.spec.global_shape = shapes[i];
      params.push_back(std::move(p));
    }
  }
  std::vector<Param*> ptrs() {
    std::vector<Param*> out;
    for (Param& p : params) out.push_back(&p);
    return out;
  }
};

// Rank r's grad of parameter i at `step`.
Tensor grad_of(const Shape& shape, int rank, size_t i, int64_t step) {
  return testing::random_tensor(shape, 10000 * step + 100 * rank + i);
}

// Fires the hooks last parameter first, skipping `skip` (its hook never fires), then finishes.
void reduce(AdamW& opt, std::vector<Param*> params, size_t skip) {
  for (size_t i = params.size(); i-- > 0;) {
    if (i != skip) opt.grad_ready(*params[i]);
  }
  opt.finish_grads();
}

struct Mode {
  bool zero1;
  size_t bucket_bytes;
};

TEST(Zero1, AdamWStepsEqualPlainAdamWOnSummedGrads) {
  auto world = comm::mpi_world_communicator("dp");
  const int p = world->size();
  for (const Mode& mode : {Mode{true, 64}, Mode{true, size_t{1} << 20}, Mode{false, 64}}) {
    SCOPED_TRACE(::testing::Message() << "zero1 " << mode.zero1 << " bucket " << mode.bucket_bytes);
    Params ref(kShapes);
    Params dist(kShapes);
    AdamW ref_opt(ref.ptrs(), config());
    AdamW opt(dist.ptrs(), config(), {world.get(), mode.zero1, mode.bucket_bytes});
    ASSERT_EQ(opt.zero1(), mode.zero1);
    for (int64_t step = 1; step <= 3; ++step) {
      for (size_t i = 0; i < kShapes.size(); ++i) {
        dist.params[i].grad.copy_from(grad_of(kShapes[i], world->rank(), i, step));
        ref.params[i].grad.zero_();
        for (int r = 0; r < p; ++r)
          kernels::add_(ref.params[i].grad, grad_of(kShapes[i], r, i, step));
      }
      reduce(opt, dist.ptrs(), /*skip=*/2);
      // Clip at 1: the summed grads' norm is ~10, so clipping acts on every step.
      const double norm = opt.clip_grad_norm(1.0);
      const double ref_norm = ref_opt.clip_grad_norm(1.0);
      EXPECT_NEAR(norm, ref_norm, 1e-6 * ref_norm) << "step " << step;
      EXPECT_GT(ref_norm, 1.0);
      opt.step(step);
      ref_opt.step(step);
      for (size_t i = 0; i < kShapes.size(); ++i) {
        EXPECT_TENSORS_CLOSE(dist.params[i].value, ref.params[i].value, 1e-6)
            << "step " << step << " param " << i;
      }
    }
  }
}

TEST(Zero1, ShardRowsSplitsEvenlyFirstRanksTakeTheRest) {
  const std::vector<std::pair<int64_t, int64_t>> ten_by_four = {{0, 3}, {3, 6}, {6, 8}, {8, 10}};
  for (int r = 0; r < 4; ++r) {
    const RowRange rows = shard_rows(10, 4, r);
    EXPECT_EQ(rows.begin, ten_by_four[r].first) << r;
    EXPECT_EQ(rows.end, ten_by_four[r].second) << r;
  }
  EXPECT_EQ(shard_rows(1, 4, 0).size(), 1);
  EXPECT_EQ(shard_rows(1, 4, 3).size(), 0);
  EXPECT_EQ(shard_rows(1, 4, 3).begin, 1);
  EXPECT_EQ(shard_rows(3, 4, 3).size(), 0);
  EXPECT_EQ(shard_rows(8, 1, 0).size(), 8);
}

TEST(Zero1, MomentsAreRowSlicesHoldingOneOverDpOfTheState) {
  auto world = comm::mpi_world_communicator("dp");
  const int p = world->size();
  std::vector<Shape> shapes = kShapes;
  shapes.push_back({40, 16});
  Params dist(shapes);
  AdamW opt(dist.ptrs(), config(), {world.get(), true, 256});
  int64_t mine = 0;
  int64_t total = 0;
  int64_t bound = 0;  // at most one row more than an even split, per parameter
  for (size_t i = 0; i < shapes.size(); ++i) {
    const RowRange rows = shard_rows(shapes[i][0], p, world->rank());
    EXPECT_EQ(opt.own_rows(i).begin, rows.begin) << i;
    Shape want = shapes[i];
    want[0] = rows.size();
    EXPECT_EQ(opt.exp_avg()[i].shape(), want) << i;
    EXPECT_EQ(opt.exp_avg_sq()[i].shape(), want) << i;
    mine += opt.exp_avg()[i].numel() + opt.exp_avg_sq()[i].numel();
    const int64_t row_numel = shape_numel(shapes[i]) / shapes[i][0];
    total += 2 * shape_numel(shapes[i]);
    bound += 2 * ((shapes[i][0] + p - 1) / p) * row_numel;
  }
  EXPECT_EQ(opt.exp_avg()[1].dim(0), world->rank() == 0 ? 1 : 0);  // the one-row parameter
  Tensor sum = Tensor::from_ints({mine}, {1});
  world->all_reduce(sum);
  EXPECT_EQ(sum.to_ints()[0], total);  // no element held twice, none missing
  EXPECT_LE(mine, bound);
  EXPECT_LE(static_cast<double>(mine), 1.0 * total / p + 2 * 16 * shapes.size());
}

// Elements S of rank r's share of a bucket: its rows of every member, back to back.
int64_t padded_share(const parallel::GradReducer& reducer, const std::vector<Shape>& shapes,
                     size_t bucket, int p) {
  int64_t widest = 0;
  for (int r = 0; r < p; ++r) {
    int64_t share = 0;
    for (size_t i : reducer.bucket_members(bucket)) {
      share += shard_rows(shapes[i][0], p, r).size() * (shape_numel(shapes[i]) / shapes[i][0]);
    }
    widest = std::max(widest, share);
  }
  return widest;
}

TEST(Zero1, TrafficIsOneReduceScatterAndOneAllGatherOfPaddedSharesPerBucket) {
  auto world = comm::mpi_world_communicator("dp");
  const int64_t p = world->size();
  for (size_t bucket_bytes : {size_t{64}, size_t{1} << 20}) {
    SCOPED_TRACE(bucket_bytes);
    Params dist(kShapes);
    AdamW opt(dist.ptrs(), config(), {world.get(), true, bucket_bytes});
    const parallel::GradReducer& reducer = *opt.reducer();
    world->reset_stats();
    reduce(opt, dist.ptrs(), kShapes.size());
    opt.step(1);
    int64_t want = 0;
    int64_t grad_bytes = 0;
    for (size_t b = 0; b < reducer.num_buckets(); ++b) {
      const int64_t padded_bytes = p * padded_share(reducer, kShapes, b, p) * 4;  // [P * S] f32
      want += (p - 1) * padded_bytes / p;
    }
    for (const Shape& s : kShapes) grad_bytes += shape_numel(s) * 4;
    auto stats = world->stats();
    const auto buckets = static_cast<int64_t>(reducer.num_buckets());
    EXPECT_EQ(stats["reduce_scatter"].calls, buckets);
    EXPECT_EQ(stats["all_gather"].calls, buckets);
    EXPECT_EQ(stats["reduce_scatter"].bytes_sent, want);
    EXPECT_EQ(stats["all_gather"].bytes_sent, want);
    EXPECT_EQ(stats["all_reduce"].calls, 0);
    // Padding costs at most one row of each parameter per rank (33 elements: the row sizes of
    // kShapes summed) over the unpadded (P-1)/P * G.
    EXPECT_GE(want, (p - 1) * grad_bytes / p);
    if (buckets == 1) {
      EXPECT_LE(want, (p - 1) * (grad_bytes + 4 * 33 * p) / p);
    }
  }
}

// A model split over tensor parallelism: parameter 0 is split along dim 1 (a column shard at
// offset 6 of 18 columns), parameter 1 along dim 0 (rows 5.. of 15), parameter 2 is a KV-style
// replica copy (replica 1: not saved).
std::vector<Param*> tp_shaped(Params& ps) {
  ps.params[0].spec = {{4, 18}, 1, "tp", 6, 0};
  ps.params[1].spec = {{15, 3}, 0, "tp", 5, 0};
  ps.params[2].spec = {{2}, 0, "tp", 0, 1};
  return ps.ptrs();
}

TEST(Zero1, StateTensorsCarryGlobalOffsetsAndLoadBackUnderAnotherDp) {
  auto world = comm::mpi_world_communicator("dp");
  const int p = world->size();
  const std::vector<Shape> shapes = {{4, 6}, {5, 3}, {2}};
  Params ref(shapes);
  Params dist(shapes);
  AdamW ref_opt(tp_shaped(ref), config());
  AdamW opt(tp_shaped(dist), config(), {world.get(), true, 64});
  for (int64_t step = 1; step <= 2; ++step) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      dist.params[i].grad.copy_from(grad_of(shapes[i], world->rank(), i, step));
      ref.params[i].grad.zero_();
      for (int r = 0; r < p; ++r) kernels::add_(ref.params[i].grad, grad_of(shapes[i], r, i, step));
    }
    reduce(opt, dist.ptrs(), shapes.size());
    opt.step(step);
    ref_opt.step(step);
  }
  // Every entry is this rank's rows of a moment, placed in the global tensor.
  std::vector<OptimizerStateTensor> state = opt.state_tensors();
  size_t expected_entries = 0;
  for (size_t i = 0; i < 2; ++i) {
    expected_entries += shard_rows(shapes[i][0], p, world->rank()).size() > 0 ? 2 : 0;
  }
  ASSERT_EQ(state.size(), expected_entries);
  for (const OptimizerStateTensor& t : state) {
    const size_t i = t.name[1] - '0';
    const Param& param = ref.params[i];
    const RowRange rows = shard_rows(shapes[i][0], p, world->rank());
    const bool second = t.name.ends_with(".exp_avg_sq");
    EXPECT_EQ(t.name, param.name + (second ? ".exp_avg_sq" : ".exp_avg"));
    EXPECT_EQ(t.global_shape, param.spec.global_shape);
    const std::vector<int64_t> want_offsets =
        i == 0 ? std::vector<int64_t>{rows.begin, 6} : std::vector<int64_t>{5 + rows.begin, 0};
    EXPECT_EQ(t.offsets, want_offsets) << t.name;
    const Tensor& full = second ? ref_opt.exp_avg_sq()[i] : ref_opt.exp_avg()[i];
    EXPECT_TENSORS_CLOSE(t.value, full.slice(rows.begin, rows.end), 1e-6) << t.name;
  }

  // The reference's whole moments serve as the checkpoint; a box maps back to local rows.
  const ReadSlice read = [&](const std::string& name, const std::vector<int64_t>& offsets,
                             const std::vector<int64_t>& lengths) -> absl::StatusOr<Tensor> {
    const size_t i = name[1] - '0';
    const models::ShardSpec& spec = ref.params[i].spec;
    const int64_t row0 = offsets[0] - (spec.split_dim == 0 ? spec.offset : 0);
    const Tensor& full =
        name.ends_with(".exp_avg_sq") ? ref_opt.exp_avg_sq()[i] : ref_opt.exp_avg()[i];
    return full.slice(row0, row0 + lengths[0]).clone();
  };
  Params fresh(shapes);
  for (size_t i = 0; i < shapes.size(); ++i) fresh.params[i].value.copy_from(ref.params[i].value);
  AdamW loaded(tp_shaped(fresh), config(), {world.get(), true, 64});
  ASSERT_TRUE(loaded.load_state(read).ok());
  for (size_t i = 0; i < shapes.size(); ++i) {
    const RowRange rows = loaded.own_rows(i);
    EXPECT_TENSORS_CLOSE(loaded.exp_avg()[i], ref_opt.exp_avg()[i].slice(rows.begin, rows.end), 0);
  }
  // One more step from the loaded state equals the reference's.
  for (size_t i = 0; i < shapes.size(); ++i) {
    fresh.params[i].grad.copy_from(grad_of(shapes[i], world->rank(), i, 3));
    ref.params[i].grad.zero_();
    for (int r = 0; r < p; ++r) kernels::add_(ref.params[i].grad, grad_of(shapes[i], r, i, 3));
  }
  reduce(loaded, fresh.ptrs(), shapes.size());
  loaded.step(3);
  ref_opt.step(3);
  for (size_t i = 0; i < shapes.size(); ++i) {
    EXPECT_TENSORS_CLOSE(fresh.params[i].value, ref.params[i].value, 1e-6) << i;
  }

  const ReadSlice wrong = [](const std::string&, const std::vector<int64_t>&,
                             const std::vector<int64_t>&) -> absl::StatusOr<Tensor> {
    return Tensor::zeros({1, 1, 1});
  };
  const absl::Status status = loaded.load_state(wrong);  // every rank owns a row of p0
  EXPECT_FALSE(status.ok());
  EXPECT_NE(std::string(status.message()).find("optimizer state 'p0.exp_avg'"), std::string::npos)
      << status;
}

// tp ranks are the fast index of the world (tp = 2 when the world size is even), dp the slow.
// Parameter 0 is split across tp (distinct grads per tp rank), 1 is replicated (split_dim -1),
// 2 is a replica copy (replica = tp rank): the norm counts shards of 0, one copy of 1 and 2.
TEST(Zero1, ClipNormCountsTensorParallelShardsOnceWithZero) {
  auto world = comm::mpi_world_communicator("world");
  const int tp = world->size() % 2 == 0 ? 2 : 1;
  const int dp = world->size() / tp;
  const int tp_rank = world->rank() % tp;
  const int dp_rank = world->rank() / tp;
  auto tp_group = world->split(dp_rank, tp_rank, "tp");
  auto dp_group = world->split(tp_rank, dp_rank, "dp");
  const std::vector<Shape> shapes = {{5, 4}, {3}, {3, 2}};
  Params dist(shapes);
  dist.params[0].spec = {{5 * tp, 4}, 0, "tp", 5 * tp_rank, 0};
  dist.params[2].spec = {{3, 2}, 0, "tp", 0, tp_rank};
  AdamW opt(dist.ptrs(), config(), {dp_group.get(), true, 64});
  // Grad of parameter i on (dp rank d, tp rank t): parameter 0's depends on t, the others not.
  auto grad = [&](size_t i, int d, int t) { return grad_of(shapes[i], d, i, i == 0 ? 1 + t : 1); };
  double want = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    dist.params[i].grad.copy_from(grad(i, dp_rank, tp_rank));
    for (int t = 0; t < (i == 0 ? tp : 1); ++t) {
      Tensor sum = Tensor::zeros(shapes[i]);
      for (int d = 0; d < dp; ++d) kernels::add_(sum, grad(i, d, t));
      want += kernels::sum_squares(sum);
    }
  }
  reduce(opt, dist.ptrs(), shapes.size());
  const double norm = opt.clip_grad_norm(0.0, tp_group.get());
  EXPECT_NEAR(norm, std::sqrt(want), 1e-6 * std::sqrt(want));
}

}  // namespace
}  // namespace weft::train
