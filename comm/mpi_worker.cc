#include "comm/mpi_worker.h"

#include <atomic>
#include <chrono>

#include "comm/mpi_check.h"

namespace weft::comm {

// How long the idle thread sleeps between polls while point-to-point requests are in flight.
constexpr std::chrono::microseconds kPollInterval(20);

class WorkerWork final : public Work {
 public:
  void wait() override {
    std::unique_lock<std::mutex> lock(mutex_);
    finished_cv_.wait(lock, [this] { return done_.load(std::memory_order_acquire); });
  }
  bool done() override { return done_.load(std::memory_order_acquire); }

  void finish() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_.store(true, std::memory_order_release);
    }
    finished_cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable finished_cv_;
  std::atomic<bool> done_{false};
};

MpiWorker::MpiWorker() : thread_([this] { loop(); }) {}

MpiWorker::~MpiWorker() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

WorkPtr MpiWorker::submit(OpRecord label, MpiOp op) {
  auto work = std::make_shared<WorkerWork>();
  label.idle_ok = IdleWaitScope::active();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    WEFT_CHECK(!stopping_) << "submit to a communicator being destroyed";
    queue_.push_back({std::move(op), work, std::move(label)});
  }
  wake_.notify_one();
  return work;
}

void MpiWorker::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (!queue_.empty()) {
      Queued next = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      const int64_t token = Activity::get().begin(std::move(next.label));
      {
        const DeviceAccess access;  // the collective stands for the device (tensor.h)
        running_.push_back({next.work, next.op(), false, token});
      }
      next = {};  // drops the op's captured tensors before the work can be seen as done
      progress();
      lock.lock();
    } else if (!running_.empty()) {
      lock.unlock();
      progress();
      lock.lock();
      if (!running_.empty() && queue_.empty()) wake_.wait_for(lock, kPollInterval);
    } else if (stopping_) {
      return;
    } else {
      wake_.wait(lock);
    }
  }
}

void MpiWorker::progress() {
  for (Running& r : running_) {
    if (r.complete) continue;
    std::vector<MPI_Request>& requests = r.in_flight.requests;
    std::vector<MPI_Status> statuses(requests.size());
    int flag = 1;
    if (!requests.empty()) {
      WEFT_MPI_CHECK(
          MPI_Testall(static_cast<int>(requests.size()), requests.data(), &flag, statuses.data()));
    }
    if (!flag) continue;
    if (r.in_flight.on_complete) {
      const DeviceAccess access;
      r.in_flight.on_complete(statuses);
    }
    r.in_flight = {};
    r.complete = true;
  }
  while (!running_.empty() && running_.front().complete) {
    Activity::get().end(running_.front().activity);
    running_.front().work->finish();
    running_.pop_front();
  }
}

}  // namespace weft::comm
