// The auto cores (sp_auto.h): one core per candidate algorithm, and per forward the candidate the
// cost model ranks first for the call's shape.
#include "parallel/sp_auto.h"

#include <utility>

#include "parallel/sp_attention_impl.h"
#include "runtime/core/check.h"
#include "runtime/core/status.h"

namespace weft::parallel {

namespace {

// Candidate `algo`'s entry of `cores`, built in the order of `algos`.
template <typename Core, typename Algo>
Core& core_of(const std::vector<Algo>& algos, const std::vector<std::unique_ptr<Core>>& cores,
              Algo algo) {
  for (size_t i = 0; i < algos.size(); ++i) {
    if (algos[i] == algo) return *cores[i];
  }
  WEFT_CHECK(false) << "not a candidate of this auto core";
  return *cores.front();
}

class AutoAttention final : public AutoSpAttention {
 public:
  AutoAttention(const SpAttentionOptions& options, const SpCostParams& costs, int ranks)
      : options_(options), costs_(costs), ranks_(ranks) {}

  absl::Status add(comm::Communicator& group, SpAttnAlgo algo) {
    SpAttentionOptions o = options_;
    o.algo = algo;
    WEFT_ASSIGN_OR_RETURN(std::unique_ptr<SequenceParallelAttention> core,
                          make_sp_attention(group, o));
    algos_.push_back(algo);
    cores_.push_back(std::move(core));
    return absl::OkStatus();
  }

  const std::vector<SpAttnAlgo>& candidates() const override { return algos_; }
  const SpCostParams& costs() const override { return costs_; }
  SpAttnAlgo last_choice() const override { return last_; }

  SpAttnAlgo choose(int64_t batch, int64_t tokens, int64_t dim, int64_t elem_bytes) const override {
    const SpAttnShape shape{.batch = batch,
                            .tokens = tokens,
                            .heads = options_.heads,
                            .kv_heads = options_.kv_heads,
                            .dim = dim,
                            .ranks = ranks_,
                            .elem_bytes = elem_bytes};
    std::vector<SpCost> predicted;
    for (SpAttnAlgo algo : algos_) {
      predicted.push_back(predict_sp_attention(algo, shape, options_.layout, 1, costs_));
    }
    return algos_[cheapest(predicted)];
  }

  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v,
                 std::unique_ptr<SpAttentionSaved>* saved) override {
    sp_detail::check_qkv(options_, q, k, v);
    last_ = choose(q.dim(0), q.dim(1), q.dim(3), static_cast<int64_t>(dtype_size(q.dtype())));
    SequenceParallelAttention& core = core_of(algos_, cores_, last_);
    if (saved == nullptr) return core.forward(q, k, v, nullptr);
    auto st = std::make_unique<Saved>();
    st->algo = last_;
    Tensor o = core.forward(q, k, v, &st->inner);
    *saved = std::move(st);
    return o;
  }

  void backward(SpAttentionSaved& saved, const Tensor& dout, Tensor& dq, Tensor& dk,
                Tensor& dv) override {
    Saved& st = sp_detail::saved_as<Saved>(saved);
    core_of(algos_, cores_, st.algo).backward(*st.inner, dout, dq, dk, dv);
  }

 private:
  struct Saved final : SpAttentionSaved {
    SpAttnAlgo algo = SpAttnAlgo::kRing;
    std::unique_ptr<SpAttentionSaved> inner;
  };

  SpAttentionOptions options_;
  SpCostParams costs_;
  int ranks_;
  std::vector<SpAttnAlgo> algos_;
  std::vector<std::unique_ptr<SequenceParallelAttention>> cores_;
  SpAttnAlgo last_ = SpAttnAlgo::kRing;
};

class AutoLinear final : public AutoSpLinearAttention {
 public:
  AutoLinear(const SpLinearOptions& options, const SpCostParams& costs, int ranks)
      : options_(options), costs_(costs), ranks_(ranks) {}

  absl::Status add(comm::Communicator& group, SpLinearAlgo algo) {
    SpLinearOptions o = options_;
    o.algo = algo;
    WEFT_ASSIGN_OR_RETURN(std::unique_ptr<SequenceParallelLinearAttention> core,
                          make_sp_linear_attention(group, o));
    if (algos_.empty()) last_ = algo;
    algos_.push_back(algo);
    cores_.push_back(std::move(core));
    return absl::OkStatus();
  }

  const std::vector<SpLinearAlgo>& candidates() const override { return algos_; }
  const SpCostParams& costs() const override { return costs_; }
  SpLinearAlgo last_choice() const override { return last_; }

  SpLinearAlgo choose(int64_t batch, int64_t tokens, int64_t heads, int64_t dim) const override {
    const SpLinearShape shape{
        .batch = batch, .tokens = tokens, .heads = heads, .dim = dim, .ranks = ranks_};
    std::vector<SpCost> predicted;
    for (SpLinearAlgo algo : algos_) {
      predicted.push_back(
          predict_sp_linear(algo, shape, options_.layout, options_.scan_blocks, costs_));
    }
    return algos_[cheapest(predicted)];
  }

  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<float>& gamma,
                 float scale, std::unique_ptr<SpLinearSaved>* saved) override {
    WEFT_CHECK_EQ(q.ndim(), 4) << shape_str(q.shape());
    last_ = choose(q.dim(0), q.dim(1), q.dim(2), q.dim(3));
    SequenceParallelLinearAttention& core = core_of(algos_, cores_, last_);
    if (saved == nullptr) return core.forward(q, k, v, gamma, scale, nullptr);
    auto st = std::make_unique<Saved>();
    st->algo = last_;
    Tensor o = core.forward(q, k, v, gamma, scale, &st->inner);
    *saved = std::move(st);
    return o;
  }

  void backward(SpLinearSaved& saved, const Tensor& dout, Tensor& dq, Tensor& dk,
                Tensor& dv) override {
    Saved& st = sp_detail::saved_as<Saved>(saved);
    core_of(algos_, cores_, st.algo).backward(*st.inner, dout, dq, dk, dv);
  }

 private:
  struct Saved final : SpLinearSaved {
    SpLinearAlgo algo = SpLinearAlgo::kLasp2;
    std::unique_ptr<SpLinearSaved> inner;
  };

  SpLinearOptions options_;
  SpCostParams costs_;
  int ranks_;
  std::vector<SpLinearAlgo> algos_;
  std::vector<std::unique_ptr<SequenceParallelLinearAttention>> cores_;
  SpLinearAlgo last_ = SpLinearAlgo::kLasp2;
};

}  // namespace

absl::StatusOr<std::unique_ptr<AutoSpAttention>> make_auto_sp_attention(
    comm::Communicator& group, const SpAttentionOptions& options, const SpCostParams& costs) {
  auto made = std::make_unique<AutoAttention>(options, costs, group.size());
  WEFT_RETURN_IF_ERROR(made->add(group, SpAttnAlgo::kRing));
  if (group.size() > 1 && options.heads >= group.size()) {
    WEFT_RETURN_IF_ERROR(made->add(group, SpAttnAlgo::kUlysses));
  }
  if (group.size() > 1) WEFT_RETURN_IF_ERROR(made->add(group, SpAttnAlgo::kAllGather));
  return std::unique_ptr<AutoSpAttention>(std::move(made));
}

absl::StatusOr<std::unique_ptr<AutoSpLinearAttention>> make_auto_sp_linear_attention(
    comm::Communicator& group, const SpLinearOptions& options, const SpCostParams& costs) {
  auto made = std::make_unique<AutoLinear>(options, costs, group.size());
  const SpLayout& layout = options.layout;
  if (layout.contiguous() || layout.groups == layout.ranks) {
    WEFT_RETURN_IF_ERROR(made->add(group, SpLinearAlgo::kZeco));
  }
  WEFT_RETURN_IF_ERROR(made->add(group, SpLinearAlgo::kLasp2));
  return std::unique_ptr<AutoSpLinearAttention>(std::move(made));
}

}  // namespace weft::parallel
