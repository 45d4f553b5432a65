// The comm thread behind an MpiCommunicator. It runs submitted operations one at a time in FIFO
// order, so computation on the caller's thread overlaps communication. An operation either runs
// to completion on the thread (the blocking MPI collectives) or leaves MPI requests in flight
// (point-to-point: a blocking send would stall the matching receive queued behind it on the
// peer); the thread polls those between operations. Works are marked done in submission order,
// as communicator.h promises: a send issued after a recv_async reports done only once that
// receive has, although both are posted to MPI at once.
#pragma once

#include <mpi.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "comm/activity.h"
#include "comm/communicator.h"
#include "runtime/core/tensor.h"

namespace weft::comm {

// What an operation leaves behind when it returns.
struct InFlight {
  std::vector<MPI_Request> requests;  // empty: the operation is complete
  // Called with one status per request once all have completed (checks received sizes).
  std::function<void(const std::vector<MPI_Status>&)> on_complete;
  std::vector<Tensor> buffers;  // kept alive until the requests complete
};
using MpiOp = std::function<InFlight()>;

class WorkerWork;

class MpiWorker {
 public:
  MpiWorker();
  // Finishes every submitted operation, then joins the thread.
  ~MpiWorker();
  MpiWorker(const MpiWorker&) = delete;
  MpiWorker& operator=(const MpiWorker&) = delete;

  // `label` names the operation for comm/activity.h while it is in progress (its `since` is set
  // when the thread starts it; idle_ok is taken from the submitting thread's IdleWaitScope).
  WorkPtr submit(OpRecord label, MpiOp op);

 private:
  struct Queued {
    MpiOp op;
    std::shared_ptr<WorkerWork> work;
    OpRecord label;
  };
  struct Running {
    std::shared_ptr<WorkerWork> work;
    InFlight in_flight;
    bool complete = false;
    int64_t activity = 0;  // Activity token
  };

  void loop();
  // Tests the requests in flight and marks done, in order, the works whose predecessors are done.
  void progress();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Queued> queue_;     // guarded by mutex_
  bool stopping_ = false;        // guarded by mutex_
  std::deque<Running> running_;  // the thread's own
  std::thread thread_;
};

}  // namespace weft::comm
