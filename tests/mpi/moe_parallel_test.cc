// weft-mpi-ranks: 2 4
// Expert parallelism in process: the all-to-all bytes over ep equal the formula from the routing
// counts (docs/algorithms.md "Expert parallelism", "Speculative MoE") for plain and speculative
// dispatch, speculative dispatch gives the plain result, and the token dispatcher moves every
// row to its expert and back.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/mpi_communicator.h"
#include "kernels/ops.h"
#include "models/causal_lm.h"
#include "models/moe_block.h"
#include "parallel/expert_dispatch.h"
#include "parallel/mesh.h"
#include "tests/support/mpi_world.h"
#include "tests/support/test_util.h"

namespace weft::models {
namespace {

using ::weft::testing::fixtures_dir;
using ::weft::testing::random_ids;
using ::weft::testing::random_tensor;

comm::Communicator& world() { return ::weft::testing::mpi_world(); }

std::unique_ptr<parallel::Mesh> make_mesh(int tp, int ep, int etp) {
  auto dims = parallel::resolve_dims(world().size(), tp, 1, 1, ep, etp);
  WEFT_CHECK(dims.ok()) << dims.status().message();
  return parallel::Mesh::create(world(), *dims);
}

int64_t world_sum(int64_t v) {
  Tensor t = Tensor::from_ints({v}, {1});
  world().all_reduce(t);
  return t.to_ints()[0];
}

TEST(ExpertDispatch, RowsReachTheirExpertAndComeBackSummedOverEtp) {
  const int p = world().size();
  for (const auto& [ep, etp] : std::vector<std::pair<int, int>>{{p, 1}, {p / 2, 2}}) {
    if (ep < 1 || ep * etp != p) continue;
    SCOPED_TRACE(::testing::Message() << "ep " << ep << " etp " << etp);
    auto mesh = make_mesh(1, ep, etp);
    const int64_t local = 3, d = 5;
    // Rank r sends (r + d' + l) % 4 rows to ep rank d' for its local expert l.
    std::vector<int64_t> counts(ep * local);
    for (int dst = 0; dst < ep; ++dst) {
      for (int64_t l = 0; l < local; ++l) counts[dst * local + l] = (world().rank() + dst + l) % 4;
    }
    int64_t sent = 0;
    for (int64_t c : counts) sent += c;
    const Tensor x = random_tensor({sent, d}, 7 + world().rank(), -1.0f, 1.0f);
    parallel::ExpertDispatch plan(ep > 1 ? &mesh->ep() : nullptr, etp > 1 ? &mesh->etp() : nullptr,
                                  counts, local);
    const Tensor grouped = plan.dispatch(x);
    ASSERT_EQ(grouped.dim(0), plan.rows());
    // Expert l scales its rows by (l + 1); each etp rank returns 1/etp of it (a partial sum).
    Tensor y = grouped.clone();
    for (int64_t l = 0; l < local; ++l) {
      Tensor block = y.slice(plan.expert_begin()[l], plan.expert_begin()[l + 1]);
      kernels::scale_(block, static_cast<float>(l + 1) / static_cast<float>(etp));
    }
    const Tensor back = plan.combine(y);
    Tensor want = x.clone();  // rows sorted by (destination, local expert)
    int64_t row = 0;
    for (int dst = 0; dst < ep; ++dst) {
      for (int64_t l = 0; l < local; ++l) {
        Tensor block = want.slice(row, row + counts[dst * local + l]);
        kernels::scale_(block, static_cast<float>(l + 1));
        row += counts[dst * local + l];
      }
    }
    EXPECT_TENSORS_CLOSE(back, want, 1e-6);
  }
}

io::ModelConfig moe_config() {
  io::ModelConfig c;
  c.architecture = "MixtralForCausalLM";
  c.vocab_size = 32;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  return c;
}

// Forward and backward of one batch on `mesh` (tp ranks share rows): the loss sum, the
// gradients by name, the ep group's traffic and the rows the MoE layers sent to other ep ranks.
struct MoeRun {
  double loss = 0;
  std::map<std::string, Tensor> grads;
  std::map<std::string, comm::CallStats> ep_stats;
  int64_t remote_rows = 0;
};

MoeRun run_moe(const io::ModelConfig& config, const parallel::Mesh& mesh, bool speculative,
               const std::vector<std::vector<int64_t>>& placement) {
  auto model = CausalLM::from_config(
      config, 3, {.mesh = &mesh, .expert_placement = placement, .speculative_moe = speculative});
  WEFT_CHECK(model.ok()) << model.status().message();
  uint64_t seed = 40;
  for (Param* p : (*model)->parameters()) {
    const Tensor whole = random_tensor(p->spec.global_shape, ++seed, -0.5f, 0.5f);
    p->value = take_shard(whole, p->spec, p->value.shape());
  }
  // Every rank the same batch (dp ranks included): the bytes formula is per rank.
  const int dp = mesh.dims().dp;
  const Tensor all = random_ids({2 * dp, 8}, 9, config.vocab_size);
  const Tensor tokens = all.slice(2 * mesh.coord().dp, 2 * mesh.coord().dp + 2);
  mesh.ep().reset_stats();
  MoeRun r;
  const ForwardResult out = (*model)->forward(tokens, {.for_backward = true});
  (*model)->backward(1.0f / static_cast<float>(out.predicted));
  (*model)->finish_grads();
  r.loss = out.loss_sum;
  // The gradients as the optimizer sees them: summed over the replicas (dp, or edp for experts);
  // one rank's share of a router gradient can be rounding-sized.
  for (Param* p : (*model)->parameters()) {
    Tensor g = p->grad.clone();
    (p->expert_parallel() ? mesh.edp() : mesh.dp_sp()).all_reduce(g);
    r.grads[p->name] = g;
  }
  r.ep_stats = mesh.ep().stats();
  for (auto [layer, moe] : (*model)->moe_layers()) r.remote_rows += moe->take_counts().remote_rows;
  return r;
}

TEST(MoeTraffic, AllToAllBytesEqualTheFormulaPlainAndSpeculative) {
  const io::ModelConfig config = moe_config();
  const int p = world().size();
  const int64_t d = config.hidden_size, k = config.num_experts_per_tok;
  // Experts {0, 2} and {1, 3} together (any permutation works; this one is not contiguous).
  std::vector<std::vector<int64_t>> placement(
      2, p == 2 ? std::vector<int64_t>{0, 2, 1, 3} : std::vector<int64_t>{3, 1, 0, 2});
  for (int tp : {1, 2}) {
    SCOPED_TRACE(::testing::Message() << "tp " << tp << " ep " << p);
    auto mesh = make_mesh(tp, p, 1);
    const MoeRun plain = run_moe(config, *mesh, false, placement);
    const MoeRun spec = run_moe(config, *mesh, true, placement);
    EXPECT_NEAR(spec.loss, plain.loss, 1e-6 * std::abs(plain.loss));
    // Gradients within 1e-5 of the model's largest gradient entry: the routers' gradients are
    // sums of nearly cancelling terms (1e-6 against 1e-1 elsewhere here), where the other order
    // of adding a token's returned rows moves the last bits.
    double scale = 0;
    for (const auto& [name, g] : plain.grads) {
      for (float v : g.to_floats()) scale = std::max(scale, std::abs(static_cast<double>(v)));
    }
    for (const auto& [name, g] : plain.grads) {
      SCOPED_TRACE(name);
      const std::vector<float> want = g.to_floats(), got = spec.grads.at(name).to_floats();
      for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-5 * scale) << i;
    }
    const int64_t layers = config.num_hidden_layers, local = config.num_local_experts / p;
    // Plain: per layer one count exchange of ep*L i64 and 4 all_to_all_v of the remote rows.
    EXPECT_EQ(plain.ep_stats.at("all_to_all").calls, layers);
    EXPECT_EQ(plain.ep_stats.at("all_to_all").bytes_sent, layers * (p - 1) * local * 8);
    EXPECT_EQ(plain.ep_stats.at("all_to_all_v").calls, 4 * layers);
    EXPECT_EQ(world_sum(plain.ep_stats.at("all_to_all_v").bytes_sent),
              world_sum(plain.remote_rows) * 4 * d * 4);
    // Speculative: counts of ep i64, and 6 all_to_all_v (x, choices [2k], y; dy, dx, dw [k]).
    EXPECT_EQ(spec.ep_stats.at("all_to_all").bytes_sent, layers * (p - 1) * 8);
    EXPECT_EQ(spec.ep_stats.at("all_to_all_v").calls, 6 * layers);
    EXPECT_EQ(world_sum(spec.ep_stats.at("all_to_all_v").bytes_sent),
              world_sum(spec.remote_rows) * (4 * d * 4 + 2 * k * 4 + k * 4));
    if (tp > 1 || local > 1) {
      EXPECT_LT(world_sum(spec.remote_rows), world_sum(plain.remote_rows))
          << "one row per destination and tokens routed where their experts are must send less";
    } else {  // one expert per rank and nowhere to move a token: nothing to save
      EXPECT_EQ(world_sum(spec.remote_rows), world_sum(plain.remote_rows));
    }
  }
}

}  // namespace
}  // namespace weft::models
