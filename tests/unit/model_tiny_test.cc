// Tiny randomly initialised models of every kind (dense GQA, Qwen2 biases with tied embeddings,
// Mixtral MoE, hybrid linear/softmax attention): the explicit backward against finite
// differences of the f32 forward, the activation bookkeeping around backward(), and incremental
// decoding over sequences longer than the kernels' blocks (64 positions).
#include <gtest/gtest.h>

#include <cmath>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "models/causal_lm.h"
#include "models/moe_block.h"
#include "runtime/core/allocator.h"
#include "tests/support/test_util.h"

namespace weft::models {
namespace {

using ::weft::testing::random_ids;
using ::weft::testing::random_tensor;

io::ModelConfig tiny_config(const std::string& kind) {
  io::ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = 40;
  c.hidden_size = 24;
  c.intermediate_size = 40;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;  // != hidden / heads
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  if (kind == "qwen2_tied") {
    c.architecture = "Qwen2ForCausalLM";
    c.tie_word_embeddings = true;
  } else if (kind == "mixtral_moe") {
    c.architecture = "MixtralForCausalLM";
    c.num_local_experts = 4;
    c.num_experts_per_tok = 2;
  } else if (kind == "hybrid_linear") {
    c.num_hidden_layers = 3;
    c.layer_types = {io::LayerType::kLinearAttention, io::LayerType::kFullAttention,
                     io::LayerType::kLinearAttention};
  }
  return c;
}

// A tiny model with O(1) random weights (std-0.02 weights would make most gradients vanish).
std::unique_ptr<CausalLM> tiny_model(const std::string& kind) {
  auto model = CausalLM::from_config(tiny_config(kind), 7);
  WEFT_CHECK(model.ok()) << model.status().message();
  uint64_t seed = 100;
  for (Param* p : (*model)->parameters()) {
    const float range = p->value.ndim() >= 2 ? 0.3f : 0.2f;
    Tensor noise = random_tensor(p->value.shape(), ++seed, -range, range);
    if (p->value.ndim() >= 2) p->value.zero_();
    kernels::add_(p->value, noise);  // matrices: U(-0.3, 0.3); norms 1 + U; biases U
  }
  return std::move(*model);
}

double mean_loss(CausalLM& model, const Tensor& tokens) {
  const ForwardResult out = model.forward(tokens, {});
  return out.loss_sum / static_cast<double>(out.predicted);
}

class TinyModel : public ::testing::TestWithParam<std::string> {};

// For each parameter tensor W and a random direction U: (L(W + eU) - L(W - eU)) / 2e = <dL/dW, U>.
// Within 2e-3 of sum |dL/dW * U| (worst seen: 5e-4, from the f32 rounding of the loss divided
// by 2e and the e^2 truncation error).
TEST_P(TinyModel, BackwardMatchesFiniteDifferences) {
  auto model = tiny_model(GetParam());
  const Tensor tokens = random_ids({2, 7}, 3, model->config().vocab_size);
  model->zero_grad();
  const ForwardResult out = model->forward(tokens, {.for_backward = true});
  model->backward(1.0f / static_cast<float>(out.predicted));

  // MoE: small enough that no token's top-k choice flips between the two evaluations.
  const float eps = GetParam() == "mixtral_moe" ? 1e-3f : 3e-3f;
  uint64_t seed = 1000;
  for (Param* p : model->parameters()) {
    SCOPED_TRACE(p->name);
    const Tensor u = random_tensor(p->value.shape(), ++seed);
    double analytic = 0;
    const std::vector<float> g = p->grad.to_floats(), uf = u.to_floats();
    double scale = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      analytic += static_cast<double>(g[i]) * uf[i];
      scale += std::fabs(static_cast<double>(g[i]) * uf[i]);
    }
    kernels::add_(p->value, u, eps);
    const double plus = mean_loss(*model, tokens);
    kernels::add_(p->value, u, -2 * eps);
    const double minus = mean_loss(*model, tokens);
    kernels::add_(p->value, u, eps);
    const double numeric = (plus - minus) / (2.0 * eps);
    EXPECT_NEAR(numeric, analytic, 2e-3 * std::max(scale, 1e-3))
        << "numeric " << numeric << " analytic " << analytic;
  }
}

// The load-balancing loss A = (1/L) sum_l E sum_e f_e P_e (f_e counted, P_e differentiable):
// with it on at coefficient c, the gradients grow by c dA/dW, which equals finite differences of
// the A that the layers report. Only the routers' weights and the layers below them move A.
TEST(TinyMoe, LoadBalancingLossGradientMatchesFiniteDifferences) {
  auto model = tiny_model("mixtral_moe");
  const Tensor tokens = random_ids({2, 7}, 3, model->config().vocab_size);
  const int64_t layers = model->config().num_hidden_layers;
  auto grads_with = [&](double coef) {
    for (auto [layer, moe] : model->moe_layers()) moe->set_aux_loss_scale(coef);
    model->zero_grad();
    const ForwardResult out = model->forward(tokens, {.for_backward = true});
    model->backward(1.0f / static_cast<float>(out.predicted));
    std::vector<std::vector<float>> g;
    for (const Param* p : model->parameters()) g.push_back(p->grad.to_floats());
    return g;
  };
  auto aux_loss = [&]() {  // A of one forward (the counters reset first)
    for (auto [layer, moe] : model->moe_layers()) (void)moe->take_counts();
    (void)model->forward(tokens, {});
    double a = 0;
    for (auto [layer, moe] : model->moe_layers()) a += moe->take_counts().aux;
    return a / static_cast<double>(layers);
  };
  const double coef = 0.5;
  const auto base = grads_with(0), with = grads_with(coef);
  for (auto [layer, moe] : model->moe_layers()) moe->set_aux_loss_scale(1.0);  // A is computed
  EXPECT_GT(aux_loss(), 1.0) << "E sum f P is k = 2 when perfectly balanced, more otherwise";
  const float eps = 1e-3f;
  uint64_t seed = 2000;
  int moved = 0;
  for (size_t i = 0; i < model->parameters().size(); ++i) {
    Param* p = model->parameters()[i];
    SCOPED_TRACE(p->name);
    const Tensor u = random_tensor(p->value.shape(), ++seed);
    const std::vector<float> uf = u.to_floats();
    double analytic = 0, scale = 0;
    for (size_t j = 0; j < uf.size(); ++j) {
      const double d = (static_cast<double>(with[i][j]) - base[i][j]) / coef * uf[j];
      analytic += d;
      scale += std::fabs(d);
    }
    kernels::add_(p->value, u, eps);
    const double plus = aux_loss();
    kernels::add_(p->value, u, -2 * eps);
    const double minus = aux_loss();
    kernels::add_(p->value, u, eps);
    const double numeric = (plus - minus) / (2.0 * eps);
    EXPECT_NEAR(numeric, analytic, 2e-3 * std::max(scale, 1e-3))
        << "numeric " << numeric << " analytic " << analytic;
    if (std::fabs(analytic) > 1e-4) ++moved;
  }
  EXPECT_GT(moved, 2) << "the loss must reach the routers and the layers below them";
}

TEST_P(TinyModel, BackwardAddsIntoGradients) {
  auto model = tiny_model(GetParam());
  const Tensor tokens = random_ids({2, 5}, 4, model->config().vocab_size);
  model->zero_grad();
  model->forward(tokens, {.for_backward = true});
  model->backward(1.0f);
  std::vector<Tensor> once;
  for (const Param* p : model->parameters()) once.push_back(p->grad.clone());
  model->forward(tokens, {.for_backward = true});
  model->backward(2.0f);
  for (size_t i = 0; i < once.size(); ++i) {
    kernels::scale_(once[i], 3.0f);
    EXPECT_TENSORS_CLOSE(model->parameters()[i]->grad, once[i], 1e-5);
  }
}

// What forward keeps lives until backward and no longer: memory returns to the level before.
TEST_P(TinyModel, BackwardFreesActivations) {
  auto model = tiny_model(GetParam());
  const Tensor tokens = random_ids({2, 9}, 5, model->config().vocab_size);
  model->zero_grad();
  const int64_t before = memory_stats(Device::cpu()).live_bytes;
  model->forward(tokens, {});
  EXPECT_EQ(memory_stats(Device::cpu()).live_bytes, before);
  model->forward(tokens, {.for_backward = true});
  EXPECT_GT(memory_stats(Device::cpu()).live_bytes, before);
  model->backward(1.0f);
  EXPECT_EQ(memory_stats(Device::cpu()).live_bytes, before);
}

// Prefill, single tokens and chunks that straddle the kernels' 64-position blocks: the logits of
// every call equal the matching positions of one full forward.
TEST_P(TinyModel, LongIncrementalDecodingEqualsFullForward) {
  auto model = tiny_model(GetParam());
  const int64_t b = 2, t = 150;
  const Tensor tokens = random_ids({b, t}, 6, model->config().vocab_size);
  const std::vector<float> full = model->forward(tokens, {.keep_logits = true}).logits.to_floats();
  const std::vector<int64_t> ids = tokens.to_ints();
  const int64_t v = model->config().vocab_size;
  auto state = model->new_inference_state(b, t);
  const int64_t cuts[] = {0, 70, 71, 72, 140, 150};
  for (size_t c = 0; c + 1 < std::size(cuts); ++c) {
    const int64_t begin = cuts[c], end = cuts[c + 1];
    SCOPED_TRACE(begin);
    std::vector<int64_t> part;
    std::vector<float> expected;
    for (int64_t i = 0; i < b; ++i) {
      part.insert(part.end(), ids.begin() + i * t + begin, ids.begin() + i * t + end);
      expected.insert(expected.end(), full.begin() + (i * t + begin) * v,
                      full.begin() + (i * t + end) * v);
    }
    const Tensor logits =
        model->forward_incremental(*state, Tensor::from_ints(part, {b, end - begin}));
    EXPECT_TENSORS_CLOSE(logits, Tensor::from_floats(expected, {b, end - begin, v}), 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, TinyModel,
                         ::testing::Values("llama_gqa", "qwen2_tied", "mixtral_moe",
                                           "hybrid_linear"),
                         [](const auto& info) { return info.param; });

// Data parallelism starts reducing a parameter's grad when the hook fires: by then the grad must
// be final. Two micro-batches; the hook (on the last) sees exactly the grads backward leaves.
TEST(ModelGradReadyHook, FiresOncePerParameterWithItsFinalGrad) {
  for (const char* kind : {"llama_gqa", "qwen2_tied", "mixtral_moe", "hybrid_linear"}) {
    SCOPED_TRACE(kind);
    auto model = tiny_model(kind);
    std::map<std::string, std::vector<float>> at_hook;
    model->set_grad_ready_hook([&](Param& p) {
      EXPECT_EQ(at_hook.count(p.name), 0u) << p.name << " fired twice";
      at_hook[p.name] = p.grad.to_floats();
    });
    model->zero_grad();
    const Tensor tokens = random_ids({4, 6}, 3, 40);
    for (int64_t first : {0, 2}) {
      auto state = model->new_chunk_state();
      double loss = 0;
      model->forward_chunk(0, tokens.slice(first, first + 2), Tensor(), *state, &loss);
      model->backward_chunk(0, *state, Tensor(), 0.1f, /*last_microbatch=*/first == 2);
    }
    model->finish_grads();
    for (Param* p : model->parameters()) {
      ASSERT_EQ(at_hook.count(p->name), 1u) << p->name << " never fired";
      EXPECT_EQ(at_hook[p->name], p->grad.to_floats()) << p->name << " changed after its hook";
    }
  }
}

}  // namespace
}  // namespace weft::models
