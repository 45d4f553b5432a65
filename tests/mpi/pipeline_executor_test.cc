// weft-mpi-ranks: 2 4
// The pipeline executor on a small chain model whose one-rank gradients are easy to trust:
// layer l is y = tanh(x W_l); the first stage turns tokens into features, the last scores
// sum(y * target(tokens)). Under 1F1B and interleaved schedules, at pp = 2 and 4 (with dp filling
// the rest), the loss and every W_l grad equal one rank running the whole batch at once; the
// activations and gradients crossing stages are exactly one send each.
#include "runtime/train/pipeline_executor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "comm/mpi_communicator.h"
#include "parallel/mesh.h"
#include "parallel/pipeline_layout.h"
#include "runtime/core/check.h"
#include "tests/support/test_util.h"

namespace weft::train {
namespace {

constexpr int kLayers = 8;
constexpr int64_t kHidden = 4;
constexpr int64_t kVocab = 50;

// [rows, kHidden] features of the first stage and targets of the last, from the token ids.
Tensor token_features(const Tensor& tokens, float freq, float phase) {
  const std::vector<int64_t> ids = tokens.to_ints();
  std::vector<float> out;
  for (int64_t id : ids) {
    for (int64_t j = 0; j < kHidden; ++j) out.push_back(std::sin(freq * id * (j + 1) + phase));
  }
  return Tensor::from_floats(out, {tokens.dim(0), tokens.dim(1), kHidden});
}

struct ChainState : models::ChunkState {
  Tensor tokens;
  std::vector<Tensor> inputs, outputs;  // per layer of the chunk, [b, T, kHidden]
};

// y = tanh(x W): [b, T, H] x [H, H].
Tensor tanh_layer(const Tensor& x, const Tensor& w) {
  const int64_t rows = x.numel() / kHidden;
  Tensor y = Tensor::zeros(x.shape());
  const float* xp = x.data<float>();
  const float* wp = w.data<float>();
  float* yp = y.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < kHidden; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < kHidden; ++i) acc += xp[r * kHidden + i] * wp[i * kHidden + o];
      yp[r * kHidden + o] = static_cast<float>(std::tanh(acc));
    }
  }
  return y;
}

// Given dy, adds x^T g into dw (g = dy * (1 - y^2)) and returns dx = g W^T.
Tensor tanh_layer_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& w,
                           Tensor& dw) {
  const int64_t rows = x.numel() / kHidden;
  Tensor dx = Tensor::zeros(x.shape());
  const float* xp = x.data<float>();
  const float* yp = y.data<float>();
  const float* dyp = dy.data<float>();
  const float* wp = w.data<float>();
  float* dxp = dx.data<float>();
  float* dwp = dw.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < kHidden; ++o) {
      const float yv = yp[r * kHidden + o];
      const float g = dyp[r * kHidden + o] * (1 - yv * yv);
      for (int64_t i = 0; i < kHidden; ++i) {
        dwp[i * kHidden + o] += xp[r * kHidden + i] * g;
        dxp[r * kHidden + i] += g * wp[i * kHidden + o];
      }
    }
  }
  return dx;
}

// The chain split like a real model: virtual stage s = chunk*pp + pp_rank holds the layers of
// parallel::stage_layers. Records each backward's `last_microbatch` flag and finish_grads calls.
class ChainModel : public models::CausalLM {
 public:
  ChainModel(int pp, int v, int pp_rank) : pp_(pp) {
    config_.hidden_size = kHidden;
    config_.num_hidden_layers = kLayers;
    auto ranges = parallel::stage_layers(kLayers, pp, v, pp_rank);
    WEFT_CHECK(ranges.ok()) << ranges.status();
    ranges_ = *ranges;
    for (const parallel::LayerRange& range : ranges_) {
      for (int l = range.first; l < range.last; ++l) {
        auto p = std::make_unique<models::Param>();
        p->name = "layer." + std::to_string(l);
        p->value = testing::random_tensor({kHidden, kHidden}, 100 + l, -0.8f, 0.8f);
        p->grad = Tensor::zeros({kHidden, kHidden});
        p->spec.global_shape = {kHidden, kHidden};
        weights_[l] = p.get();
        param_ptrs_.push_back(p.get());
        owned_.push_back(std::move(p));
      }
    }
  }

  const io::ModelConfig& config() const override { return config_; }
  const std::vector<models::Param*>& parameters() override { return param_ptrs_; }
  absl::Status check_tokens(const Tensor&) const override { return absl::OkStatus(); }
  absl::Status check_batch(const Tensor&) const override { return absl::OkStatus(); }
  std::vector<int64_t> sp_positions(int64_t seq_len) const override {
    std::vector<int64_t> all(seq_len);
    for (int64_t i = 0; i < seq_len; ++i) all[i] = i;
    return all;
  }
  Shape activation_shape(int64_t batch, int64_t seq_len) const override {
    return {batch, seq_len, kHidden};
  }
  models::ForwardResult forward(const Tensor&, const models::ForwardOptions&) override {
    WEFT_CHECK(false) << "the executor runs chunks";
    return {};
  }
  void backward(float) override { WEFT_CHECK(false) << "the executor runs chunks"; }
  void zero_grad() override {
    for (models::Param* p : param_ptrs_) p->grad.zero_();
  }

  int num_chunks() const override { return static_cast<int>(ranges_.size()); }
  bool is_first_stage(int chunk) const override { return ranges_[chunk].virtual_stage == 0; }
  bool is_last_stage(int chunk) const override {
    return ranges_[chunk].virtual_stage == pp_ * num_chunks() - 1;
  }
  std::unique_ptr<models::ChunkState> new_chunk_state() override {
    return std::make_unique<ChainState>();
  }

  Tensor forward_chunk(int chunk, const Tensor& tokens, const Tensor& input,
                       models::ChunkState& base, double* loss_sum) override {
    auto& state = static_cast<ChainState&>(base);
    state.tokens = tokens;
    Tensor x = is_first_stage(chunk) ? token_features(tokens, 0.3f, 0.0f) : input;
    WEFT_CHECK(x.shape() == (Shape{tokens.dim(0), tokens.dim(1), kHidden}));
    for (int l = ranges_[chunk].first; l < ranges_[chunk].last; ++l) {
      state.inputs.push_back(x);
      x = tanh_layer(x, weights_[l]->value);
      state.outputs.push_back(x);
    }
    if (!is_last_stage(chunk)) return x;
    const std::vector<float> y = x.to_floats();
    const std::vector<float> target = token_features(tokens, 0.7f, 0.5f).to_floats();
    *loss_sum = 0;
    for (size_t i = 0; i < y.size(); ++i) *loss_sum += double(y[i]) * target[i];
    return Tensor();
  }

  Tensor backward_chunk(int chunk, models::ChunkState& base, const Tensor& dout, float loss_scale,
                        bool last_microbatch) override {
    auto& state = static_cast<ChainState&>(base);
    backward_log_[chunk].push_back(last_microbatch);
    Tensor dy = dout;
    if (is_last_stage(chunk)) {
      std::vector<float> seed = token_features(state.tokens, 0.7f, 0.5f).to_floats();
      for (float& s : seed) s *= loss_scale;
      dy = Tensor::from_floats(seed, state.outputs.back().shape());
    }
    for (int l = ranges_[chunk].last - 1; l >= ranges_[chunk].first; --l) {
      const size_t k = l - ranges_[chunk].first;
      dy = tanh_layer_backward(state.inputs[k], state.outputs[k], dy, weights_[l]->value,
                               weights_[l]->grad);
    }
    return is_first_stage(chunk) ? Tensor() : dy;
  }

  void finish_grads() override { ++finish_grads_calls_; }
  void set_grad_ready_hook(std::function<void(models::Param&)>) override {}
  void set_logits_sink(std::function<void(Tensor)>) override {}
  std::unique_ptr<models::InferenceState> new_inference_state(int64_t, int64_t) override {
    return nullptr;
  }
  Tensor forward_incremental(models::InferenceState&, const Tensor&) override { return {}; }
  [[nodiscard]] absl::StatusOr<int64_t> paged_cache_block_bytes(int64_t) const override {
    return absl::UnimplementedError("a training-only test model");
  }
  [[nodiscard]] std::unique_ptr<models::PagedKvCache> new_paged_cache(int64_t, int64_t) override {
    return nullptr;
  }
  Tensor forward_paged(models::PagedKvCache&, const models::PagedBatch&) override { return {}; }

  [[nodiscard]] const models::Param* weight(int layer) const { return weights_.at(layer); }
  // chunk -> the last_microbatch flag of each of its backwards, in order.
  [[nodiscard]] const std::map<int, std::vector<bool>>& backward_log() const {
    return backward_log_;
  }
  [[nodiscard]] int finish_grads_calls() const { return finish_grads_calls_; }

 private:
  int pp_;
  io::ModelConfig config_;
  std::vector<parallel::LayerRange> ranges_;
  std::vector<std::unique_ptr<models::Param>> owned_;
  std::vector<models::Param*> param_ptrs_;
  std::map<int, models::Param*> weights_;
  std::map<int, std::vector<bool>> backward_log_;
  int finish_grads_calls_ = 0;
};

constexpr int64_t kMicroBatch = 2;
constexpr int64_t kSeqLen = 3;

// The whole batch of one dp group (the same on all its pp ranks, different across dp), and its
// micro-batches: consecutive blocks of kMicroBatch rows.
Tensor batch_of(int dp_rank, int m) {
  return testing::random_ids({m * kMicroBatch, kSeqLen}, 1000 + dp_rank, kVocab);
}

std::vector<Tensor> micro_batches_of(const Tensor& batch) {
  std::vector<Tensor> out;
  for (int64_t row = 0; row < batch.dim(0); row += kMicroBatch) {
    out.push_back(batch.slice(row, row + kMicroBatch));
  }
  return out;
}

struct Reference {
  double loss_sum = 0;
  std::unique_ptr<ChainModel> model;  // one rank, one chunk, the whole batch
};

Reference one_rank_reference(const Tensor& batch, float loss_scale, bool with_backward) {
  Reference ref{0, std::make_unique<ChainModel>(1, 1, 0)};
  auto state = ref.model->new_chunk_state();
  ref.model->forward_chunk(0, batch, Tensor(), *state, &ref.loss_sum);
  if (with_backward) ref.model->backward_chunk(0, *state, Tensor(), loss_scale, true);
  return ref;
}

struct Case {
  int pp = 2;
  int v = 1;
  int m = 4;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << "pp=" << c.pp << " v=" << c.v << " m=" << c.m;
}

class PipelineExecutorTest : public ::testing::TestWithParam<Case> {};

// Every rank of the pp group reports the last stage's loss; every W_l held here matches.
void expect_step_matches_one_rank(const Case& c, bool forward_only) {
  auto world = comm::mpi_world_communicator();
  if (world->size() % c.pp != 0) GTEST_SKIP() << "pp " << c.pp << " needs a multiple of ranks";
  auto dims = parallel::resolve_dims(world->size(), 1, c.pp, 1, 1, 1);
  ASSERT_TRUE(dims.ok()) << dims.status();
  auto mesh = parallel::Mesh::create(*world, *dims);
  const parallel::Coord& coord = mesh->coord();
  SCOPED_TRACE(::testing::Message() << "pp=" << c.pp << " v=" << c.v << " m=" << c.m
                                    << " pp_rank=" << coord.pp << " dp_rank=" << coord.dp);
  ChainModel model(c.pp, c.v, coord.pp);
  const Tensor batch = batch_of(coord.dp, c.m);
  const std::vector<Tensor> micro_batches = micro_batches_of(batch);
  const float loss_scale = 0.25f;
  mesh->pp().reset_stats();

  auto result = run_pipeline_step(model, mesh.get(), micro_batches,
                                  {.loss_scale = loss_scale, .forward_only = forward_only});
  ASSERT_TRUE(result.ok()) << result.status();

  const Reference ref = one_rank_reference(batch, loss_scale, !forward_only);
  EXPECT_NEAR(result->loss_sum, ref.loss_sum, 1e-5 * std::abs(ref.loss_sum));
  for (const models::Param* p : model.parameters()) {
    const int layer = std::stoi(p->name.substr(p->name.find('.') + 1));
    EXPECT_TENSORS_CLOSE(p->grad, ref.model->weight(layer)->grad, 1e-5) << p->name;
  }
  // One send per activation or gradient crossing a stage boundary, [b, T, H] f32 each.
  int sends = 0;
  for (int chunk = 0; chunk < model.num_chunks(); ++chunk) {
    sends += model.is_last_stage(chunk) ? 0 : c.m;
    if (!forward_only) sends += model.is_first_stage(chunk) ? 0 : c.m;
  }
  const comm::CallStats sent = mesh->pp().stats()["send"];
  EXPECT_EQ(sent.calls, sends);
  EXPECT_EQ(sent.bytes_sent, sends * kMicroBatch * kSeqLen * kHidden * 4);
  if (forward_only) {
    EXPECT_TRUE(model.backward_log().empty());
    EXPECT_EQ(model.finish_grads_calls(), 0);
    return;
  }
  // Each chunk: m backwards, `last_microbatch` on the final one only; finish_grads once.
  EXPECT_EQ(model.finish_grads_calls(), 1);
  for (int chunk = 0; chunk < model.num_chunks(); ++chunk) {
    std::vector<bool> want(c.m, false);
    want.back() = true;
    EXPECT_EQ(model.backward_log().at(chunk), want) << "chunk " << chunk;
  }
}

TEST_P(PipelineExecutorTest, LossAndGradsMatchOneRank) {
  expect_step_matches_one_rank(GetParam(), false);
}

TEST_P(PipelineExecutorTest, ForwardOnlyLossMatchesOneRank) {
  expect_step_matches_one_rank(GetParam(), true);
}

INSTANTIATE_TEST_SUITE_P(Schedules, PipelineExecutorTest,
                         ::testing::Values(Case{1, 1, 3}, Case{2, 1, 4}, Case{2, 1, 8},
                                           Case{4, 1, 4}, Case{4, 1, 2}, Case{2, 2, 4},
                                           Case{2, 2, 8}, Case{4, 2, 4}, Case{4, 2, 8}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           const Case& c = info.param;
                           return (c.v == 1 ? "OneFOneB" : "Interleaved") + std::string("_pp") +
                                  std::to_string(c.pp) + "_v" + std::to_string(c.v) + "_m" +
                                  std::to_string(c.m);
                         });

TEST(PipelineExecutor, WithoutMeshAccumulatesMicroBatches) {
  ChainModel model(1, 1, 0);
  const Tensor batch = batch_of(0, 3);
  const std::vector<Tensor> micro_batches = micro_batches_of(batch);
  auto result = run_pipeline_step(model, nullptr, micro_batches, {.loss_scale = 0.5f});
  ASSERT_TRUE(result.ok()) << result.status();
  const Reference ref = one_rank_reference(batch, 0.5f, true);
  EXPECT_NEAR(result->loss_sum, ref.loss_sum, 1e-5 * std::abs(ref.loss_sum));
  for (int l = 0; l < kLayers; ++l) {
    EXPECT_TENSORS_CLOSE(model.weight(l)->grad, ref.model->weight(l)->grad, 1e-5) << l;
  }
}

TEST(PipelineExecutor, RejectsAnInterleavedStepWithMicroBatchesNotAMultipleOfPp) {
  auto world = comm::mpi_world_communicator();
  auto dims = parallel::resolve_dims(world->size(), 1, 2, 1, 1, 1);
  ASSERT_TRUE(dims.ok()) << dims.status();
  auto mesh = parallel::Mesh::create(*world, *dims);
  ChainModel model(2, 2, mesh->coord().pp);
  auto result = run_pipeline_step(model, mesh.get(), micro_batches_of(batch_of(0, 3)));
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("--micro-batches 3 is not a multiple of --pp 2"),
            std::string::npos)
      << result.status();
  EXPECT_FALSE(run_pipeline_step(model, mesh.get(), {}).ok());
}

}  // namespace
}  // namespace weft::train
