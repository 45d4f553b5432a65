// nccl-tests-style benchmark of weft's MPI Communicator against the same raw MPI call:
//   mpirun -np 4 build/bench/comm_bench [--ops all_reduce,all_gather,reduce_scatter,all_to_all]
//       [--min-bytes 8] [--max-bytes 64M] [--step 4] [--iters 20] [--warmup 5] [--sync]
// Per size: time per call (the slowest rank's average), algbw = size / time, busbw = algbw times
// the op's bus factor (all_reduce 2(P-1)/P, the others (P-1)/P), and #wrong (elements that
// differ from the expected result, summed over ranks, after one checked call on fresh inputs).
// "size" is the buffer nccl-tests names: all_reduce the buffer, all_gather the gathered output,
// reduce_scatter and all_to_all the input. weft issues `iters` async calls and waits on the last
// (calls complete in order); --sync waits on each. Rank 0 prints. f32 data.
// --ops all_scan (not in the default list): the forward All-Scan's latency against its number of
// pipeline blocks, per state size ("size" = one rank's state); no raw MPI counterpart. Each rank
// sends one state per call, so busbw = algbw.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "comm/mpi_check.h"
#include "comm/mpi_communicator.h"
#include "comm/mpi_runtime.h"
#include "runtime/core/status.h"

namespace weft::comm {
namespace {

struct Options {
  std::vector<std::string> ops = {"all_reduce", "all_gather", "reduce_scatter", "all_to_all"};
  int64_t min_bytes = 8;
  int64_t max_bytes = int64_t{64} << 20;
  int64_t step = 4;
  int iters = 20;
  int warmup = 5;
  bool sync = false;
};

// "64M", "1K", "8" -> bytes.
absl::StatusOr<int64_t> parse_bytes(const std::string& text) {
  int64_t scale = 1;
  std::string digits = text;
  if (!digits.empty() && (digits.back() == 'K' || digits.back() == 'M' || digits.back() == 'G')) {
    scale = int64_t{1} << (digits.back() == 'K' ? 10 : digits.back() == 'M' ? 20 : 30);
    digits.pop_back();
  }
  int64_t value = 0;
  if (!absl::SimpleAtoi(digits, &value) || value < 0) {
    return invalid_argument("size '", text, "' is not a byte count like 8, 1K or 64M");
  }
  return value * scale;
}

absl::StatusOr<int64_t> parse_int(const std::string& flag, const std::string& text) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value < 1) {
    return invalid_argument(flag, " ", text, " is not a positive integer");
  }
  return value;
}

absl::StatusOr<Options> parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--sync") {
      o.sync = true;
      continue;
    }
    if (i + 1 >= argc) return invalid_argument(flag, " needs a value (or is unknown)");
    const std::string value = argv[++i];
    if (flag == "--ops") {
      o.ops = absl::StrSplit(value, ',');
      for (const std::string& op : o.ops) {
        if (op != "all_reduce" && op != "all_gather" && op != "reduce_scatter" &&
            op != "all_to_all" && op != "all_scan") {
          return invalid_argument(
              "--ops: unknown op '", op,
              "' (all_reduce, all_gather, reduce_scatter, all_to_all, all_scan)");
        }
      }
    } else if (flag == "--min-bytes") {
      WEFT_ASSIGN_OR_RETURN(o.min_bytes, parse_bytes(value));
    } else if (flag == "--max-bytes") {
      WEFT_ASSIGN_OR_RETURN(o.max_bytes, parse_bytes(value));
    } else if (flag == "--step") {
      WEFT_ASSIGN_OR_RETURN(o.step, parse_int(flag, value));
      if (o.step < 2) return invalid_argument("--step ", value, " must be at least 2");
    } else if (flag == "--iters") {
      WEFT_ASSIGN_OR_RETURN(const int64_t iters, parse_int(flag, value));
      o.iters = static_cast<int>(iters);
    } else if (flag == "--warmup") {
      WEFT_ASSIGN_OR_RETURN(const int64_t warmup, parse_int(flag, value));
      o.warmup = static_cast<int>(warmup);
    } else {
      return invalid_argument("unknown flag ", flag);
    }
  }
  if (o.min_bytes > o.max_bytes) {
    return invalid_argument("--min-bytes ", o.min_bytes, " exceeds --max-bytes ", o.max_bytes);
  }
  return o;
}

// Rank r's input at index i: small integers, so every sum is exact.
float value(int r, int64_t i) { return static_cast<float>((r * 37 + i * 11) % 23 - 11); }

float sum_over_ranks(int p, int64_t i) {
  float s = 0;
  for (int q = 0; q < p; ++q) s += value(q, i);
  return s;
}

// One op at one size: its buffers, the weft call, the raw MPI call and the expected result.
struct Case {
  Tensor in;  // all_reduce: in and out are one buffer (in place)
  Tensor out;
  double bus_factor = 1;
  int64_t size_bytes = 0;
  std::function<WorkPtr()> weft;
  std::function<void()> mpi;
  std::function<float(int64_t)> expected;  // out[i] after one call on fresh inputs
};

// `count` f32 elements in the op's "size" buffer (a multiple of P except for all_reduce).
Case make_case(const std::string& op, int64_t count, Communicator& comm, MPI_Comm raw) {
  const int p = comm.size();
  const int rank = comm.rank();
  const int64_t n = count / p;  // elements per rank's block
  Case c;
  c.size_bytes = count * 4;
  c.bus_factor = static_cast<double>(p - 1) / p;
  if (op == "all_reduce") {
    c.in = c.out = Tensor::zeros({count});
    c.bus_factor *= 2;
    c.weft = [&comm, t = c.in]() mutable { return comm.all_reduce_async(t, ReduceOp::kSum); };
    c.mpi = [t = c.in, count, raw] {
      WEFT_MPI_CHECK(
          MPI_Allreduce(MPI_IN_PLACE, t.raw(), static_cast<int>(count), MPI_FLOAT, MPI_SUM, raw));
    };
    c.expected = [p](int64_t i) { return sum_over_ranks(p, i); };
  } else if (op == "all_gather") {
    c.in = Tensor::zeros({n});
    c.out = Tensor::zeros({count});
    c.weft = [&comm, in = c.in, out = c.out]() mutable { return comm.all_gather_async(in, out); };
    c.mpi = [in = c.in, out = c.out, n, raw] {
      WEFT_MPI_CHECK(MPI_Allgather(in.raw(), static_cast<int>(n), MPI_FLOAT, out.raw(),
                                   static_cast<int>(n), MPI_FLOAT, raw));
    };
    c.expected = [n](int64_t i) { return value(static_cast<int>(i / n), i % n); };
  } else if (op == "reduce_scatter") {
    c.in = Tensor::zeros({count});
    c.out = Tensor::zeros({n});
    c.weft = [&comm, in = c.in, out = c.out]() mutable {
      return comm.reduce_scatter_async(in, out, ReduceOp::kSum);
    };
    c.mpi = [in = c.in, out = c.out, n, raw] {
      WEFT_MPI_CHECK(MPI_Reduce_scatter_block(in.raw(), out.raw(), static_cast<int>(n), MPI_FLOAT,
                                              MPI_SUM, raw));
    };
    c.expected = [p, rank, n](int64_t i) { return sum_over_ranks(p, rank * n + i); };
  } else {
    c.in = Tensor::zeros({count});
    c.out = Tensor::zeros({count});
    c.weft = [&comm, in = c.in, out = c.out]() mutable { return comm.all_to_all_async(in, out); };
    c.mpi = [in = c.in, out = c.out, n, raw] {
      WEFT_MPI_CHECK(MPI_Alltoall(in.raw(), static_cast<int>(n), MPI_FLOAT, out.raw(),
                                  static_cast<int>(n), MPI_FLOAT, raw));
    };
    c.expected = [rank, n](int64_t i) { return value(static_cast<int>(i / n), rank * n + i % n); };
  }
  return c;
}

void fill_inputs(Case& c, int rank) {
  c.out.zero_();
  float* in = c.in.data<float>();
  for (int64_t i = 0; i < c.in.numel(); ++i) in[i] = value(rank, i);
}

// Wrong elements after one call on fresh inputs, summed over ranks.
int64_t count_wrong(Case& c, int rank, const std::function<void()>& call) {
  fill_inputs(c, rank);
  call();
  const float* out = c.out.data<float>();
  int64_t wrong = 0;
  for (int64_t i = 0; i < c.out.numel(); ++i) wrong += out[i] != c.expected(i);
  int64_t all = 0;
  WEFT_MPI_CHECK(MPI_Allreduce(&wrong, &all, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD));
  return all;
}

// Average microseconds per call of `run(iters)` on the slowest rank, after `run(warmup)`.
double time_us(const std::function<void(int)>& run, int iters, int warmup) {
  run(warmup);
  WEFT_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  const double start = MPI_Wtime();
  run(iters);
  double us = (MPI_Wtime() - start) * 1e6 / iters;
  double slowest = 0;
  WEFT_MPI_CHECK(MPI_Allreduce(&us, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
  return slowest;
}

struct Result {
  double us = 0;
  double algbw = 0;  // GB/s
  double busbw = 0;
  int64_t wrong = 0;
};

Result measure(Case& c, int rank, const Options& o, const std::function<void(int)>& run,
               const std::function<void()>& once) {
  fill_inputs(c, rank);
  Result r;
  r.us = time_us(run, o.iters, o.warmup);
  r.algbw = static_cast<double>(c.size_bytes) / (r.us * 1e3);
  r.busbw = r.algbw * c.bus_factor;
  r.wrong = count_wrong(c, rank, once);
  return r;
}

void run_op(const std::string& op, const Options& o, Communicator& comm, MPI_Comm raw) {
  const int p = comm.size();
  const int rank = comm.rank();
  if (rank == 0) {
    std::printf("\n# %s, %d ranks, f32, %d iters (%d warm-up); weft: %s\n", op.c_str(), p, o.iters,
                o.warmup, o.sync ? "wait on each call" : "async, wait on the last");
    std::printf("# %12s %12s %6s | %10s %8s %8s %7s | %10s %8s %8s %7s\n", "size (B)", "count",
                "type", "weft (us)", "algbw", "busbw", "#wrong", "mpi (us)", "algbw", "busbw",
                "#wrong");
  }
  double weft_busbw = 0;
  double mpi_busbw = 0;
  int sizes = 0;
  for (int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= o.step) {
    int64_t count = bytes / 4;
    if (op != "all_reduce") count -= count % p;
    Case c = make_case(op, count, comm, raw);
    const Result weft = measure(
        c, rank, o,
        [&](int iters) {
          WorkPtr last;
          for (int i = 0; i < iters; ++i) {
            last = c.weft();
            if (o.sync) last->wait();
          }
          if (last) last->wait();
        },
        [&] { c.weft()->wait(); });
    const Result mpi = measure(
        c, rank, o,
        [&](int iters) {
          for (int i = 0; i < iters; ++i) c.mpi();
        },
        c.mpi);
    weft_busbw += weft.busbw;
    mpi_busbw += mpi.busbw;
    ++sizes;
    if (rank == 0) {
      std::printf("  %12lld %12lld %6s | %10.1f %8.3f %8.3f %7lld | %10.1f %8.3f %8.3f %7lld\n",
                  static_cast<long long>(c.size_bytes), static_cast<long long>(count), "float",
                  weft.us, weft.algbw, weft.busbw, static_cast<long long>(weft.wrong), mpi.us,
                  mpi.algbw, mpi.busbw, static_cast<long long>(mpi.wrong));
    }
  }
  if (rank == 0 && sizes > 0) {
    std::printf("# avg busbw (GB/s): weft %.3f, mpi %.3f\n", weft_busbw / sizes, mpi_busbw / sizes);
  }
}

// Block counts of the all_scan rows: 1 is the unpipelined scan, P time-steps of one state.
constexpr int kScanBlocks[] = {1, 2, 4, 8, 16};
constexpr float kScanDecay = 0.5f;

// S_in on rank `rank` after a forward scan from zeros with local = value(q, i) and decay 0.5
// everywhere (exact in f32: halves of small integers).
float scanned(int rank, int64_t i) {
  float s = 0;
  for (int q = 0; q < rank; ++q) s = kScanDecay * s + value(q, i);
  return s;
}

void run_all_scan(const Options& o, Communicator& comm) {
  const int p = comm.size();
  const int rank = comm.rank();
  if (rank == 0) {
    std::printf("\n# all_scan (forward), %d ranks, f32, %d iters (%d warm-up); weft: %s\n", p,
                o.iters, o.warmup, o.sync ? "wait on each call" : "async, wait on the last");
    std::printf("# %12s %12s %6s | %10s %8s %7s\n", "size (B)", "count", "blocks", "weft (us)",
                "algbw", "#wrong");
  }
  for (int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= o.step) {
    const int64_t count = std::max<int64_t>(bytes / 4, 1);
    Tensor local = Tensor::empty({count});  // [count] f32, this rank's state
    Tensor decay = Tensor::full({count}, kScanDecay);
    Tensor s_in = Tensor::zeros({count});
    for (int64_t i = 0; i < count; ++i) local.data<float>()[i] = value(rank, i);
    for (int blocks : kScanBlocks) {
      const double us = time_us(
          [&](int iters) {
            WorkPtr last;
            for (int i = 0; i < iters; ++i) {
              last = comm.all_scan_async(local, decay, s_in, blocks, /*reverse=*/false);
              if (o.sync) last->wait();
            }
            if (last) last->wait();
          },
          o.iters, o.warmup);
      // Every call leaves the same S_in: rank 0 keeps its zeros, the others are overwritten.
      int64_t wrong = 0;
      for (int64_t i = 0; i < count; ++i) wrong += s_in.data<float>()[i] != scanned(rank, i);
      int64_t all = 0;
      WEFT_MPI_CHECK(MPI_Allreduce(&wrong, &all, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD));
      if (rank == 0) {
        std::printf("  %12lld %12lld %6d | %10.1f %8.3f %7lld\n", static_cast<long long>(count * 4),
                    static_cast<long long>(count), blocks, us,
                    static_cast<double>(count * 4) / (us * 1e3), static_cast<long long>(all));
      }
    }
  }
}

}  // namespace
}  // namespace weft::comm

int main(int argc, char** argv) {
  weft::comm::MpiRuntime mpi(&argc, &argv);
  const absl::StatusOr<weft::comm::Options> options = weft::comm::parse_options(argc, argv);
  if (!options.ok()) {
    if (mpi.world_rank() == 0)
      std::fprintf(stderr, "comm_bench: %s\n", options.status().ToString().c_str());
    return 2;
  }
  MPI_Comm raw = MPI_COMM_NULL;
  WEFT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &raw));
  {
    std::unique_ptr<weft::comm::Communicator> world = weft::comm::mpi_world_communicator();
    for (const std::string& op : options->ops) {
      if (op == "all_scan") {
        weft::comm::run_all_scan(*options, *world);
      } else {
        weft::comm::run_op(op, *options, *world, raw);
      }
    }
  }
  MPI_Comm_free(&raw);
  return 0;
}
