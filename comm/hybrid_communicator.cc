#include "comm/hybrid_communicator.h"

#include <utility>
#include <vector>

#include "comm/mpi_communicator.h"
#ifdef WEFT_HAVE_CUDA
#include "comm/nccl/nccl_communicator.h"
#endif

namespace weft::comm {
namespace {

class HybridCommunicator final : public Communicator {
 public:
  HybridCommunicator(std::unique_ptr<Communicator> host, std::unique_ptr<Communicator> device)
      : host_(std::move(host)), device_(std::move(device)) {
    WEFT_CHECK(host_->size() == device_->size() && host_->rank() == device_->rank())
        << "hybrid communicator '" << host_->name() << "': the backends span different ranks";
  }

  [[nodiscard]] int rank() const override { return host_->rank(); }
  [[nodiscard]] int size() const override { return host_->size(); }
  [[nodiscard]] const std::string& name() const override { return host_->name(); }

  WorkPtr all_reduce_async(Tensor& t, ReduceOp op) override {
    return of(t).all_reduce_async(t, op);
  }
  WorkPtr all_gather_async(const Tensor& in, Tensor& out) override {
    return of(in).all_gather_async(in, out);
  }
  WorkPtr reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) override {
    return of(in).reduce_scatter_async(in, out, op);
  }
  WorkPtr all_to_all_async(const Tensor& in, Tensor& out) override {
    return of(in).all_to_all_async(in, out);
  }
  WorkPtr all_to_all_v_async(const Tensor& in, const std::vector<int64_t>& send_rows, Tensor& out,
                             const std::vector<int64_t>& recv_rows) override {
    return of(in).all_to_all_v_async(in, send_rows, out, recv_rows);
  }
  WorkPtr send_async(const Tensor& t, int dst, int tag) override {
    return of(t).send_async(t, dst, tag);
  }
  WorkPtr recv_async(Tensor& t, int src, int tag) override { return of(t).recv_async(t, src, tag); }
  WorkPtr broadcast_async(Tensor& t, int root) override { return of(t).broadcast_async(t, root); }
  // The device's barrier also orders the GPU's streams; NCCL's blocks the host as well.
  WorkPtr barrier_async() override { return device_->barrier_async(); }
  WorkPtr all_scan_async(const Tensor& local, const Tensor& decay, Tensor& s_in, int blocks,
                         bool reverse) override {
    return of(local).all_scan_async(local, decay, s_in, blocks, reverse);
  }

  [[nodiscard]] std::unique_ptr<Communicator> split(int color, int key, std::string name) override {
    std::unique_ptr<Communicator> host = host_->split(color, key, name);
    return std::make_unique<HybridCommunicator>(std::move(host),
                                                device_->split(color, key, std::move(name)));
  }
  [[nodiscard]] std::unique_ptr<Communicator> split_within(int color, int key,
                                                           std::string name) override {
    std::unique_ptr<Communicator> host = host_->split_within(color, key, name);
    return std::make_unique<HybridCommunicator>(std::move(host),
                                                device_->split_within(color, key, std::move(name)));
  }

  [[nodiscard]] std::map<std::string, CallStats> stats() const override {
    std::map<std::string, CallStats> sum = host_->stats();
    for (const auto& [kind, s] : device_->stats()) {
      sum[kind].calls += s.calls;
      sum[kind].bytes_sent += s.bytes_sent;
    }
    return sum;
  }
  void reset_stats() override {
    host_->reset_stats();
    device_->reset_stats();
  }

 private:
  Communicator& of(const Tensor& t) { return t.device().is_cuda() ? *device_ : *host_; }

  std::unique_ptr<Communicator> host_;
  std::unique_ptr<Communicator> device_;
};

}  // namespace

std::unique_ptr<Communicator> make_hybrid_communicator(std::unique_ptr<Communicator> host,
                                                       std::unique_ptr<Communicator> device) {
  return std::make_unique<HybridCommunicator>(std::move(host), std::move(device));
}

std::unique_ptr<Communicator> device_communicator(Communicator& host, Device device) {
  if (!device.is_cuda()) return nullptr;
#ifdef WEFT_HAVE_CUDA
  // A copy of the group (same ranks, same order), whose MPI communicator bootstraps NCCL: rank 0
  // makes the unique id and broadcasts it over MPI.
  std::unique_ptr<Communicator> copy = host.split(0, host.rank(), host.name());
  auto* mpi = dynamic_cast<MpiCommunicator*>(copy.get());
  WEFT_CHECK(mpi != nullptr) << "communicator '" << host.name() << "' is not an MPI one";
  mpi->barrier();  // the comm thread is idle: NCCL's bootstrap may use the MPI communicator
  std::unique_ptr<Communicator> nccl =
      make_nccl_communicator(mpi->mpi_comm(), device.index, host.name());
  return make_hybrid_communicator(std::move(copy), std::move(nccl));
#else
  WEFT_CHECK(false) << "this weft build has no CUDA support";
  return nullptr;
#endif
}

}  // namespace weft::comm
