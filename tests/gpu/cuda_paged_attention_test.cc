// CUDA paged attention and KV-cache writes against the CPU kernels on the same random cache,
// block tables and varlen tokens, in f32 and bf16 storage, head dims 16 to 256.
#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/ops.h"
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

class CudaPagedAttention : public GpuPrecisionTest {};

TEST_P(CudaPagedAttention, MatchesTheCpuKernel) {
  for (int64_t d : {16, 64, 128, 256}) {
    SCOPED_TRACE(d);
    const int64_t heads = 8, kv_heads = 2, block_size = 16, num_blocks = 32, requests = 3;
    const int64_t max_blocks = 8;
    std::mt19937_64 rng(static_cast<uint64_t>(d));
    // Each request owns max_blocks distinct blocks, in shuffled order.
    std::vector<int64_t> ids(num_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    Tensor tables =
        Tensor::from_ints(std::vector<int64_t>(ids.begin(), ids.begin() + requests * max_blocks),
                          {requests, max_blocks});
    // A prefill chunk of 20 tokens, a decode at position 127 and one at position 0.
    std::vector<int64_t> seq, pos;
    for (int64_t t = 40; t < 60; ++t) {
      seq.push_back(0);
      pos.push_back(t);
    }
    seq.insert(seq.end(), {1, 2});
    pos.insert(pos.end(), {127, 0});
    const int64_t n = static_cast<int64_t>(seq.size());
    const Shape cache_shape = {num_blocks, block_size, kv_heads, d};
    Tensor k_cache = random_in(cache_shape, 1, dtype());
    Tensor v_cache = random_in(cache_shape, 2, dtype());
    Tensor q = random_in({n, heads, d}, 3, dtype());
    const Tensor seq_t = Tensor::from_ints(seq, {n});
    const Tensor pos_t = Tensor::from_ints(pos, {n});
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));

    // The step's own K/V go into their slots first, as the engine does.
    Tensor k_new = random_in({n, kv_heads, d}, 4, dtype());
    Tensor v_new = random_in({n, kv_heads, d}, 5, dtype());
    std::vector<int64_t> slots;
    for (int64_t i = 0; i < n; ++i) {
      slots.push_back(ids[seq[i] * max_blocks + pos[i] / block_size] * block_size +
                      pos[i] % block_size);
    }
    const Tensor slots_t = Tensor::from_ints(slots, {n});
    Tensor gk = on_gpu(k_cache, dtype()), gv = on_gpu(v_cache, dtype());
    kv_cache_write(on_gpu(k_new, dtype()), on_gpu(v_new, dtype()), on_gpu(as_i32(slots_t)), gk, gv);
    kv_cache_write(k_new, v_new, slots_t, k_cache, v_cache);
    EXPECT_TRUE(tensors_close(gk.to(Device::cpu()).to_dtype(DType::kF32), k_cache, 0.0));

    Tensor expected = Tensor::empty(q.shape());
    paged_attention_forward(q, k_cache, v_cache, tables, seq_t, pos_t, scale, expected);
    Tensor actual = gpu_empty(q.shape(), dtype());
    paged_attention_forward(on_gpu(q, dtype()), gk, gv, on_gpu(as_i32(tables)),
                            on_gpu(as_i32(seq_t)), on_gpu(pos_t), scale, actual);
    EXPECT_TRUE(tensors_close(actual.to(Device::cpu()).to_dtype(DType::kF32), expected, tol()));
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, CudaPagedAttention,
                         ::testing::Values(kF32Precision, kBF16Precision));

}  // namespace
}  // namespace weft::kernels
