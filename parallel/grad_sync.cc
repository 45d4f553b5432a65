#include "parallel/grad_sync.h"

#include <algorithm>

#include "runtime/core/check.h"

namespace weft::parallel {
namespace {

// Rows `rows` of `t` as one flat [rows.size() * row_numel] view.
Tensor flat_rows(const Tensor& t, RowRange rows, int64_t row_numel) {
  return t.slice(rows.begin, rows.end).view({rows.size() * row_numel});
}

}  // namespace

void all_reduce_grads(comm::Communicator& group, const std::vector<Tensor>& grads,
                      size_t bucket_bytes) {
  GradReducer reducer(group, grads, {.bucket_bytes = bucket_bytes, .shard_rows = false});
  reducer.finish();
}

RowRange shard_rows(int64_t rows, int parts, int index) {
  WEFT_CHECK(parts >= 1 && index >= 0 && index < parts)
      << "shard " << index << " of " << parts << " parts";
  const int64_t base = rows / parts;
  const int64_t extra = rows % parts;
  const int64_t begin = index * base + std::min<int64_t>(index, extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

GradReducer::GradReducer(comm::Communicator& group, std::vector<Tensor> grads,
                         GradReducerOptions options)
    : group_(group), grads_(std::move(grads)), options_(options) {
  for (const Tensor& g : grads_) {
    WEFT_CHECK(g.defined() && g.dtype() == DType::kF32 && g.ndim() >= 1)
        << "GradReducer needs f32 grads of rank >= 1, got "
        << (g.defined() ? g.str() : "an undefined tensor");
    WEFT_CHECK(g.device() == grads_.front().device()) << "grads on different devices";
  }
  packed_.assign(grads_.size(), false);
  if (group_.size() > 1) build_buckets();
}

void GradReducer::build_buckets() {
  bucket_of_.assign(grads_.size(), 0);
  member_of_.assign(grads_.size(), 0);
  size_t bytes = 0;
  for (size_t i = grads_.size(); i-- > 0;) {
    const Tensor& g = grads_[i];
    if (buckets_.empty() || bytes + g.nbytes() > options_.bucket_bytes) {
      buckets_.emplace_back();
      bytes = 0;
    }
    bytes += g.nbytes();
    Bucket& b = buckets_.back();
    bucket_of_[i] = buckets_.size() - 1;
    member_of_[i] = b.members.size();
    b.members.push_back({i, g.numel() / std::max<int64_t>(g.dim(0), 1), {}});
  }
  const Device device = grads_.empty() ? Device::cpu() : grads_.front().device();
  for (Bucket& b : buckets_) {
    // Each rank's share lists its rows of every member back to back; S is the largest share.
    std::vector<int64_t> share(parts(), 0);
    for (Member& m : b.members) {
      for (int r = 0; r < parts(); ++r) {
        m.share_at.push_back(share[r]);
        share[r] += shard_rows(grads_[m.index].dim(0), parts(), r).size() * m.row_numel;
      }
    }
    b.share_numel = *std::max_element(share.begin(), share.end());
    b.flat = Tensor::zeros({parts() * b.share_numel}, DType::kF32, device);  // [P * S] or [S]
    if (options_.shard_rows) b.own = Tensor::zeros({b.share_numel}, DType::kF32, device);
  }
}

RowRange GradReducer::own_rows(size_t index) const {
  return shard_rows(grads_[index].dim(0), parts(), me());
}

std::vector<size_t> GradReducer::bucket_members(size_t b) const {
  std::vector<size_t> indices;
  for (const Member& m : buckets_[b].members) indices.push_back(m.index);
  return indices;
}

void GradReducer::copy_rows(const Member& m, int r, const Tensor& tensor, const Tensor& share,
                            bool to_share) const {
  const RowRange rows = shard_rows(tensor.dim(0), parts(), r);
  const int64_t n = rows.size() * m.row_numel;
  if (n == 0) return;
  Tensor place = share.slice(m.share_at[r], m.share_at[r] + n);
  Tensor part = flat_rows(tensor, rows, m.row_numel);
  if (to_share) {
    place.copy_from(part);
  } else {
    part.copy_from(place);
  }
}

Tensor GradReducer::share_of(const Bucket& bucket, int r) const {
  return bucket.flat.slice(r * bucket.share_numel, (r + 1) * bucket.share_numel);
}

void GradReducer::pack(const Bucket& bucket, const Member& m, const Tensor& src) const {
  for (int r = 0; r < parts(); ++r) copy_rows(m, r, src, share_of(bucket, r), true);
}

void GradReducer::poll() {
  for (size_t b = 0; b < next_issue_; ++b) (void)bucket_done(b);
}

bool GradReducer::bucket_done(size_t b) {
  Bucket& bucket = buckets_[b];
  if (!bucket.trace.issued) return false;
  if (!bucket.trace.seen_done && bucket.work->done()) {
    bucket.trace.seen_done = true;
    bucket.trace.seen_done_at = Clock::now();
  }
  return bucket.trace.seen_done;
}

void GradReducer::issue(Bucket& bucket) {
  bucket.trace.issued = true;
  bucket.trace.issued_at = Clock::now();
  if (options_.shard_rows) {
    bucket.work = group_.reduce_scatter_async(bucket.flat, bucket.own, comm::ReduceOp::kSum);
  } else {
    bucket.work = group_.all_reduce_async(bucket.flat, comm::ReduceOp::kSum);
  }
}

void GradReducer::issue_ready_buckets() {
  while (next_issue_ < buckets_.size() &&
         buckets_[next_issue_].ready == static_cast<int>(buckets_[next_issue_].members.size())) {
    issue(buckets_[next_issue_++]);
  }
}

void GradReducer::open_step() {
  if (step_open_) return;
  for (Bucket& b : buckets_) b.trace = {};
  step_open_ = true;
}

void GradReducer::grad_ready(size_t index) {
  WEFT_CHECK_LT(index, grads_.size()) << "grad_ready for an unknown tensor";
  if (buckets_.empty()) return;
  open_step();
  poll();
  WEFT_CHECK(!packed_[index]) << "grad " << index << " reported ready twice in one step";
  packed_[index] = true;
  Bucket& bucket = buckets_[bucket_of_[index]];
  pack(bucket, bucket.members[member_of_[index]], grads_[index]);
  ++bucket.ready;
  issue_ready_buckets();
}

void GradReducer::finish() {
  if (buckets_.empty()) return;
  open_step();
  for (size_t b = next_issue_; b < buckets_.size(); ++b) {
    Bucket& bucket = buckets_[b];
    for (const Member& m : bucket.members) {
      if (!packed_[m.index]) pack(bucket, m, grads_[m.index]);
    }
    bucket.ready = static_cast<int>(bucket.members.size());
    bucket.trace.issued_by_finish = true;
  }
  issue_ready_buckets();
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bucket = buckets_[b];
    bucket.work->wait();
    (void)bucket_done(b);
    const Tensor reduced = options_.shard_rows ? bucket.own : bucket.flat;  // [S]
    for (const Member& m : bucket.members) copy_rows(m, me(), grads_[m.index], reduced, false);
    bucket.work.reset();
    bucket.ready = 0;
  }
  packed_.assign(grads_.size(), false);
  next_issue_ = 0;
  step_open_ = false;
}

void GradReducer::all_gather_rows(const std::vector<Tensor>& tensors,
                                  const std::function<void(size_t index)>& update) {
  WEFT_CHECK_EQ(tensors.size(), grads_.size()) << "all_gather_rows needs one tensor per grad";
  if (buckets_.empty()) {
    for (size_t i = 0; i < tensors.size(); ++i) update(i);
    return;
  }
  WEFT_CHECK(options_.shard_rows) << "all_gather_rows needs a reducer built with shard_rows";
  std::vector<comm::WorkPtr> works;
  for (Bucket& bucket : buckets_) {
    const Tensor mine = share_of(bucket, me());
    for (const Member& m : bucket.members) {
      update(m.index);
      copy_rows(m, me(), tensors[m.index], mine, true);
    }
    works.push_back(group_.all_gather_async(mine, bucket.flat));  // in place: [P * S]
  }
  for (size_t b = 0; b < buckets_.size(); ++b) {
    works[b]->wait();
    const Bucket& bucket = buckets_[b];
    for (const Member& m : bucket.members) {
      for (int r = 0; r < parts(); ++r) {
        if (r != me()) copy_rows(m, r, tensors[m.index], share_of(bucket, r), false);
      }
    }
  }
}

}  // namespace weft::parallel
