#include "parallel/grad_sync.h"

#include <cstring>

namespace weft::parallel {
namespace {

struct Bucket {
  std::vector<Tensor> members;
  Tensor flat;  // [sum of member numels]
  comm::WorkPtr work;
};

// Groups consecutive tensors into buckets of at most `bucket_bytes`.
std::vector<Bucket> make_buckets(const std::vector<Tensor>& grads, size_t bucket_bytes) {
  std::vector<Bucket> buckets;
  size_t bytes = 0;
  for (const Tensor& g : grads) {
    if (buckets.empty() || bytes + g.nbytes() > bucket_bytes) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().members.push_back(g);
    bytes += g.nbytes();
  }
  return buckets;
}

}  // namespace

void all_reduce_grads(comm::Communicator& group, const std::vector<Tensor>& grads,
                      size_t bucket_bytes) {
  if (group.size() == 1 || grads.empty()) return;
  std::vector<Bucket> buckets = make_buckets(grads, bucket_bytes);
  for (Bucket& b : buckets) {
    int64_t numel = 0;
    for (const Tensor& g : b.members) numel += g.numel();
    const Device device = b.members.front().device();
    b.flat = Tensor::empty({numel}, DType::kF32, device);
    int64_t at = 0;
    for (const Tensor& g : b.members) {
      b.flat.slice(at, at + g.numel()).copy_from(g.view({-1}));
      at += g.numel();
    }
    b.work = group.all_reduce_async(b.flat, comm::ReduceOp::kSum);
  }
  for (Bucket& b : buckets) {
    b.work->wait();
    int64_t at = 0;
    for (const Tensor& g : b.members) {
      Tensor dst = g.view({-1});
      dst.copy_from(b.flat.slice(at, at + g.numel()));
      at += g.numel();
    }
  }
}

}  // namespace weft::parallel
