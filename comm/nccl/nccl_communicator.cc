#include "comm/nccl/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/activity.h"
#include "comm/all_scan.h"
#include "comm/mpi_check.h"
#include "comm/mpi_communicator.h"
#include "comm/nccl/nccl_check.h"
#include "comm/traffic.h"
#include "kernels/cuda/stream.h"
#include "kernels/ops.h"
#include "runtime/core/cuda_check.h"

namespace weft::comm {
namespace {

using kernels::cuda::compute_stream;

// Makes `device` current for the scope and restores the previous device after.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    WEFT_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) WEFT_CUDA_CHECK(cudaSetDevice(device));
    device_ = device;
  }
  ~DeviceScope() {
    if (previous_ != device_) cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
  int device_ = 0;
};

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    case DType::kI32:
      return ncclInt32;
    case DType::kI64:
      return ncclInt64;
    case DType::kU8:
      return ncclUint8;
  }
  return ncclUint8;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kMax:
      return ncclMax;
  }
  return ncclSum;
}

void check_cuda_tensor(const Tensor& t, int device, const char* op) {
  WEFT_CHECK(t.defined() && t.device() == Device::cuda(device))
      << op << " on the NCCL backend needs a tensor on cuda:" << device << ", got "
      << (t.defined() ? t.str() : "an undefined tensor");
}

// Same dtype, rank >= 1 and the same shape after dim 0.
void check_rows_match(const Tensor& in, const Tensor& out, const char* op) {
  bool same = in.dtype() == out.dtype() && in.ndim() >= 1 && in.ndim() == out.ndim();
  for (int i = 1; same && i < in.ndim(); ++i) same = in.dim(i) == out.dim(i);
  WEFT_CHECK(same) << op << ": in " << in.str() << " and out " << out.str()
                   << " need the same dtype and the same shape after dim 0";
}

// Bytes of one dim-0 row (defined for 0 rows too).
int64_t row_bytes(const Tensor& t) {
  int64_t n = static_cast<int64_t>(dtype_size(t.dtype()));
  for (int i = 1; i < t.ndim(); ++i) n *= t.dim(i);
  return n;
}

// Byte offsets of each rank's rows, checked against the tensor's row count.
std::vector<int64_t> row_offsets(const std::vector<int64_t>& rows, int p, int64_t total,
                                 const char* what) {
  WEFT_CHECK_EQ(static_cast<int64_t>(rows.size()), p) << what << " needs one entry per rank";
  std::vector<int64_t> offsets;
  int64_t offset = 0;
  for (int64_t r : rows) {
    WEFT_CHECK(r >= 0) << what << " has a negative count " << r;
    offsets.push_back(offset);
    offset += r;
  }
  WEFT_CHECK_EQ(offset, total) << what << " must sum to the tensor's rows";
  return offsets;
}

char* bytes_at(const Tensor& t, int64_t offset) { return static_cast<char*>(t.raw()) + offset; }

// A CUDA event shared by a Work and the communicator's progress tracking.
struct SharedEvent {
  cudaEvent_t event = nullptr;
  ~SharedEvent() { cudaEventDestroy(event); }
};

// An event recorded on the comm stream after one call (see nccl_communicator.h for wait()).
class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<SharedEvent> event, int device, bool blocks_host,
           std::vector<Tensor> buffers)
      : event_(std::move(event)),
        device_(device),
        blocks_host_(blocks_host),
        buffers_(std::move(buffers)) {}
  NcclWork(const NcclWork&) = delete;
  NcclWork& operator=(const NcclWork&) = delete;

  void wait() override {
    const DeviceScope scope(device_);
    WEFT_CUDA_CHECK(cudaStreamWaitEvent(compute_stream(), event_->event, 0));
    if (blocks_host_) WEFT_CUDA_CHECK(cudaEventSynchronize(event_->event));
  }

  [[nodiscard]] bool done() override {
    const cudaError_t status = cudaEventQuery(event_->event);
    if (status == cudaErrorNotReady) return false;
    WEFT_CUDA_CHECK(status);
    return true;
  }

 private:
  std::shared_ptr<SharedEvent> event_;
  int device_;
  bool blocks_host_;
  std::vector<Tensor> buffers_;  // kept alive until the Work goes
};

class NcclCommunicator final : public Communicator {
 public:
  // Takes ownership of `mpi_comm` (freed on destruction, if MPI is still running).
  // counters_parent: see Communicator::split_within (null: counted here only).
  NcclCommunicator(MPI_Comm mpi_comm, int device, std::string name,
                   std::shared_ptr<TrafficCounters> counters_parent = nullptr)
      : mpi_comm_(mpi_comm),
        device_(device),
        name_(std::move(name)),
        counters_(std::make_shared<TrafficCounters>(std::move(counters_parent))) {
    WEFT_MPI_CHECK(MPI_Comm_set_errhandler(mpi_comm_, MPI_ERRORS_RETURN));
    WEFT_MPI_CHECK(MPI_Comm_rank(mpi_comm_, &rank_));
    WEFT_MPI_CHECK(MPI_Comm_size(mpi_comm_, &size_));
    ncclUniqueId id;
    if (rank_ == 0) WEFT_NCCL_CHECK(ncclGetUniqueId(&id));
    WEFT_MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, mpi_comm_));
    const DeviceScope scope(device_);
    WEFT_NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_));
    WEFT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    WEFT_CUDA_CHECK(cudaEventCreateWithFlags(&inputs_ready_, cudaEventDisableTiming));
    WEFT_CUDA_CHECK(cudaEventCreateWithFlags(&piece_ready_, cudaEventDisableTiming));
    WEFT_CUDA_CHECK(cudaEventCreateWithFlags(&piece_combined_, cudaEventDisableTiming));
    barrier_buffer_ = Tensor::zeros({1}, DType::kI32, Device::cuda(device_));
    world_ranks_ = world_ranks_of(mpi_comm_);
    members_ = format_ranks(world_ranks_);
    poller_ = add_poller([this] { return poll(); });
  }

  ~NcclCommunicator() override {
    remove_poller(poller_);
    for (auto& [event, token] : tracked_) Activity::get().end(token);
    {
      const DeviceScope scope(device_);
      cudaStreamSynchronize(stream_);
      ncclCommDestroy(comm_);
      cudaEventDestroy(inputs_ready_);
      cudaEventDestroy(piece_ready_);
      cudaEventDestroy(piece_combined_);
      cudaStreamDestroy(stream_);
    }
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&mpi_comm_);
  }

  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  [[nodiscard]] int rank() const override { return rank_; }
  [[nodiscard]] ncclComm_t handle() const { return comm_; }
  [[nodiscard]] int size() const override { return size_; }
  [[nodiscard]] const std::string& name() const override { return name_; }

  WorkPtr all_reduce_async(Tensor& t, ReduceOp op) override {
    check_cuda_tensor(t, device_, "all_reduce");
    return issue("all_reduce", static_cast<int64_t>(t.nbytes()), {t}, [&](cudaStream_t s) {
      WEFT_NCCL_CHECK(
          ncclAllReduce(t.raw(), t.raw(), t.numel(), nccl_type(t.dtype()), nccl_op(op), comm_, s));
    });
  }

  // In place when `in` is this rank's slot of `out` (NCCL supports that layout).
  WorkPtr all_gather_async(const Tensor& in, Tensor& out) override {
    check_cuda_tensor(in, device_, "all_gather");
    check_cuda_tensor(out, device_, "all_gather");
    check_rows_match(in, out, "all_gather");
    WEFT_CHECK_EQ(out.dim(0), size_ * in.dim(0)) << "all_gather: out " << out.str() << " needs "
                                                 << size_ << " x the rows of in " << in.str();
    return issue("all_gather", static_cast<int64_t>(out.nbytes()), {in, out}, [&](cudaStream_t s) {
      WEFT_NCCL_CHECK(
          ncclAllGather(in.raw(), out.raw(), in.numel(), nccl_type(in.dtype()), comm_, s));
    });
  }

  WorkPtr reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) override {
    check_cuda_tensor(in, device_, "reduce_scatter");
    check_cuda_tensor(out, device_, "reduce_scatter");
    check_rows_match(in, out, "reduce_scatter");
    WEFT_CHECK_EQ(in.dim(0), size_ * out.dim(0)) << "reduce_scatter: in " << in.str() << " needs "
                                                 << size_ << " x the rows of out " << out.str();
    return issue("reduce_scatter", static_cast<int64_t>(in.nbytes()), {in, out},
                 [&](cudaStream_t s) {
                   WEFT_NCCL_CHECK(ncclReduceScatter(in.raw(), out.raw(), out.numel(),
                                                     nccl_type(in.dtype()), nccl_op(op), comm_, s));
                 });
  }

  WorkPtr all_to_all_async(const Tensor& in, Tensor& out) override {
    check_cuda_tensor(in, device_, "all_to_all");
    check_cuda_tensor(out, device_, "all_to_all");
    check_rows_match(in, out, "all_to_all");
    WEFT_CHECK(in.dim(0) == out.dim(0) && in.dim(0) % size_ == 0)
        << "all_to_all: in " << in.str() << " and out " << out.str()
        << " need the same rows, a multiple of " << size_;
    const std::vector<int64_t> rows(size_, in.dim(0) / size_);
    return issue("all_to_all", static_cast<int64_t>(in.nbytes()), {in, out},
                 [&](cudaStream_t s) { exchange_rows(in, rows, out, rows, s); });
  }

  WorkPtr all_to_all_v_async(const Tensor& in, const std::vector<int64_t>& send_rows, Tensor& out,
                             const std::vector<int64_t>& recv_rows) override {
    check_cuda_tensor(in, device_, "all_to_all_v");
    check_cuda_tensor(out, device_, "all_to_all_v");
    check_rows_match(in, out, "all_to_all_v");
    row_offsets(send_rows, size_, in.dim(0), "all_to_all_v send_rows");
    row_offsets(recv_rows, size_, out.dim(0), "all_to_all_v recv_rows");
    int64_t sent = 0;
    for (int j = 0; j < size_; ++j) {
      if (j != rank_) sent += send_rows[j] * row_bytes(in);
    }
    return issue("all_to_all_v", sent, {in, out},
                 [&](cudaStream_t s) { exchange_rows(in, send_rows, out, recv_rows, s); });
  }

  WorkPtr send_async(const Tensor& t, int dst, int /*tag*/) override {
    check_cuda_tensor(t, device_, "send");
    check_peer(dst, "send");
    return issue(
        "send", static_cast<int64_t>(t.nbytes()), {t},
        [&](cudaStream_t s) {
          WEFT_NCCL_CHECK(ncclSend(t.raw(), t.nbytes(), ncclUint8, dst, comm_, s));
        },
        false, dst);
  }

  WorkPtr recv_async(Tensor& t, int src, int /*tag*/) override {
    check_cuda_tensor(t, device_, "recv");
    check_peer(src, "recv");
    return issue(
        "recv", static_cast<int64_t>(t.nbytes()), {t},
        [&](cudaStream_t s) {
          WEFT_NCCL_CHECK(ncclRecv(t.raw(), t.nbytes(), ncclUint8, src, comm_, s));
        },
        false, src);
  }

  WorkPtr broadcast_async(Tensor& t, int root) override {
    check_cuda_tensor(t, device_, "broadcast");
    WEFT_CHECK(root >= 0 && root < size_) << "broadcast root " << root << " of " << size_;
    return issue("broadcast", static_cast<int64_t>(t.nbytes()), {t}, [&](cudaStream_t s) {
      WEFT_NCCL_CHECK(
          ncclBroadcast(t.raw(), t.raw(), t.numel(), nccl_type(t.dtype()), root, comm_, s));
    });
  }

  // NCCL has no barrier: an all-reduce of one int stands in, and its Work blocks the host.
  WorkPtr barrier_async() override {
    return issue(
        "barrier", 0, {},
        [&](cudaStream_t s) {
          WEFT_NCCL_CHECK(ncclAllReduce(barrier_buffer_.raw(), barrier_buffer_.raw(), 1, ncclInt32,
                                        ncclSum, comm_, s));
        },
        /*blocks_host=*/true);
  }

  // Per piece k on the comm stream: receive S_in's piece (except on the first rank of the
  // direction), copy it into S_out's, and send that on once combined. The combine
  // (kernels::mul_add_) runs on the compute stream, ordered against the comm stream by two
  // events. Sending piece k and receiving piece k + 1 form one NCCL group, so they overlap.
  WorkPtr all_scan_async(const Tensor& local, const Tensor& decay, Tensor& s_in, int blocks,
                         bool reverse) override {
    check_cuda_tensor(local, device_, "all_scan");
    const ScanPlan plan = plan_all_scan(local, decay, s_in, rank_, size_, blocks, reverse,
                                        std::numeric_limits<int64_t>::max());
    // [s_in's shape] f32: S_out, on the ranks that send
    const Tensor out =
        plan.next >= 0 ? Tensor::empty(s_in.shape(), DType::kF32, s_in.device()) : Tensor();
    return issue("all_scan", plan.bytes_sent, {local, decay, s_in, out}, [&](cudaStream_t s) {
      const std::vector<ScanPiece>& pieces = plan.pieces;
      if (plan.prev >= 0) receive_piece(piece_of(s_in, pieces[0]), plan.prev, s);
      for (size_t k = 0; k < pieces.size(); ++k) {
        Tensor out_piece;
        if (plan.next >= 0) {
          out_piece = piece_of(out, pieces[k]);
          combine_piece(out_piece, piece_of(s_in, pieces[k]), piece_of(decay, pieces[k]),
                        piece_of(local, pieces[k]), s);
        }
        WEFT_NCCL_CHECK(ncclGroupStart());
        if (plan.next >= 0) {
          WEFT_NCCL_CHECK(
              ncclSend(out_piece.raw(), out_piece.numel(), ncclFloat32, plan.next, comm_, s));
        }
        if (plan.prev >= 0 && k + 1 < pieces.size()) {
          receive_piece(piece_of(s_in, pieces[k + 1]), plan.prev, s);
        }
        WEFT_NCCL_CHECK(ncclGroupEnd());
      }
    });
  }

  [[nodiscard]] std::unique_ptr<Communicator> split(int color, int key, std::string name) override {
    return std::make_unique<NcclCommunicator>(split_comm(color, key), device_, std::move(name));
  }
  [[nodiscard]] std::unique_ptr<Communicator> split_within(int color, int key,
                                                           std::string name) override {
    return std::make_unique<NcclCommunicator>(split_comm(color, key), device_, std::move(name),
                                              counters_);
  }

  [[nodiscard]] std::map<std::string, CallStats> stats() const override {
    return counters_->snapshot();
  }
  void reset_stats() override { counters_->reset(); }

 private:
  MPI_Comm split_comm(int color, int key) {
    const std::lock_guard<std::mutex> lock(mutex_);
    MPI_Comm sub = MPI_COMM_NULL;
    WEFT_MPI_CHECK(MPI_Comm_split(mpi_comm_, color, key, &sub));
    return sub;
  }

  // Issues one call on the comm stream after the compute stream's pending work, counts it, and
  // returns a Work on its completion. `buffers` stay alive as long as the Work.
  // `peer`: point-to-point calls' other side (this group's rank), for the Activity record.
  WorkPtr issue(const char* kind, int64_t bytes, std::vector<Tensor> buffers,
                const std::function<void(cudaStream_t)>& call, bool blocks_host = false,
                int peer = -1) {
    const std::lock_guard<std::mutex> lock(mutex_);
    const DeviceScope scope(device_);
    WEFT_CUDA_CHECK(cudaEventRecord(inputs_ready_, compute_stream()));
    WEFT_CUDA_CHECK(cudaStreamWaitEvent(stream_, inputs_ready_, 0));
    call(stream_);
    auto finished = std::make_shared<SharedEvent>();
    WEFT_CUDA_CHECK(cudaEventCreateWithFlags(&finished->event, cudaEventDisableTiming));
    WEFT_CUDA_CHECK(cudaEventRecord(finished->event, stream_));
    counters_->record(kind, bytes, size_);
    track(kind, peer, finished);
    return std::make_shared<NcclWork>(finished, device_, blocks_host, std::move(buffers));
  }

  // The call is in progress (comm/activity.h) from its issue until the device has finished it,
  // which poll() sees: the stream runs calls in order, so the oldest unfinished is the front.
  void track(const char* kind, int peer, std::shared_ptr<SharedEvent> event) {
    OpRecord r;
    r.kind = kind;
    r.comm = name_;
    r.members = members_;
    if (peer >= 0) {
      r.peer = world_ranks_.at(peer);
    } else {
      r.seq = ++collectives_issued_;
    }
    const std::lock_guard<std::mutex> lock(track_mu_);
    end_finished();  // also without a monitor polling, the list holds only unfinished calls
    tracked_.emplace_back(std::move(event), Activity::get().begin(std::move(r)));
  }

  // Ends the records of the calls the device has finished (in stream order); "" or the CUDA
  // error a call's event reports (a sticky error is not a hang). Under track_mu_.
  std::string end_finished() {
    while (!tracked_.empty()) {
      const cudaError_t status = cudaEventQuery(tracked_.front().first->event);
      if (status == cudaErrorNotReady) break;
      if (status != cudaSuccess) {
        return absl::StrCat("CUDA error on NCCL communicator '", name_, "' (ranks ", members_,
                            "): ", cudaGetErrorString(status));
      }
      Activity::get().end(tracked_.front().second);
      tracked_.pop_front();
    }
    return "";
  }

  // The health monitor's poller: ends the records of finished calls, and reports NCCL's
  // asynchronous error (a peer lost, a network failure) as a message that ends the job.
  std::string poll() {
    const DeviceScope scope(device_);  // the monitor's thread: no context on another device
    {
      const std::lock_guard<std::mutex> lock(track_mu_);
      if (std::string error = end_finished(); !error.empty()) return error;
    }
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess &&
        async != ncclInProgress) {
      return absl::StrCat("NCCL communicator '", name_, "' (ranks ", members_,
                          ") reports an asynchronous error: ", ncclGetErrorString(async));
    }
    return "";
  }

  // Rows [send offset of j, + send_rows[j]) of `in` go to rank j; recv_rows[i] rows of `out`
  // come from rank i. This rank's own rows are a device copy; the rest one NCCL group.
  void exchange_rows(const Tensor& in, const std::vector<int64_t>& send_rows, const Tensor& out,
                     const std::vector<int64_t>& recv_rows, cudaStream_t s) {
    const int64_t row = row_bytes(in);
    const std::vector<int64_t> send_at = row_offsets(send_rows, size_, in.dim(0), "send_rows");
    const std::vector<int64_t> recv_at = row_offsets(recv_rows, size_, out.dim(0), "recv_rows");
    WEFT_CHECK_EQ(send_rows[rank_], recv_rows[rank_]) << "rows a rank sends itself";
    if (send_rows[rank_] > 0) {
      WEFT_CUDA_CHECK(cudaMemcpyAsync(bytes_at(out, recv_at[rank_] * row),
                                      bytes_at(in, send_at[rank_] * row), send_rows[rank_] * row,
                                      cudaMemcpyDeviceToDevice, s));
    }
    WEFT_NCCL_CHECK(ncclGroupStart());
    for (int peer = 0; peer < size_; ++peer) {
      if (peer == rank_) continue;
      if (send_rows[peer] > 0) {
        WEFT_NCCL_CHECK(ncclSend(bytes_at(in, send_at[peer] * row), send_rows[peer] * row,
                                 ncclUint8, peer, comm_, s));
      }
      if (recv_rows[peer] > 0) {
        WEFT_NCCL_CHECK(ncclRecv(bytes_at(out, recv_at[peer] * row), recv_rows[peer] * row,
                                 ncclUint8, peer, comm_, s));
      }
    }
    WEFT_NCCL_CHECK(ncclGroupEnd());
  }

  // All-Scan: one piece of S_in from `src`, on the comm stream.
  void receive_piece(const Tensor& in_piece, int src, cudaStream_t s) {
    WEFT_NCCL_CHECK(ncclRecv(in_piece.raw(), in_piece.numel(), ncclFloat32, src, comm_, s));
  }

  // All-Scan: out_piece = decay_piece * in_piece + local_piece once in_piece is on the comm
  // stream `s`; `s` then waits for the result.
  void combine_piece(Tensor& out_piece, const Tensor& in_piece, const Tensor& decay_piece,
                     const Tensor& local_piece, cudaStream_t s) {
    WEFT_CUDA_CHECK(cudaMemcpyAsync(out_piece.raw(), in_piece.raw(), in_piece.nbytes(),
                                    cudaMemcpyDeviceToDevice, s));
    WEFT_CUDA_CHECK(cudaEventRecord(piece_ready_, s));
    WEFT_CUDA_CHECK(cudaStreamWaitEvent(compute_stream(), piece_ready_, 0));
    kernels::mul_add_(out_piece, decay_piece, local_piece);
    WEFT_CUDA_CHECK(cudaEventRecord(piece_combined_, compute_stream()));
    WEFT_CUDA_CHECK(cudaStreamWaitEvent(s, piece_combined_, 0));
  }

  void check_peer(int peer, const char* op) const {
    WEFT_CHECK(peer >= 0 && peer < size_ && peer != rank_)
        << op << " peer " << peer << " from rank " << rank_ << " of " << size_;
  }

  MPI_Comm mpi_comm_;
  int device_;
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t inputs_ready_ = nullptr;  // re-recorded on the compute stream by every call
  // All-Scan's per-piece hand-offs: comm stream -> compute stream (the piece arrived) and back
  // (the piece is combined). Re-recorded per piece: a wait takes the record current at its call.
  cudaEvent_t piece_ready_ = nullptr;
  cudaEvent_t piece_combined_ = nullptr;
  Tensor barrier_buffer_;  // i32[1] on the device
  std::mutex mutex_;       // one call at a time: NCCL calls on a comm must not race
  std::shared_ptr<TrafficCounters> counters_;
  std::vector<int> world_ranks_;    // world rank of each rank of this group
  std::string members_;             // the same, formatted (comm/activity.h)
  int64_t collectives_issued_ = 0;  // under mutex_
  std::mutex track_mu_;
  std::deque<std::pair<std::shared_ptr<SharedEvent>, int64_t>> tracked_;  // calls in progress
  int64_t poller_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm mpi_comm, int cuda_device,
                                                     std::string name) {
  WEFT_CHECK(mpi_comm != MPI_COMM_NULL) << "NCCL communicator " << name << " from MPI_COMM_NULL";
  MPI_Comm own = MPI_COMM_NULL;
  WEFT_MPI_CHECK(MPI_Comm_dup(mpi_comm, &own));
  return std::make_unique<NcclCommunicator>(own, cuda_device, std::move(name));
}

ncclComm_t nccl_handle(Communicator& comm) {
  auto* nccl = dynamic_cast<NcclCommunicator*>(&comm);
  return nccl != nullptr ? nccl->handle() : nullptr;
}

}  // namespace weft::comm
