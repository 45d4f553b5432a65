#include "runtime/train/optimizer.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "runtime/core/check.h"

namespace weft::train {
namespace {

// torch.nn.utils.clip_grad_norm_: scale by clip / (norm + 1e-6) when the norm exceeds `clip`.
void clip_to(const std::vector<Tensor>& grads, double norm, double clip) {
  if (!(clip > 0 && norm > clip)) return;
  const float factor = static_cast<float>(clip / (norm + 1e-6));
  for (Tensor g : grads) kernels::scale_(g, factor);
}

// Whether this rank's copy of dense parameter `p` adds to the global norm (see
// AdamW::clip_grad_norm).
bool counts_once(const models::Param& p, const comm::Communicator* tp_group) {
  if (p.spec.replica > 0) return false;
  return p.spec.split_dim >= 0 || tp_group == nullptr || tp_group->rank() == 0;
}

bool several(const comm::Communicator* g) { return g != nullptr && g->size() > 1; }

}  // namespace

AdamW::AdamW(std::vector<models::Param*> params, kernels::AdamWConfig config,
             DataParallelOptions data_parallel)
    : params_(std::move(params)), config_(config), expert_dp_(data_parallel.expert_dp) {
  place_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    index_[params_[i]] = i;
    const bool expert = params_[i]->expert_parallel() && data_parallel.expert_dp != nullptr;
    Reduction& r = expert ? expert_ : dense_;
    place_[i] = {&r, r.members.size()};
    r.members.push_back(i);
  }
  for (auto [r, group] :
       {std::pair{&dense_, data_parallel.dp}, {&expert_, data_parallel.expert_dp}}) {
    if (!several(group) || r->members.empty()) continue;
    std::vector<Tensor> grads;
    for (size_t i : r->members) grads.push_back(params_[i]->grad);
    r->reducer = std::make_unique<parallel::GradReducer>(
        *group, std::move(grads),
        parallel::GradReducerOptions{.bucket_bytes = data_parallel.bucket_bytes,
                                     .shard_rows = data_parallel.zero1});
  }
  zero1_ = data_parallel.zero1 && (dense_.reducer != nullptr || expert_.reducer != nullptr);
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& value = params_[i]->value;
    Shape shape = value.shape();  // [own rows, ...]
    WEFT_CHECK(!shape.empty()) << "AdamW needs parameters of rank >= 1: " << params_[i]->name;
    shape[0] = own_rows(i).size();
    m_.push_back(Tensor::zeros(shape, DType::kF32, value.device()));
    v_.push_back(Tensor::zeros(shape, DType::kF32, value.device()));
  }
}

parallel::RowRange AdamW::own_rows(size_t i) const {
  const Place& at = place_[i];
  if (at.reduction->reducer) return at.reduction->reducer->own_rows(at.local);
  return {0, params_[i]->value.dim(0)};
}

void AdamW::grad_ready(models::Param& p) {
  auto found = index_.find(&p);
  WEFT_CHECK(found != index_.end()) << "grad_ready for " << p.name << ", not in the optimizer";
  const Place& at = place_[found->second];
  if (at.reduction->reducer) at.reduction->reducer->grad_ready(at.local);
}

void AdamW::finish_grads() {
  for (Reduction* r : {&dense_, &expert_}) {
    if (r->reducer) r->reducer->finish();
  }
}

double AdamW::local_grad_squares(const comm::Communicator* tp_group, bool experts) const {
  double sum = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    const models::Param& p = *params_[i];
    if ((place_[i].reduction == &expert_) != experts) continue;
    const parallel::RowRange rows = own_rows(i);
    // An expert counts on edp rank 0 (every rank its own rows under ZeRO-1).
    const bool counts = experts ? zero1_ || !several(expert_dp_) || expert_dp_->rank() == 0
                                : counts_once(p, tp_group);
    if (rows.size() == 0 || !counts) continue;
    sum += kernels::sum_squares(p.grad.slice(rows.begin, rows.end));
  }
  return sum;
}

double AdamW::clip_grad_norm(double clip, comm::Communicator* tp_group,
                             comm::Communicator* pp_group,
                             const std::vector<comm::Communicator*>& expert_groups) {
  // [dense, experts]: each summed over the groups whose ranks hold different parts of it.
  std::vector<std::vector<comm::Communicator*>> sum_over(2);
  sum_over[0] = {zero1_ && dense_.reducer ? &dense_.reducer->group() : nullptr, tp_group};
  sum_over[1] = {expert_dp_};
  sum_over[1].insert(sum_over[1].end(), expert_groups.begin(), expert_groups.end());
  double squares = 0;
  for (int experts = 0; experts < 2; ++experts) {
    double part = local_grad_squares(tp_group, experts == 1);
    std::erase_if(sum_over[experts], [](const comm::Communicator* g) { return !several(g); });
    if (experts == 1 && expert_.members.empty()) continue;
    if (!sum_over[experts].empty() && !params_.empty()) {
      Tensor sum =
          Tensor::from_floats({static_cast<float>(part)}, {1}).to(params_.front()->grad.device());
      for (comm::Communicator* group : sum_over[experts]) group->all_reduce(sum);
      part = sum.to_floats()[0];
    }
    squares += part;
  }
  if (several(pp_group) && !params_.empty()) {
    Tensor sum =
        Tensor::from_floats({static_cast<float>(squares)}, {1}).to(params_.front()->grad.device());
    pp_group->all_reduce(sum);
    squares = sum.to_floats()[0];
  }
  const double norm = std::sqrt(squares);
  std::vector<Tensor> own;
  for (size_t i = 0; i < params_.size(); ++i) {
    const parallel::RowRange rows = own_rows(i);
    if (rows.size() > 0) own.push_back(params_[i]->grad.slice(rows.begin, rows.end));
  }
  clip_to(own, norm, clip);
  return norm;
}

void AdamW::update(size_t i, int64_t step) {
  const parallel::RowRange rows = own_rows(i);
  if (rows.size() == 0) return;
  models::Param& p = *params_[i];
  kernels::AdamWConfig cfg = config_;
  if (!p.decays()) cfg.weight_decay = 0.0f;
  Tensor value = p.value.slice(rows.begin, rows.end);  // [own rows, ...]
  const Tensor grad = p.grad.slice(rows.begin, rows.end);
  kernels::adamw_step(value, grad, m_[i], v_[i], cfg, step);
}

void AdamW::step(int64_t step) {
  for (Reduction* r : {&dense_, &expert_}) {
    WEFT_CHECK(!r->reducer || !r->reducer->pending())
        << "AdamW::step before finish_grads(): the gradient reduction is still in flight";
  }
  for (Reduction* r : {&dense_, &expert_}) {
    if (zero1_ && r->reducer) {
      std::vector<Tensor> values;
      for (size_t i : r->members) values.push_back(params_[i]->value);
      r->reducer->all_gather_rows(values, [&](size_t local) { update(r->members[local], step); });
    } else {
      for (size_t i : r->members) update(i, step);
    }
  }
}

std::vector<OptimizerStateTensor> AdamW::state_of(size_t i) const {
  const parallel::RowRange rows = own_rows(i);
  if (rows.size() == 0) return {};
  const models::Param& p = *params_[i];
  const Shape global_shape = p.spec.global_shape.empty() ? p.value.shape() : p.spec.global_shape;
  std::vector<int64_t> offsets(global_shape.size(), 0);
  if (p.spec.split_dim >= 0) offsets[p.spec.split_dim] += p.spec.offset;
  offsets[0] += rows.begin;
  return {{p.name + ".exp_avg", m_[i], global_shape, offsets},
          {p.name + ".exp_avg_sq", v_[i], global_shape, offsets}};
}

std::vector<OptimizerStateTensor> AdamW::state_tensors() const {
  std::vector<OptimizerStateTensor> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (params_[i]->spec.replica > 0) continue;
    for (OptimizerStateTensor& t : state_of(i)) out.push_back(std::move(t));
  }
  return out;
}

absl::Status AdamW::load_state(const ReadSlice& read_slice) {
  for (size_t i = 0; i < params_.size(); ++i) {
    for (OptimizerStateTensor& t : state_of(i)) {
      absl::StatusOr<Tensor> read = read_slice(t.name, t.offsets, t.value.shape());
      if (!read.ok()) return read.status();
      if (read->shape() != t.value.shape()) {
        return absl::InvalidArgumentError(
            absl::StrCat("optimizer state '", t.name, "': read shape ", shape_str(read->shape()),
                         ", this rank holds ", shape_str(t.value.shape())));
      }
      t.value.copy_from(*read);
    }
  }
  return absl::OkStatus();
}

double clip_grad_norm(const std::vector<models::Param*>& params, double clip) {
  double sum = 0;
  std::vector<Tensor> grads;
  for (const models::Param* p : params) {
    sum += kernels::sum_squares(p->grad);
    grads.push_back(p->grad);
  }
  const double norm = std::sqrt(sum);
  clip_to(grads, norm, clip);
  return norm;
}

}  // namespace weft::train
