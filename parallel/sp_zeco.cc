// ZeCO (docs/algorithms.md "ZeCO and All-Scan"): the carried states by the All-Scan collective, one
// state sent per rank per pass.
//   contiguous  rank r holds run [rc, (r+1)c): forward scan of M over ranks 0..P-1 (S_in), reverse
//               scan of N over P-1..0 (dS_out); one pass each.
//   zigzag      rank r holds chunks r and 2P-1-r (length L = T/2P each), which in position order
//   (g = P)     visit ranks 0..P-1, then P-1..0. Ranks r < P-1 hold them as two runs. Forward:
//               pass 1 scans run 0's M over ranks 0..P-1, pass 2 run 1's M over P-1..0.
//               Backward mirrors it: pass 1 scans run 1's N over 0..P-1 (the sequence ends
//               with rank 0's run 1), pass 2 run 0's N over P-1..0.
//               Rank P-1's chunks P-1 and P are adjacent: one run of 2L = c. It is the last
//               rank of pass 1, which brings its run's carried state (S_in, or dS_out), and the
//               first of pass 2, which it enters with that state, sending on the state past its
//               whole run (decay g^c): the same in both directions.
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "parallel/sp_linear_runs.h"

namespace weft::parallel::sp_linear {

namespace {

// One or two All-Scan passes, each scanning one local run's state and receiving into that run's
// out[] entry. Two passes over the same run: the zigzag's rank P-1, whose pass 2 starts from
// what pass 1 brought, so it issues pass 2 only once pass 1 has completed there.
class ScannedStates final : public PendingStates {
 public:
  struct Pass {
    int run = 0;
    bool reverse = false;
  };

  ScannedStates(comm::Communicator& group, const RunPlan& plan, int blocks,
                const std::vector<Tensor>& local, std::vector<Tensor>& out,
                std::vector<Pass> passes)
      : group_(group), blocks_(blocks), local_(local), out_(out), passes_(std::move(passes)) {
    // g^L with L the length of this rank's runs (all equal here)
    decay_ = state_decay(plan.state_shape, plan.gamma, plan.runs.front().len, out.front().device());
    first_ = start(passes_[0], out_[passes_[0].run]);
    if (passes_.size() == 2 && !bridging()) second_ = start(passes_[1], out_[passes_[1].run]);
  }

  void finish() override {
    first_->wait();
    if (passes_.size() == 1) return;
    if (bridging()) {
      entry_ = out_[passes_[0].run].clone();
      second_ = start(passes_[1], entry_);
    }
    second_->wait();
  }

 private:
  bool bridging() const { return passes_.size() == 2 && passes_[0].run == passes_[1].run; }

  comm::WorkPtr start(const Pass& pass, Tensor& target) {
    return group_.all_scan_async(local_[pass.run], decay_, target, blocks_, pass.reverse);
  }

  comm::Communicator& group_;
  int blocks_;
  const std::vector<Tensor>& local_;
  std::vector<Tensor>& out_;
  std::vector<Pass> passes_;
  Tensor decay_;  // [B, H, d, d] g^L per head, read by the scans until they complete
  Tensor entry_;  // [B, H, d, d] the bridging rank's entry value of pass 2
  comm::WorkPtr first_, second_;
};

class ZecoExchange final : public StateExchange {
 public:
  ZecoExchange(comm::Communicator& group, bool contiguous, int blocks)
      : group_(group), contiguous_(contiguous), blocks_(blocks) {}

  std::unique_ptr<PendingStates> start_forward(const RunPlan& plan, const std::vector<Tensor>& m,
                                               std::vector<Tensor>& s_in) override {
    std::vector<ScannedStates::Pass> passes = {{0, false}};
    if (!contiguous_) passes.push_back({plan.runs.size() == 2 ? 1 : 0, true});
    return std::make_unique<ScannedStates>(group_, plan, blocks_, m, s_in, std::move(passes));
  }
  std::unique_ptr<PendingStates> start_backward(const RunPlan& plan, const std::vector<Tensor>& n,
                                                std::vector<Tensor>& ds_out) override {
    std::vector<ScannedStates::Pass> passes = {{0, true}};
    if (!contiguous_) passes = {{plan.runs.size() == 2 ? 1 : 0, false}, {0, true}};
    return std::make_unique<ScannedStates>(group_, plan, blocks_, n, ds_out, std::move(passes));
  }

 private:
  comm::Communicator& group_;
  bool contiguous_;
  int blocks_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<StateExchange>> make_zeco_exchange(comm::Communicator& group,
                                                                  const SpLinearOptions& options) {
  const SpLayout& layout = options.layout;
  if (!layout.contiguous() && layout.groups != layout.ranks) {
    return absl::InvalidArgumentError(
        absl::StrCat("--sp-linear zeco needs the contiguous layout or the zigzag over all ",
                     layout.ranks, " sp ranks, got a zigzag over ", layout.groups,
                     " groups (use --sp-linear lasp2 for this layout)"));
  }
  if (options.scan_blocks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("zeco scan blocks must be >= 1, got ", options.scan_blocks));
  }
  return std::make_unique<ZecoExchange>(group, layout.contiguous(), options.scan_blocks);
}

}  // namespace weft::parallel::sp_linear
