// Paged attention equals contiguous causal attention on a random varlen batch (prefill chunks and
// decodes in one step, shuffled blocks, GQA), and a token's output is bit-identical alone or in
// the batch.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "kernels/ops.h"
#include "tests/support/test_util.h"

namespace weft::kernels {
namespace {

using testing::random_tensor;

constexpr int64_t kHeads = 4, kKvHeads = 2, kDim = 16, kBlockSize = 4, kNumBlocks = 40;

struct Request {
  int64_t length;  // positions 0..length-1 exist after this step
  int64_t fresh;   // the last `fresh` positions run in this step
  Tensor q, k, v;  // [length, heads, d], [length, kv_heads, d] x2
  std::vector<int64_t> blocks;
};

// Rows [first, first + count) of a [T, ...] tensor as [count, ...].
Tensor rows(const Tensor& t, int64_t first, int64_t count) { return t.slice(first, first + count); }

Tensor ints(const std::vector<int64_t>& v) {
  return Tensor::from_ints(v, {static_cast<int64_t>(v.size())});
}

Tensor stack(const std::vector<Tensor>& parts) {  // along dim 0
  Shape shape = parts[0].shape();
  shape[0] = 0;
  for (const Tensor& p : parts) shape[0] += p.dim(0);
  Tensor out = Tensor::empty(shape);
  int64_t at = 0;
  for (const Tensor& p : parts) {
    std::copy_n(p.data<float>(), p.numel(), out.data<float>() + at);
    at += p.numel();
  }
  return out;
}

class PagedBatch {
 public:
  explicit PagedBatch(std::vector<std::pair<int64_t, int64_t>> shapes) {
    std::vector<int64_t> free(kNumBlocks);
    std::iota(free.begin(), free.end(), 0);
    std::shuffle(free.begin(), free.end(), std::mt19937_64(3));
    k_cache_ = Tensor::zeros({kNumBlocks, kBlockSize, kKvHeads, kDim});
    v_cache_ = Tensor::zeros(k_cache_.shape());
    for (size_t r = 0; r < shapes.size(); ++r) {
      Request q{shapes[r].first, shapes[r].second};
      q.q = random_tensor({q.length, kHeads, kDim}, 10 * r + 1);
      q.k = random_tensor({q.length, kKvHeads, kDim}, 10 * r + 2);
      q.v = random_tensor({q.length, kKvHeads, kDim}, 10 * r + 3);
      for (int64_t b = 0; b * kBlockSize < q.length; ++b) {
        q.blocks.push_back(free.back());
        free.pop_back();
      }
      requests_.push_back(std::move(q));
    }
    max_blocks_ = 0;
    for (const Request& q : requests_) {
      max_blocks_ = std::max<int64_t>(max_blocks_, static_cast<int64_t>(q.blocks.size()));
    }
  }

  int64_t slot(const Request& q, int64_t t) const {
    return q.blocks[t / kBlockSize] * kBlockSize + t % kBlockSize;
  }

  // Writes the K/V of positions [first, last) of every request (earlier steps, or this one's).
  void write(bool earlier) {
    std::vector<Tensor> ks, vs;
    std::vector<int64_t> slots;
    for (const Request& q : requests_) {
      const int64_t first = earlier ? 0 : q.length - q.fresh;
      const int64_t count = earlier ? q.length - q.fresh : q.fresh;
      if (count == 0) continue;
      ks.push_back(rows(q.k, first, count));
      vs.push_back(rows(q.v, first, count));
      for (int64_t t = first; t < first + count; ++t) slots.push_back(slot(q, t));
    }
    if (!slots.empty()) kv_cache_write(stack(ks), stack(vs), ints(slots), k_cache_, v_cache_);
  }

  // This step's outputs [N, heads, d] for the requests in `which` (all by default).
  Tensor attend(const std::vector<size_t>& which) const {
    std::vector<Tensor> qs;
    std::vector<int64_t> seq, pos;
    std::vector<int64_t> table(requests_.size() * max_blocks_, -1);
    for (size_t r = 0; r < requests_.size(); ++r) {
      std::copy(requests_[r].blocks.begin(), requests_[r].blocks.end(),
                table.begin() + static_cast<int64_t>(r) * max_blocks_);
    }
    for (size_t r : which) {
      const Request& q = requests_[r];
      qs.push_back(rows(q.q, q.length - q.fresh, q.fresh));
      for (int64_t t = q.length - q.fresh; t < q.length; ++t) {
        seq.push_back(static_cast<int64_t>(r));
        pos.push_back(t);
      }
    }
    Tensor q = stack(qs);
    Tensor o = Tensor::empty(q.shape());
    paged_attention_forward(
        q, k_cache_, v_cache_,
        Tensor::from_ints(table, {static_cast<int64_t>(requests_.size()), max_blocks_}), ints(seq),
        ints(pos), 1.0f / std::sqrt(static_cast<float>(kDim)), o);
    return o;
  }

  // The same outputs from contiguous causal attention, request by request.
  Tensor reference() const {
    std::vector<Tensor> outs;
    for (const Request& q : requests_) {
      Tensor qq = rows(q.q, q.length - q.fresh, q.fresh).view({1, q.fresh, kHeads, kDim});
      Tensor o = Tensor::empty(qq.shape());
      Tensor lse = Tensor::empty({1, kHeads, q.fresh});
      attention_forward(qq, q.k.view({1, q.length, kKvHeads, kDim}),
                        q.v.view({1, q.length, kKvHeads, kDim}),
                        1.0f / std::sqrt(static_cast<float>(kDim)), /*causal=*/true,
                        /*q_offset=*/q.length - q.fresh, /*k_offset=*/0, o, lse);
      outs.push_back(o.view({q.fresh, kHeads, kDim}));
    }
    return stack(outs);
  }

  [[nodiscard]] const std::vector<Request>& requests() const { return requests_; }

 private:
  std::vector<Request> requests_;
  int64_t max_blocks_ = 0;
  Tensor k_cache_, v_cache_;
};

TEST(PagedAttention, EqualsContiguousCausalAttentionOnAVarlenBatch) {
  // (length, fresh): a whole prompt, a prefill chunk, two decodes (one at a block boundary).
  PagedBatch batch({{5, 5}, {17, 6}, {33, 1}, {8, 1}});
  batch.write(/*earlier=*/true);
  batch.write(/*earlier=*/false);
  EXPECT_TENSORS_CLOSE(batch.attend({0, 1, 2, 3}), batch.reference(), 1e-5);
}

TEST(PagedAttention, ATokensOutputIsTheSameAloneOrInTheBatch) {
  PagedBatch batch({{5, 5}, {17, 6}, {33, 1}, {8, 1}});
  batch.write(true);
  batch.write(false);
  const std::vector<float> all = batch.attend({0, 1, 2, 3}).to_floats();
  const std::vector<float> alone = batch.attend({2}).to_floats();
  const int64_t row = kHeads * kDim;
  const int64_t before = (5 + 6) * row;  // request 2's rows follow requests 0 and 1
  ASSERT_EQ(alone.size(), static_cast<size_t>(row));
  EXPECT_TRUE(std::equal(alone.begin(), alone.end(), all.begin() + before));
}

}  // namespace
}  // namespace weft::kernels
