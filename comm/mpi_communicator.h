// The MPI backend of Communicator, for CPU tensors (f32, i32, i64, u8; bf16 and f16 in the
// operations that do not reduce). Each communicator owns an MPI communicator and one comm thread
// (comm/mpi_worker.h) that runs its calls in issue order.
//
// Tags: send/recv take tags in [0, MPI_TAG_UB - 1]; the top tag MPI_TAG_UB is All-Scan's, so a
// scan's pieces never match a user's message. A scan's pieces share that tag and match in order
// (MPI's messages between two ranks on one tag do not overtake each other).
#pragma once

#include <mpi.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/mpi_worker.h"
#include "comm/traffic.h"

namespace weft::comm {

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` (freed on destruction, if MPI is still running).
  // counters_parent: see Communicator::split_within (null: counted here only).
  MpiCommunicator(MPI_Comm comm, std::string name,
                  std::shared_ptr<TrafficCounters> counters_parent = nullptr);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  [[nodiscard]] int rank() const override { return rank_; }
  [[nodiscard]] int size() const override { return size_; }
  [[nodiscard]] const std::string& name() const override { return name_; }

  WorkPtr all_reduce_async(Tensor& t, ReduceOp op) override;
  WorkPtr all_gather_async(const Tensor& in, Tensor& out) override;
  WorkPtr reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) override;
  WorkPtr all_to_all_async(const Tensor& in, Tensor& out) override;
  WorkPtr all_to_all_v_async(const Tensor& in, const std::vector<int64_t>& send_rows, Tensor& out,
                             const std::vector<int64_t>& recv_rows) override;
  WorkPtr send_async(const Tensor& t, int dst, int tag = 0) override;
  WorkPtr recv_async(Tensor& t, int src, int tag = 0) override;
  WorkPtr broadcast_async(Tensor& t, int root) override;
  WorkPtr barrier_async() override;
  WorkPtr all_scan_async(const Tensor& local, const Tensor& decay, Tensor& s_in, int blocks,
                         bool reverse) override;

  [[nodiscard]] std::unique_ptr<Communicator> split(int color, int key, std::string name) override;
  [[nodiscard]] std::unique_ptr<Communicator> split_within(int color, int key,
                                                           std::string name) override;

  [[nodiscard]] std::map<std::string, CallStats> stats() const override {
    return counters_->snapshot();
  }
  void reset_stats() override { counters_->reset(); }

  // The underlying MPI communicator, for bootstrapping other backends (NCCL's unique id). Its
  // comm thread may be using it: call barrier() first and issue nothing here meanwhile.
  [[nodiscard]] MPI_Comm mpi_comm() const { return comm_; }

 private:
  // MPI_Comm_split on the comm thread (collective over this communicator).
  MPI_Comm split_comm(int color, int key);
  // One dim-0 row of `bytes` as a committed MPI type: gathers and all-to-alls count rows, so that
  // buffers past 2 GiB keep their counts within int. Cached (creating one costs microseconds);
  // used on the comm thread only.
  MPI_Datatype row_type(int64_t bytes);
  // Labels of the operations this communicator submits (comm/activity.h). Called on the issuing
  // thread, in issue order, so collectives are numbered alike on every rank of the group.
  OpRecord collective(const char* kind);
  OpRecord p2p(const char* kind, int peer);

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
  int scan_tag_ = 32767;  // MPI_TAG_UB of comm_: All-Scan's tag
  int max_tag_ = 32766;   // the largest tag of send/recv
  std::string name_;
  std::vector<int> world_ranks_;  // world rank of each rank of this group
  std::string members_;           // the same, formatted
  std::atomic<int64_t> collectives_issued_{0};
  std::shared_ptr<TrafficCounters> counters_;
  std::map<int64_t, MPI_Datatype> row_types_;  // the comm thread's
  std::unique_ptr<MpiWorker> worker_;  // declared last: its thread stops before the rest goes
};

// A communicator over every rank of MPI_COMM_WORLD (a duplicate of it, so that raw MPI calls on
// MPI_COMM_WORLD never match weft's). Needs MPI initialised (comm/mpi_runtime.h).
// The world rank of each rank of `comm`, in its rank order.
std::vector<int> world_ranks_of(MPI_Comm comm);

std::unique_ptr<Communicator> mpi_world_communicator(std::string name = "world");

}  // namespace weft::comm
