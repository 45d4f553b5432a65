// Communicator: one group of ranks and the collectives weft uses on it.
//
// Every call has an asynchronous form returning a Work to wait on, so computation overlaps
// communication (a comm thread on CPU, a comm stream on GPU); the plain form is async + wait.
// Calls on one communicator complete in the order they were issued, and every rank of the group
// must issue the same collectives in the same order (as in MPI and NCCL).
//
// Traffic accounting (nccl-tests bus convention), per call kind, bytes this rank sends, with
// S = the tensor's bytes named below and P = size():
//   all_reduce       2(P-1)/P * S        (S = the buffer)
//   all_gather       (P-1)/P * S         (S = the full gathered output)
//   reduce_scatter   (P-1)/P * S         (S = the full input)
//   all_to_all       (P-1)/P * S         (S = the input)
//   all_to_all_v     bytes of the rows sent to other ranks
//   send             S;  recv 0 (counted as a call)
//   broadcast        S on every rank (nccl-tests: busbw = algbw)
//   all_scan         bytes of the states sent to the next rank (comm/all_scan.h, issue 4)
//   barrier          0 (a call)
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/tensor.h"

namespace weft::comm {

enum class ReduceOp { kSum, kAvg, kMax };

// A handle on an issued operation. wait() blocks until its buffers may be read/reused.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  [[nodiscard]] virtual bool done() = 0;
};
using WorkPtr = std::shared_ptr<Work>;

struct CallStats {
  int64_t calls = 0;
  int64_t bytes_sent = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  [[nodiscard]] virtual int rank() const = 0;
  [[nodiscard]] virtual int size() const = 0;
  // The group's role ("world", "dp", "tp", ...): the key under which --comm-report lists it.
  [[nodiscard]] virtual const std::string& name() const = 0;

  // In place on `t` (every rank the same shape).
  virtual WorkPtr all_reduce_async(Tensor& t, ReduceOp op) = 0;
  // out [P * n, ...] = the ranks' `in` [n, ...] concatenated in rank order along dim 0.
  virtual WorkPtr all_gather_async(const Tensor& in, Tensor& out) = 0;
  // in [P * n, ...] -> out [n, ...] = reduction of every rank's rows [r*n, (r+1)*n) for rank r.
  virtual WorkPtr reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) = 0;
  // in [P * n, ...]: rows [j*n, (j+1)*n) go to rank j; out [P * n, ...] rows [i*n, ...) came
  // from rank i.
  virtual WorkPtr all_to_all_async(const Tensor& in, Tensor& out) = 0;
  // Uneven: send_rows[j] rows of `in` (consecutive, in rank order) go to rank j; recv_rows[i]
  // rows of `out` come from rank i. Rows are along dim 0; the rest of the shape matches.
  virtual WorkPtr all_to_all_v_async(const Tensor& in, const std::vector<int64_t>& send_rows,
                                     Tensor& out, const std::vector<int64_t>& recv_rows) = 0;
  virtual WorkPtr send_async(const Tensor& t, int dst, int tag = 0) = 0;
  virtual WorkPtr recv_async(Tensor& t, int src, int tag = 0) = 0;
  virtual WorkPtr broadcast_async(Tensor& t, int root) = 0;
  virtual WorkPtr barrier_async() = 0;
  // All-Scan (ZeCO; docs/algorithms.md "ZeCO and All-Scan"): the affine recurrence
  //   S_out(r) = decay ⊙ S_in(r) + local(r)
  // along the ranks. Forward (reverse = false): rank r receives S_in(r) from r-1 and sends
  // S_out(r) to r+1; reverse: receives from r+1 and sends to r-1. On the first rank of the
  // direction S_in is `s_in`'s value on entry (zeros for a plain scan); every other rank's
  // `s_in` is overwritten with what it received. Pipelined in `blocks` pieces of the flattened
  // elements: each piece is combined and forwarded as soon as it arrives, so the latency is
  // about one state time plus (P-1) piece times. Each rank sends one state (the last of the
  // direction none); counted as "all_scan" with the bytes this rank sent.
  // local, decay and s_in: the same shape, f32, on one device; local and decay are read until
  // the work completes.
  virtual WorkPtr all_scan_async(const Tensor& local, const Tensor& decay, Tensor& s_in, int blocks,
                                 bool reverse) = 0;

  void all_reduce(Tensor& t, ReduceOp op = ReduceOp::kSum) { all_reduce_async(t, op)->wait(); }
  void all_gather(const Tensor& in, Tensor& out) { all_gather_async(in, out)->wait(); }
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::kSum) {
    reduce_scatter_async(in, out, op)->wait();
  }
  void all_to_all(const Tensor& in, Tensor& out) { all_to_all_async(in, out)->wait(); }
  void all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_rows, Tensor& out,
                    const std::vector<int64_t>& recv_rows) {
    all_to_all_v_async(in, send_rows, out, recv_rows)->wait();
  }
  void send(const Tensor& t, int dst, int tag = 0) { send_async(t, dst, tag)->wait(); }
  void recv(Tensor& t, int src, int tag = 0) { recv_async(t, src, tag)->wait(); }
  void broadcast(Tensor& t, int root) { broadcast_async(t, root)->wait(); }
  void barrier() { barrier_async()->wait(); }
  void all_scan(const Tensor& local, const Tensor& decay, Tensor& s_in, int blocks = 4,
                bool reverse = false) {
    all_scan_async(local, decay, s_in, blocks, reverse)->wait();
  }

  // New communicator over the ranks that pass the same `color`, ordered by `key` (then by
  // rank). Collective over this communicator.
  [[nodiscard]] virtual std::unique_ptr<Communicator> split(int color, int key,
                                                            std::string name) = 0;
  // The same, for a group that carries part of an algorithm running over this communicator
  // (USP's Ulysses and ring groups inside sp, the ranks sharing a KV head inside tp): every
  // call the new group makes is counted in its own stats and in this communicator's too, so
  // --comm-report's group totals include the traffic of the algorithms run over it.
  [[nodiscard]] virtual std::unique_ptr<Communicator> split_within(int color, int key,
                                                                   std::string name) = 0;

  // Traffic counters, by call kind ("all_reduce", "all_gather", ...).
  [[nodiscard]] virtual std::map<std::string, CallStats> stats() const = 0;
  virtual void reset_stats() = 0;
};

// Sum over call kinds.
CallStats total(const std::map<std::string, CallStats>& stats);

}  // namespace weft::comm
