#include "runtime/train/pipeline_executor.h"

#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/core/check.h"
#include "runtime/train/pipeline_p2p_plan.h"
#include "runtime/train/pipeline_schedule.h"

namespace weft::train {
namespace {

// The smallest MPI_TAG_UB the MPI standard allows.
constexpr int kMaxTag = 32767;

// Receives posted ahead of the action that needs them (pipeline_p2p_plan.h; 0 deadlocks the
// interleaved schedule, 1 and more do not, as pipeline_schedule_test simulates).
constexpr int kReceiveWindow = 2;

// This rank's place in the pipeline: pp ranks of `chunks` chunks each.
struct Place {
  comm::Communicator* pp = nullptr;  // null with one pipeline rank
  ScheduleShape shape;

  [[nodiscard]] int stages() const { return shape.pp * shape.virtual_chunks; }
  [[nodiscard]] int stage(int chunk) const { return chunk * shape.pp + shape.pp_rank; }
  [[nodiscard]] int rank_of(int stage) const { return stage % shape.pp; }
  // Names a message by what it carries (activation or gradient), its micro-batch and the virtual
  // stage that receives it.
  [[nodiscard]] int tag(const PipelineAction& a, int to_stage) const {
    return (a.micro_batch * stages() + to_stage) * 2 + (a.is_forward() ? 0 : 1);
  }
};

// [b, T, hidden], or [b, T/tp, hidden] under sequence parallelism.
Device parameter_device(models::CausalLM& model) {
  const auto& params = model.parameters();
  return params.empty() ? Device::cpu() : params.front()->value.device();
}

struct Inbox {
  Tensor tensor;  // undefined when the action receives nothing
  comm::WorkPtr work;
};

// For each action: true on the final backward of its chunk (its grads become final there).
std::vector<bool> last_backward_of_chunk(const std::vector<PipelineAction>& actions, int chunks) {
  std::vector<bool> last(actions.size(), false);
  std::vector<bool> seen(chunks, false);
  for (size_t i = actions.size(); i-- > 0;) {
    const PipelineAction& a = actions[i];
    if (a.is_forward() || seen[a.chunk]) continue;
    seen[a.chunk] = true;
    last[i] = true;
  }
  return last;
}

// The last pipeline rank holds the loss; the others learn it. A double travels as its 8 bytes.
double broadcast_loss(const Place& place, double loss_sum, Device device) {
  if (place.pp == nullptr) return loss_sum;
  int64_t bits = 0;
  std::memcpy(&bits, &loss_sum, sizeof(bits));
  Tensor t = Tensor::from_ints({bits}, {1}).to(device);
  place.pp->broadcast(t, place.shape.pp - 1);
  bits = t.to_ints()[0];
  std::memcpy(&loss_sum, &bits, sizeof(bits));
  return loss_sum;
}

absl::StatusOr<Place> place_of(models::CausalLM& model, const parallel::Mesh* mesh,
                               const std::vector<Tensor>& micro_batches, bool forward_only) {
  Place place;
  place.shape = {.virtual_chunks = model.num_chunks(),
                 .micro_batches = static_cast<int>(micro_batches.size()),
                 .forward_only = forward_only};
  if (mesh != nullptr && mesh->pp().size() > 1) {
    place.pp = &mesh->pp();
    place.shape.pp = place.pp->size();
    place.shape.pp_rank = place.pp->rank();
  }
  const int64_t top_tag = static_cast<int64_t>(micro_batches.size()) * place.stages() * 2 - 1;
  if (top_tag > kMaxTag) {
    return absl::InvalidArgumentError(absl::StrCat(
        micro_batches.size(), " micro-batches x ", place.stages(),
        " virtual stages need message tags up to ", top_tag, "; at most ", kMaxTag, " fit"));
  }
  return place;
}

// One step's mutable state: the received tensors, the outputs waiting to be sent, the chunk
// states between forward and backward, and the loss.
class StepRunner {
 public:
  StepRunner(models::CausalLM& model, const parallel::Mesh* mesh,
             const std::vector<Tensor>& micro_batches, const PipelineStepOptions& options,
             const Place& place, const std::vector<PipelineAction>& actions)
      : model_(model),
        mesh_(mesh),
        micro_batches_(micro_batches),
        options_(options),
        place_(place),
        actions_(actions),
        device_(parameter_device(model)),
        last_backward_(last_backward_of_chunk(actions, place.shape.virtual_chunks)),
        inbox_(actions.size()),
        outbox_(actions.size()),
        states_(micro_batches.size() * place.shape.virtual_chunks) {}

  void apply(const P2POp& op) {
    const PipelineAction& a = actions_[op.action];
    const ActionPeers peers = action_peers(place_.shape, a);
    switch (op.kind) {
      case P2POp::Kind::kPostRecv:
        post_recv(op.action, peers);
        break;
      case P2POp::Kind::kWaitRecv:
        inbox_[op.action].work->wait();
        break;
      case P2POp::Kind::kRun:
        outbox_[op.action] = run(op.action);
        inbox_[op.action] = {};  // the chunk state keeps what it needs of the input
        break;
      case P2POp::Kind::kPostSend:
        sends_.push_back(place_.pp->send_async(outbox_[op.action], place_.rank_of(peers.to_stage),
                                               place_.tag(a, peers.to_stage)));
        outbox_[op.action] = Tensor();  // the Work keeps the buffer alive
        break;
    }
  }

  // Waits on the sends, and returns the step's loss on every pp rank.
  double finish() {
    for (const comm::WorkPtr& w : sends_) w->wait();
    if (!options_.forward_only) model_.finish_grads();
    return broadcast_loss(place_, loss_sum_, device_);
  }

 private:
  void post_recv(int i, const ActionPeers& peers) {
    const PipelineAction& a = actions_[i];
    Inbox& in = inbox_[i];
    in.tensor = Tensor::empty(model_.activation_shape(micro_batches_[a.micro_batch].dim(0),
                                                      micro_batches_[a.micro_batch].dim(1)),
                              DType::kF32, device_);
    in.work = place_.pp->recv_async(in.tensor, place_.rank_of(peers.from_stage),
                                    place_.tag(a, place_.stage(a.chunk)));
  }

  // Runs action i on its received input; returns what it sends (undefined at the pipeline's ends).
  Tensor run(int i) {
    const PipelineAction& a = actions_[i];
    std::unique_ptr<models::ChunkState>& state =
        states_[a.micro_batch * place_.shape.virtual_chunks + a.chunk];
    if (!a.is_forward()) {
      WEFT_CHECK(state != nullptr) << "backward before forward: " << action_str(a, true);
      Tensor dinput = model_.backward_chunk(a.chunk, *state, inbox_[i].tensor, options_.loss_scale,
                                            last_backward_[i]);
      state.reset();
      return dinput;
    }
    WEFT_CHECK(state == nullptr) << "second forward of " << action_str(a, true);
    state = model_.new_chunk_state();
    double chunk_loss = 0;
    Tensor output = model_.forward_chunk(a.chunk, micro_batches_[a.micro_batch], inbox_[i].tensor,
                                         *state, &chunk_loss);
    if (model_.is_last_stage(a.chunk)) loss_sum_ += chunk_loss;
    if (options_.forward_only) state.reset();
    return output;
  }

  models::CausalLM& model_;
  const parallel::Mesh* mesh_;
  const std::vector<Tensor>& micro_batches_;
  const PipelineStepOptions& options_;
  const Place& place_;
  const std::vector<PipelineAction>& actions_;
  const Device device_;
  const std::vector<bool> last_backward_;
  std::vector<Inbox> inbox_;    // per action: its received input or output gradient
  std::vector<Tensor> outbox_;  // per action: what it sends, until posted
  // Per (micro-batch, chunk): what the forward keeps for the backward.
  std::vector<std::unique_ptr<models::ChunkState>> states_;
  std::vector<comm::WorkPtr> sends_;
  double loss_sum_ = 0;  // on the last stage
};

}  // namespace

absl::StatusOr<PipelineStepResult> run_pipeline_step(models::CausalLM& model,
                                                     const parallel::Mesh* mesh,
                                                     const std::vector<Tensor>& micro_batches,
                                                     const PipelineStepOptions& options) {
  if (micro_batches.empty()) {
    return absl::InvalidArgumentError("a pipeline step needs at least one micro-batch");
  }
  absl::StatusOr<Place> place = place_of(model, mesh, micro_batches, options.forward_only);
  if (!place.ok()) return place.status();
  absl::StatusOr<P2PPlan> plan = pipeline_p2p_plan(place->shape, kReceiveWindow);
  if (!plan.ok()) return plan.status();
  StepRunner runner(model, mesh, micro_batches, options, *place, plan->actions);
  for (const P2POp& op : plan->ops) runner.apply(op);
  return PipelineStepResult{runner.finish()};
}

}  // namespace weft::train
