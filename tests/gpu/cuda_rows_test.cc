// CUDA row-wise kernels against the CPU kernels on the same random inputs, in f32 and bf16
// storage: RMSNorm, RoPE (with scaled frequencies), softmax, cross-entropy, embedding and the
// top-k router.
#include <cstdint>
#include <vector>

#include "kernels/ops.h"
#include "models/rotary_embedding.h"
#include "tests/gpu/gpu_test_util.h"

namespace weft::kernels {
namespace {

using testing::as_i32;
using testing::gpu_empty;
using testing::GpuPrecisionTest;
using testing::kBF16Precision;
using testing::kF32Precision;
using testing::on_gpu;
using testing::random_in;
using testing::tensors_close;

using CudaRows = GpuPrecisionTest;

TEST_P(CudaRows, RmsNormForwardAndBackwardMatchCpu) {
  const Shape shape = {3, 4, 300};
  const Tensor x = random_in(shape, 1, dtype());
  const Tensor w = random_in({300}, 2, dtype(), 0.5f, 1.5f);
  const Tensor dy = random_in(shape, 3, dtype());
  const Tensor dw0 = random_in({300}, 4, dtype());
  Tensor y = Tensor::empty(shape);
  Tensor rstd = Tensor::empty({3, 4});
  rmsnorm_forward(x, w, 1e-5f, y, rstd);
  Tensor dx = Tensor::empty(shape);
  Tensor dw = dw0.clone();
  rmsnorm_backward(x, w, rstd, dy, dx, dw);

  const Tensor gx = on_gpu(x, dtype());
  const Tensor gw = on_gpu(w, dtype());
  Tensor gy = gpu_empty(shape, dtype());
  Tensor grstd = gpu_empty({3, 4}, DType::kF32);
  rmsnorm_forward(gx, gw, 1e-5f, gy, grstd);
  Tensor gdx = gpu_empty(shape, dtype());
  Tensor gdw = on_gpu(dw0, dtype());
  rmsnorm_backward(gx, gw, grstd, on_gpu(dy, dtype()), gdx, gdw);

  EXPECT_TRUE(tensors_close(gy, y, tol()));
  EXPECT_TRUE(tensors_close(grstd, rstd, kF32Precision.tol));  // f32 statistics of equal inputs
  EXPECT_TRUE(tensors_close(gdx, dx, tol()));
  EXPECT_TRUE(tensors_close(gdw, dw, tol()));
}

TEST_P(CudaRows, RopeForwardAndBackwardMatchCpuForI32AndI64Positions) {
  const Shape shape = {2, 6, 3, 16};
  const Tensor x = random_in(shape, 5, dtype());
  // A zigzag-like layout and large positions.
  const Tensor positions = Tensor::from_ints({0, 1, 2, 9, 1000, 4095}, {6});
  // YaRN's frequencies and factor on cos and sin (one row for every token), then dynamic RoPE's
  // row per token as a serving step has it.
  models::RopeConfig rope{.theta = 10000.0, .head_dim = 16, .max_position_embeddings = 64};
  rope.scaling = {.type = io::RopeType::kYarn,
                  .factor = 4.0,
                  .original_max_position_embeddings = 16,
                  .attention_factor = 1.1386,
                  .beta_fast = 8.0,
                  .beta_slow = 0.5};
  const models::RopeFrequencies yarn = models::rope_frequencies(rope, 0);
  rope.scaling = {.type = io::RopeType::kDynamic, .factor = 2.0};
  std::vector<float> rows;
  for (const int64_t len : {3, 3, 3, 70, 1001, 4096}) {
    const std::vector<float> row = models::rope_frequencies(rope, len).inv_freq;
    rows.insert(rows.end(), row.begin(), row.end());
  }
  const std::pair<Tensor, float> tables[] = {
      {Tensor::from_floats(yarn.inv_freq, {8}), yarn.attention_factor},
      {Tensor::from_floats(rows, {6, 8}), 1.0f}};
  for (const auto& [inv_freq, factor] : tables) {
    SCOPED_TRACE(shape_str(inv_freq.shape()));
    Tensor y = x.clone();
    rope_forward(y, positions, inv_freq, factor);
    Tensor back = y.clone();
    rope_backward(back, positions, inv_freq, factor);
    for (const Tensor& pos : {positions, as_i32(positions)}) {
      SCOPED_TRACE(dtype_name(pos.dtype()));
      Tensor gy = on_gpu(x, dtype());
      rope_forward(gy, on_gpu(pos), on_gpu(inv_freq), factor);
      EXPECT_TRUE(tensors_close(gy, y, tol()));
      Tensor gback = on_gpu(y, dtype());
      rope_backward(gback, on_gpu(pos), on_gpu(inv_freq), factor);
      EXPECT_TRUE(tensors_close(gback, back, tol()));
    }
  }
}

TEST_P(CudaRows, SoftmaxForwardAndBackwardMatchCpu) {
  const Shape shape = {5, 77};
  const Tensor x = random_in(shape, 6, dtype(), -6.0f, 6.0f);
  const Tensor dy = random_in(shape, 7, dtype());
  Tensor y = Tensor::empty(shape);
  softmax_forward(x, y);
  Tensor dx = Tensor::empty(shape);
  softmax_backward(y, dy, dx);

  Tensor gy = gpu_empty(shape, dtype());
  softmax_forward(on_gpu(x, dtype()), gy);
  // The backward takes the CPU's y (rounded to the storage dtype) so that it is tested alone.
  const Tensor y_in = testing::rounded(y, dtype());
  Tensor dx_in = Tensor::empty(shape);
  softmax_backward(y_in, dy, dx_in);
  Tensor gdx = gpu_empty(shape, dtype());
  softmax_backward(on_gpu(y_in, dtype()), on_gpu(dy, dtype()), gdx);
  EXPECT_TRUE(tensors_close(gy, y, tol()));
  EXPECT_TRUE(tensors_close(gdx, dx_in, tol()));
}

TEST_P(CudaRows, CrossEntropyWithVocabularySliceMatchesCpu) {
  const int64_t rows = 6, vocab = 50, vocab_start = 100;
  const Tensor logits = random_in({rows, vocab}, 8, dtype(), -5.0f, 5.0f);
  // Local targets, targets of other slices (20, 170) and unlabelled rows (-1).
  const Tensor targets = Tensor::from_ints({100, 149, 20, -1, 123, 170}, {rows});
  const Tensor row_scale = random_in({rows}, 9, DType::kF32, 0.1f, 1.0f);
  Tensor lse = Tensor::empty({rows});
  Tensor target_logit = Tensor::empty({rows});
  cross_entropy_forward(logits, targets, vocab_start, lse, target_logit);
  Tensor dlogits = Tensor::empty({rows, vocab});
  cross_entropy_backward(logits, targets, vocab_start, lse, row_scale, dlogits);

  const Tensor glogits = on_gpu(logits, dtype());
  for (const Tensor& t : {targets, as_i32(targets)}) {
    SCOPED_TRACE(dtype_name(t.dtype()));
    Tensor glse = gpu_empty({rows}, DType::kF32);
    Tensor gtarget = gpu_empty({rows}, DType::kF32);
    cross_entropy_forward(glogits, on_gpu(t), vocab_start, glse, gtarget);
    EXPECT_TRUE(tensors_close(glse, lse, kF32Precision.tol));
    EXPECT_TRUE(tensors_close(gtarget, target_logit, kF32Precision.tol));
    Tensor gdlogits = gpu_empty({rows, vocab}, dtype());
    cross_entropy_backward(glogits, on_gpu(t), vocab_start, on_gpu(lse), on_gpu(row_scale),
                           gdlogits);
    EXPECT_TRUE(tensors_close(gdlogits, dlogits, tol()));
  }
}

TEST_P(CudaRows, EmbeddingLookupAndRepeatedIdGradientsMatchCpu) {
  const int64_t local_vocab = 10, dim = 24, vocab_start = 5;
  // Repeated ids (7, 9) collide in the backward; 2 and 15 belong to other slices.
  const Tensor ids = Tensor::from_ints({7, 9, 2, 7, 14, 15, 9, 5}, {2, 4});
  const Tensor table = random_in({local_vocab, dim}, 10, dtype());
  const Tensor dout = random_in({2, 4, dim}, 11, dtype());
  const Tensor dtable0 = random_in({local_vocab, dim}, 12, dtype());
  Tensor out = Tensor::empty({2, 4, dim});
  embedding_forward(ids, table, vocab_start, out);
  Tensor dtable = dtable0.clone();
  embedding_backward(ids, dout, vocab_start, dtable);

  for (const Tensor& i : {ids, as_i32(ids)}) {
    SCOPED_TRACE(dtype_name(i.dtype()));
    Tensor gout = gpu_empty({2, 4, dim}, dtype());
    embedding_forward(on_gpu(i), on_gpu(table, dtype()), vocab_start, gout);
    EXPECT_TRUE(tensors_close(gout, out, tol()));
    Tensor gdtable = on_gpu(dtable0, dtype());
    embedding_backward(on_gpu(i), on_gpu(dout, dtype()), vocab_start, gdtable);
    EXPECT_TRUE(tensors_close(gdtable, dtable, tol()));
  }
}

TEST_P(CudaRows, TopkRouterForwardAndBackwardMatchCpu) {
  const int64_t rows = 37, experts = 40;
  const int k = 3;
  // Experts past 32 make a warp's lanes hold two experts each.
  const Tensor logits = random_in({rows, experts}, 13, dtype(), -3.0f, 3.0f);
  const Tensor dweights = random_in({rows, k}, 14, dtype());
  for (bool renormalize : {false, true}) {
    SCOPED_TRACE(::testing::Message() << "renormalize " << renormalize);
    Tensor probs = Tensor::empty({rows, experts});
    Tensor idx = Tensor::empty({rows, k}, DType::kI32);
    Tensor weights = Tensor::empty({rows, k});
    topk_router_forward(logits, k, renormalize, probs, idx, weights);
    Tensor gprobs = gpu_empty({rows, experts}, DType::kF32);
    Tensor gidx = gpu_empty({rows, k}, DType::kI32);
    Tensor gweights = gpu_empty({rows, k}, dtype());
    topk_router_forward(on_gpu(logits, dtype()), k, renormalize, gprobs, gidx, gweights);
    EXPECT_TRUE(tensors_close(gprobs, probs, kF32Precision.tol));
    EXPECT_EQ(gidx.to_ints(), idx.to_ints());
    EXPECT_TRUE(tensors_close(gweights, weights, tol()));

    // The backward from the CPU's forward results, so that it is tested alone.
    const Tensor weights_in = testing::rounded(weights, dtype());
    Tensor dlogits = Tensor::empty({rows, experts});
    topk_router_backward(probs, idx, weights_in, dweights, renormalize, dlogits);
    Tensor gdlogits = gpu_empty({rows, experts}, dtype());
    topk_router_backward(on_gpu(probs), on_gpu(idx), on_gpu(weights_in, dtype()),
                         on_gpu(dweights, dtype()), renormalize, gdlogits);
    EXPECT_TRUE(tensors_close(gdlogits, dlogits, tol()));
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, CudaRows, ::testing::Values(kF32Precision, kBF16Precision));

}  // namespace
}  // namespace weft::kernels
