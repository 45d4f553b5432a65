// The process's MPI lifetime, owned by main():
//   int main(int argc, char** argv) { weft::comm::MpiRuntime mpi(&argc, &argv); ... }
// weft needs MPI_THREAD_MULTIPLE: every communicator issues its MPI calls from its own comm
// thread, and several communicators run at once.
#pragma once

namespace weft::comm {

class MpiRuntime {
 public:
  // Initialises MPI with MPI_THREAD_MULTIPLE, or accepts an MPI that something else (a test
  // main) already initialised at that level; aborts with a message if the level is lower.
  MpiRuntime(int* argc, char*** argv);
  // Finalises MPI if this object initialised it. Every communicator must be gone by then.
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  [[nodiscard]] int world_rank() const { return world_rank_; }
  [[nodiscard]] int world_size() const { return world_size_; }

 private:
  bool owns_ = false;
  int world_rank_ = 0;
  int world_size_ = 1;
};

// Ends every rank with exit code `code`: for a fatal error that one rank alone detected (bad
// input seen by rank 0), where returning would leave the other ranks waiting forever.
[[noreturn]] void abort_all(int code);

}  // namespace weft::comm
