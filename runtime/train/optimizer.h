// AdamW over a model's parameters, as torch.optim.AdamW (docs/architecture.md): weight decay only
// on parameters with two or more dimensions, optional global-norm gradient clipping; with a
// data-parallel group it also reduces the gradients, overlapped with the backward
// (parallel/grad_sync.h), and with ZeRO-1 it shards its state over that group.
//
// ZeRO-1: each parameter's rows (dim 0; 1-D parameters too) are partitioned over the dp ranks by
// parallel::shard_rows (the first rows % dp ranks take one row more), so every moment tensor is
// the rectangular slice [rows_r, ...] of its parameter, which a checkpoint stores with its
// offsets and any other dp degree reads back. A step: the grads are reduce-scattered to each
// rank's rows, the rank updates its rows of the weights with its moments, and the updated rows
// are all-gathered back into every rank's full weights (asynchronously, bucket by bucket). The
// weights equal plain AdamW's to f32 rounding.
//
// Per step, with `opt` built over the model's parameters:
//   model.zero_grad();
//   model.set_grad_ready_hook([&](models::Param& p) { opt.grad_ready(p); });   // once
//   ... forward/backward of every micro-batch; model.finish_grads();
//   opt.finish_grads();                      // waits for the dp reduction
//   double norm = opt.clip_grad_norm(clip, tp_group, pp_group);
//   opt.step(step);
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "kernels/ops.h"
#include "models/param.h"
#include "parallel/grad_sync.h"

namespace weft::train {

struct DataParallelOptions {
  comm::Communicator* dp = nullptr;  // null or one rank: no gradient reduction
  bool zero1 = false;                // shard the AdamW state over dp (experts: over expert_dp)
  size_t bucket_bytes = size_t{25} << 20;
  // The replicas of expert-parallel parameters (Param::expert_parallel(): the mesh's edp group);
  // null: they are reduced over dp like the others.
  comm::Communicator* expert_dp = nullptr;
};

// One optimizer-state tensor as this rank holds it: the box [offsets, offsets + value.shape)
// of a tensor of `global_shape` (the parameter's ShardSpec::global_shape).
struct OptimizerStateTensor {
  std::string name;  // "<param>.exp_avg" or "<param>.exp_avg_sq"
  Tensor value;
  Shape global_shape;
  std::vector<int64_t> offsets;
};

// Reads the box [offsets, offsets + lengths) of a stored tensor as an f32 tensor [lengths]
// (CheckpointReader::read_slice).
using ReadSlice = std::function<absl::StatusOr<Tensor>(const std::string& name,
                                                       const std::vector<int64_t>& offsets,
                                                       const std::vector<int64_t>& lengths)>;

class AdamW {
 public:
  AdamW(std::vector<models::Param*> params, kernels::AdamWConfig config,
        DataParallelOptions data_parallel = {});

  // The model's grad-ready hook: parameter `p`'s grad is final on this rank for this step, so
  // its bucket may start reducing. Parameters whose hook never fires are reduced by
  // finish_grads().
  void grad_ready(models::Param& p);
  // After the step's last backward: completes the dp reduction. Then every grad is summed over
  // dp, or under ZeRO-1 every grad's own_rows() are.
  void finish_grads();

  // The global gradient norm, each parameter element counted once over the whole mesh: under
  // ZeRO-1 the shards' squares are summed over dp; over `tp_group` (may be null) a parameter
  // split across it (ShardSpec::split_dim >= 0) adds every shard and a replicated one
  // (split_dim -1) counts on tp rank 0 only; copies with ShardSpec::replica > 0 never count;
  // over `pp_group` (may be null) the stages' parameters add. With `clip` > 0 scales the grads
  // (this rank's rows) by min(1, clip / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_ does.
  // Returns the norm before clipping. Collective over dp (ZeRO-1), tp and pp.
  // Expert-parallel parameters count once over their edp replicas (ZeRO-1: each its own rows)
  // and add over `expert_groups` (the ep and etp groups, whose ranks hold different experts or
  // feature blocks) instead of tp.
  double clip_grad_norm(double clip, comm::Communicator* tp_group = nullptr,
                        comm::Communicator* pp_group = nullptr,
                        const std::vector<comm::Communicator*>& expert_groups = {});

  // One update with the reduced grads; `step` counts from 1. Under ZeRO-1 collective over dp.
  void step(int64_t step);

  [[nodiscard]] const kernels::AdamWConfig& config() const { return config_; }
  void set_lr(float lr) { config_.lr = lr; }
  [[nodiscard]] bool zero1() const { return zero1_; }
  // Rows of parameter i this rank updates (all rows without ZeRO-1).
  [[nodiscard]] parallel::RowRange own_rows(size_t i) const;
  // First and second moments, parallel to the params: [own_rows(i).size(), ...] each.
  [[nodiscard]] std::vector<Tensor>& exp_avg() { return m_; }
  [[nodiscard]] std::vector<Tensor>& exp_avg_sq() { return v_; }
  // The dense parameters' reducer; null without a dp group of more than one rank.
  [[nodiscard]] parallel::GradReducer* reducer() const { return dense_.reducer.get(); }

  // The moments this rank should save: under ZeRO-1 its rows of every parameter, else all of
  // them (the caller saves from one dp rank only); never a copy with ShardSpec::replica > 0,
  // nor an empty slice. Offsets place them in the global tensor: the row offset in dim 0 plus
  // the parameter's own ShardSpec offset along its split_dim. The tensors are the live state.
  [[nodiscard]] std::vector<OptimizerStateTensor> state_tensors() const;
  // Fills every moment this rank holds (replicas included) from a checkpoint saved under any
  // mesh. Errors name the tensor and the shapes when a read disagrees with the state.
  absl::Status load_state(const ReadSlice& read_slice);

 private:
  // The state slices of parameter i (two entries, or none when it owns no rows).
  [[nodiscard]] std::vector<OptimizerStateTensor> state_of(size_t i) const;
  void update(size_t i, int64_t step);
  // Sum of squares of the grads this rank counts, of expert-parallel parameters or the others.
  [[nodiscard]] double local_grad_squares(const comm::Communicator* tp_group, bool experts) const;

  // The parameters reduced over one group, by one reducer (null: no reduction).
  struct Reduction {
    std::unique_ptr<parallel::GradReducer> reducer;
    std::vector<size_t> members;  // indices into params_, in parameter order
  };
  // Param i's reduction and its index there.
  struct Place {
    Reduction* reduction;
    size_t local;
  };

  std::vector<models::Param*> params_;
  kernels::AdamWConfig config_;
  bool zero1_ = false;
  Reduction dense_, expert_;
  std::vector<Place> place_;
  comm::Communicator* expert_dp_ = nullptr;
  std::unordered_map<const models::Param*, size_t> index_;
  std::vector<Tensor> m_;
  std::vector<Tensor> v_;
};

// sqrt(sum of squares) over all grads of one rank's whole model; with `clip` > 0 scales every
// grad by min(1, clip / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_ does. Returns the norm
// before clipping.
double clip_grad_norm(const std::vector<models::Param*>& params, double clip);

}  // namespace weft::train
