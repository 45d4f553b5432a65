// LASP-2 (docs/algorithms.md "LASP-2"): one all-gather of every run's state (M forward, N
// backward), then each rank walks all runs in position order (forward) or reverse position order
// (backward), chaining acc = g^L acc + state, and keeps acc as it reaches each of its own runs.
// Every rank sends `slots` states (the most runs any rank holds; padding for fewer), so the
// volume is (P-1) * slots states per rank whatever the sequence length.
#include <algorithm>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "kernels/ops.h"
#include "parallel/sp_linear_runs.h"

namespace weft::parallel::sp_linear {

namespace {

// A run of some rank, with its slot in the gathered states.
struct GlobalRun {
  int64_t start = 0, len = 0;
  int rank = 0;
  int index = 0;  // among that rank's runs
};

// Every rank's runs in position order; sets *slots to the most runs one rank holds.
std::vector<GlobalRun> all_runs(const RunPlan& plan, int ranks, int64_t* slots) {
  std::vector<GlobalRun> out;
  *slots = 0;
  for (int p = 0; p < ranks; ++p) {
    const std::vector<SpLayout::Run> runs = plan.layout.runs(plan.seq_len, p);
    *slots = std::max<int64_t>(*slots, static_cast<int64_t>(runs.size()));
    for (size_t i = 0; i < runs.size(); ++i) {
      out.push_back({runs[i].start, runs[i].len, p, static_cast<int>(i)});
    }
  }
  std::sort(out.begin(), out.end(),
            [](const GlobalRun& a, const GlobalRun& b) { return a.start < b.start; });
  return out;
}

class GatheredStates final : public PendingStates {
 public:
  GatheredStates(comm::Communicator& group, const RunPlan& plan, const std::vector<Tensor>& local,
                 std::vector<Tensor>& out, bool reverse)
      : plan_(plan), out_(out) {
    order_ = all_runs(plan, group.size(), &slots_);
    if (reverse) std::reverse(order_.begin(), order_.end());
    Shape packed_shape = plan.state_shape;
    packed_shape.insert(packed_shape.begin(), slots_);
    const Device device = out.front().device();
    packed_ = Tensor::zeros(packed_shape, DType::kF32, device);  // [slots, B, H, d, d]
    for (size_t i = 0; i < local.size(); ++i) {
      Tensor slot = state(packed_, static_cast<int64_t>(i));
      slot.copy_from(local[i]);
    }
    packed_shape[0] = slots_ * group.size();
    gathered_ = Tensor::empty(packed_shape, DType::kF32, device);  // [P * slots, B, H, d, d]
    work_ = group.all_gather_async(packed_, gathered_);
  }

  void finish() override {
    work_->wait();
    Tensor acc = Tensor::zeros(plan_.state_shape, DType::kF32, gathered_.device());
    std::map<int64_t, Tensor> decays;  // by run length: [B, H, d, d] g^len
    for (const GlobalRun& run : order_) {
      if (run.rank == plan_.rank) out_[run.index].copy_from(acc);
      Tensor& decay = decays[run.len];
      if (!decay.defined()) {
        decay = state_decay(plan_.state_shape, plan_.gamma, run.len, acc.device());
      }
      kernels::mul_add_(acc, decay, state(gathered_, run.rank * slots_ + run.index));
    }
  }

 private:
  // Entry i of a stack of states, viewed as one state.
  Tensor state(const Tensor& stack, int64_t i) const {
    return stack.slice(i, i + 1).view(plan_.state_shape);
  }

  const RunPlan& plan_;
  std::vector<Tensor>& out_;
  std::vector<GlobalRun> order_;
  int64_t slots_ = 0;
  Tensor packed_, gathered_;
  comm::WorkPtr work_;
};

class Lasp2Exchange final : public StateExchange {
 public:
  explicit Lasp2Exchange(comm::Communicator& group) : group_(group) {}

  std::unique_ptr<PendingStates> start_forward(const RunPlan& plan, const std::vector<Tensor>& m,
                                               std::vector<Tensor>& s_in) override {
    return std::make_unique<GatheredStates>(group_, plan, m, s_in, false);
  }
  std::unique_ptr<PendingStates> start_backward(const RunPlan& plan, const std::vector<Tensor>& n,
                                                std::vector<Tensor>& ds_out) override {
    return std::make_unique<GatheredStates>(group_, plan, n, ds_out, true);
  }

 private:
  comm::Communicator& group_;
};

}  // namespace

std::unique_ptr<StateExchange> make_lasp2_exchange(comm::Communicator& group) {
  return std::make_unique<Lasp2Exchange>(group);
}

}  // namespace weft::parallel::sp_linear
