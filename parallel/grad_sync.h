// Gradient reduction over a data-parallel group.
//
// GradReducer overlaps the reduction with the backward (PyTorch DDP's buckets): the grads are
// packed into flat buckets in REVERSE parameter order, because the backward finishes the last
// layer's grads first; grad_ready(i) copies grad i into its bucket and, once the bucket has all
// its grads, issues the bucket's asynchronous collective while the backward goes on. Buckets are
// issued strictly in bucket order (every rank of the group must issue the same collectives in
// the same order), so a bucket whose grads are all ready waits for the buckets before it.
//
// Two modes:
//   all-reduce (plain data parallelism): after finish() every grad is summed over the group.
//   ZeRO-1 (shard_rows): each tensor's rows (dim 0) are partitioned over the group by
//     shard_rows() below; a bucket packs every rank's share contiguously, padded to the largest
//     share S: [P * S] = [rank 0's rows of each member | pad | rank 1's rows | pad | ...], so one
//     reduce_scatter per bucket leaves each rank the summed grads of ITS rows only; after
//     finish() rows outside own_rows(i) of grad i hold this rank's unreduced values. After the
//     optimizer updated its own rows of the parameters, all_gather_rows() sends them back into
//     every rank's full tensors, one asynchronous all-gather per bucket.
//
// Traffic per step (comm/communicator.h), with G the grads' bytes and S_b the padded share of
// bucket b in bytes: all-reduce 2(P-1)/P * G; ZeRO-1 reduce_scatter (P-1) * sum_b S_b and
// all_gather the same. With a one-rank group nothing is communicated.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "comm/communicator.h"
#include "runtime/core/tensor.h"

namespace weft::parallel {

// Sums `grads` (f32, same device) over `group` in place, after the backward. Tensors are packed
// into flat buckets of at most `bucket_bytes` (a tensor larger than that gets a bucket of its
// own) so many small tensors cost few calls; every bucket is issued asynchronously before the
// first is waited on. No communication when the group has one rank.
void all_reduce_grads(comm::Communicator& group, const std::vector<Tensor>& grads,
                      size_t bucket_bytes = size_t{25} << 20);

// Rows [begin, end) of dim 0.
struct RowRange {
  int64_t begin = 0;
  int64_t end = 0;
  [[nodiscard]] int64_t size() const { return end - begin; }
};

// The ZeRO partition of `rows` rows over `parts` ranks: as even as possible, the first
// rows % parts ranks take one row more (a rank may own none).
RowRange shard_rows(int64_t rows, int parts, int index);

struct GradReducerOptions {
  size_t bucket_bytes = size_t{25} << 20;  // a tensor larger than this gets its own bucket
  bool shard_rows = false;                 // ZeRO-1: reduce-scatter to each rank's rows
};

// When each bucket's collective was issued and first seen complete (by grad_ready, finish or
// bucket_done polling it), for tests and profiles of the overlap.
using Clock = std::chrono::steady_clock;
struct BucketTrace {
  bool issued = false;
  Clock::time_point issued_at;
  bool seen_done = false;
  Clock::time_point seen_done_at;
  bool issued_by_finish = false;  // not complete before finish(): finish() issued it
};

class GradReducer {
 public:
  // grads: the parameters' grads in parameter order (f32, one device, rank >= 1); they are
  // read and written in place, so they must stay the same tensors from step to step.
  GradReducer(comm::Communicator& group, std::vector<Tensor> grads, GradReducerOptions options);
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // Grad `index` is final for this step (call at most once per step).
  void grad_ready(size_t index);
  // Issues every bucket not yet issued (its grads as they are: a grad whose hook never fired,
  // e.g. an unused expert's zeros, is still reduced), waits for all and unpacks. Starts the next
  // step: traces are kept until the next grad_ready.
  void finish();

  // ZeRO-1 only, after finish(): for each bucket in order, calls update(i) for its members (the
  // optimizer writes its own rows of tensors[i]), then all-gathers every rank's rows of the
  // bucket's tensors asynchronously; returns once all are unpacked into every `tensors[i]`.
  // tensors: parallel to the grads, same shapes.
  void all_gather_rows(const std::vector<Tensor>& tensors,
                       const std::function<void(size_t index)>& update);

  // This rank's rows of tensor `index` (all rows without shard_rows).
  [[nodiscard]] RowRange own_rows(size_t index) const;
  [[nodiscard]] size_t num_buckets() const { return buckets_.size(); }
  // Tensor indices of bucket b, in packing order (descending).
  [[nodiscard]] std::vector<size_t> bucket_members(size_t b) const;
  [[nodiscard]] const BucketTrace& trace(size_t b) const { return buckets_[b].trace; }
  // Whether bucket b's collective has completed (polls; records seen_done_at).
  [[nodiscard]] bool bucket_done(size_t b);
  // A grad_ready came since the last finish(): the grads are not reduced yet.
  [[nodiscard]] bool pending() const { return step_open_; }
  [[nodiscard]] comm::Communicator& group() const { return group_; }
  [[nodiscard]] bool sharded() const { return options_.shard_rows; }

 private:
  struct Member {
    size_t index;
    int64_t row_numel;              // elements per dim-0 row
    std::vector<int64_t> share_at;  // per rank: element offset of its rows in that share
  };
  struct Bucket {
    std::vector<Member> members;
    int64_t share_numel = 0;  // S: padded elements per rank (ZeRO); all elements otherwise
    Tensor flat;              // [P * S] under ZeRO, [S] otherwise
    Tensor own;               // [S]: the reduce-scatter's output (ZeRO only)
    int ready = 0;            // members whose grads are packed this step
    comm::WorkPtr work;
    BucketTrace trace;
  };

  // Ranks that split the rows: the group under ZeRO, else one (every grad whole).
  [[nodiscard]] int parts() const { return options_.shard_rows ? group_.size() : 1; }
  [[nodiscard]] int me() const { return options_.shard_rows ? group_.rank() : 0; }
  void build_buckets();
  // Rank r's rows of member m's `tensor` to (or from) their place in r's [S] `share`.
  void copy_rows(const Member& m, int r, const Tensor& tensor, const Tensor& share,
                 bool to_share) const;
  [[nodiscard]] Tensor share_of(const Bucket& bucket, int r) const;  // [S] view of flat
  void pack(const Bucket& bucket, const Member& m, const Tensor& src) const;
  void open_step();  // the first call of a step clears the last step's traces
  void issue_ready_buckets();
  void issue(Bucket& bucket);
  void poll();

  comm::Communicator& group_;
  std::vector<Tensor> grads_;
  GradReducerOptions options_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // tensor index -> bucket
  std::vector<bool> packed_;       // tensor index -> packed this step
  std::vector<size_t> member_of_;  // tensor index -> position in its bucket
  size_t next_issue_ = 0;          // buckets [0, next_issue_) are issued this step
  bool step_open_ = false;         // a grad_ready came since the last finish()
};

}  // namespace weft::parallel
