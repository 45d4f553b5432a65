#include "comm/mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <utility>

#include "comm/all_scan.h"
#include "comm/mpi_check.h"
#include "kernels/ops.h"

namespace weft::comm {
namespace {

// MPI counts are int: reductions and point-to-point messages go in pieces of at most this many
// elements (or bytes).
constexpr int64_t kMaxChunk = int64_t{1} << 30;

struct Chunk {
  int64_t begin;
  int count;
};

// [0, n) in pieces of at most kMaxChunk; at least one piece, so that an empty message is still
// a message (a receive of 0 bytes matches a send of 0 bytes).
std::vector<Chunk> chunks(int64_t n) {
  std::vector<Chunk> out;
  int64_t begin = 0;
  do {
    const int64_t count = std::min(n - begin, kMaxChunk);
    out.push_back({begin, static_cast<int>(count)});
    begin += count;
  } while (begin < n);
  return out;
}

int as_count(int64_t v, const char* what) {
  WEFT_CHECK(v >= 0 && v <= INT_MAX) << what << " = " << v << " does not fit an MPI count";
  return static_cast<int>(v);
}

void check_cpu(const Tensor& t, const char* op) {
  WEFT_CHECK(t.defined() && t.is_cpu()) << op << " on the MPI backend needs a CPU tensor, got "
                                        << (t.defined() ? t.str() : "an undefined tensor");
}

// The element type of a reduction: f32, i32, i64 or u8; kAvg on f32 only.
MPI_Datatype reduce_type(DType dtype, ReduceOp op, const char* what) {
  WEFT_CHECK(op != ReduceOp::kAvg || dtype == DType::kF32)
      << what << " with kAvg needs f32, got " << dtype_name(dtype);
  switch (dtype) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kI64:
      return MPI_INT64_T;
    case DType::kU8:
      return MPI_UINT8_T;
    default:
      WEFT_CHECK(false) << what << " does not reduce " << dtype_name(dtype)
                        << " on the MPI backend (convert to f32 first)";
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op reduce_op(ReduceOp op) { return op == ReduceOp::kMax ? MPI_MAX : MPI_SUM; }

// kAvg = sum, then this.
void divide_by(const Tensor& t, int p) {
  float* v = t.data<float>();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) v[i] /= static_cast<float>(p);
}

// Bytes of one dim-0 row (defined for 0 rows too).
int64_t row_bytes(const Tensor& t) {
  int64_t n = static_cast<int64_t>(dtype_size(t.dtype()));
  for (int i = 1; i < t.ndim(); ++i) n *= t.dim(i);
  return n;
}

// Same dtype, rank >= 1 and the same shape after dim 0.
void check_rows_match(const Tensor& in, const Tensor& out, const char* op) {
  bool same = in.dtype() == out.dtype() && in.ndim() >= 1 && in.ndim() == out.ndim();
  for (int i = 1; same && i < in.ndim(); ++i) same = in.dim(i) == out.dim(i);
  WEFT_CHECK(same) << op << ": in " << in.str() << " and out " << out.str()
                   << " need the same dtype and the same shape after dim 0";
}

void check_disjoint(const Tensor& a, const Tensor& b, const char* op) {
  const DeviceAccess access;  // addresses only
  const char* pa = static_cast<const char*>(a.raw());
  const char* pb = static_cast<const char*>(b.raw());
  const bool overlap = pa < pb + b.nbytes() && pb < pa + a.nbytes() && a.nbytes() && b.nbytes();
  WEFT_CHECK(!overlap) << op << ": in and out overlap in memory";
}

// Per-rank row counts and their offsets, as MPI_Alltoallv takes them.
struct RowCounts {
  std::vector<int> counts;
  std::vector<int> displs;
};

RowCounts row_counts(const std::vector<int64_t>& rows, int p, int64_t total, const char* what) {
  WEFT_CHECK_EQ(static_cast<int64_t>(rows.size()), p) << what << " needs one entry per rank";
  RowCounts out;
  int64_t offset = 0;
  for (int64_t r : rows) {
    WEFT_CHECK(r >= 0) << what << " has a negative count " << r;
    out.counts.push_back(as_count(r, what));
    out.displs.push_back(as_count(offset, what));
    offset += r;
  }
  WEFT_CHECK_EQ(offset, total) << what << " must sum to the tensor's rows";
  return out;
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name,
                                 std::shared_ptr<TrafficCounters> counters_parent)
    : comm_(comm),
      name_(std::move(name)),
      counters_(std::make_shared<TrafficCounters>(std::move(counters_parent))) {
  WEFT_CHECK(comm_ != MPI_COMM_NULL) << "communicator " << name_ << " from MPI_COMM_NULL";
  WEFT_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  WEFT_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  WEFT_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  int* tag_ub = nullptr;
  int found = 0;
  WEFT_MPI_CHECK(MPI_Comm_get_attr(comm_, MPI_TAG_UB, &tag_ub, &found));
  if (found) scan_tag_ = *tag_ub;
  max_tag_ = scan_tag_ - 1;
  // The group's world ranks, for naming the ranks of a stuck collective (comm/activity.h).
  world_ranks_ = world_ranks_of(comm_);
  members_ = format_ranks(world_ranks_);
  worker_ = std::make_unique<MpiWorker>();
}

OpRecord MpiCommunicator::collective(const char* kind) {
  OpRecord r;
  r.kind = kind;
  r.comm = name_;
  r.members = members_;
  r.seq = ++collectives_issued_;
  return r;
}

OpRecord MpiCommunicator::p2p(const char* kind, int peer) {
  OpRecord r;
  r.kind = kind;
  r.comm = name_;
  r.members = members_;
  r.peer = world_ranks_[peer];
  return r;
}

MpiCommunicator::~MpiCommunicator() {
  worker_.reset();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  for (auto& [bytes, type] : row_types_) MPI_Type_free(&type);
  MPI_Comm_free(&comm_);
}

MPI_Datatype MpiCommunicator::row_type(int64_t bytes) {
  auto found = row_types_.find(bytes);
  if (found != row_types_.end()) return found->second;
  MPI_Datatype type = MPI_DATATYPE_NULL;
  WEFT_MPI_CHECK(MPI_Type_contiguous(as_count(bytes, "row bytes"), MPI_BYTE, &type));
  WEFT_MPI_CHECK(MPI_Type_commit(&type));
  row_types_.emplace(bytes, type);
  return type;
}

WorkPtr MpiCommunicator::all_reduce_async(Tensor& t, ReduceOp op) {
  check_cpu(t, "all_reduce");
  const MPI_Datatype type = reduce_type(t.dtype(), op, "all_reduce");
  counters_->record("all_reduce", static_cast<int64_t>(t.nbytes()), size_);
  return worker_->submit(collective("all_reduce"), [this, t, type, op] {
    char* base = static_cast<char*>(t.raw());
    const int64_t elem = static_cast<int64_t>(dtype_size(t.dtype()));
    for (const Chunk& c : chunks(t.numel())) {
      WEFT_MPI_CHECK(
          MPI_Allreduce(MPI_IN_PLACE, base + c.begin * elem, c.count, type, reduce_op(op), comm_));
    }
    if (op == ReduceOp::kAvg) divide_by(t, size_);
    return InFlight{};
  });
}

WorkPtr MpiCommunicator::all_gather_async(const Tensor& in, Tensor& out) {
  check_cpu(in, "all_gather");
  check_cpu(out, "all_gather");
  check_rows_match(in, out, "all_gather");
  const int64_t n = in.dim(0);
  WEFT_CHECK_EQ(out.dim(0), size_ * n)
      << "all_gather: out " << out.str() << " needs " << size_ << " x the rows of in " << in.str();
  // In place when `in` is this rank's slot of `out`; any other overlap is an error.
  const bool in_place = (DeviceAccess(), in.raw() == out.slice(rank_ * n, (rank_ + 1) * n).raw());
  if (!in_place) check_disjoint(in, out, "all_gather");
  counters_->record("all_gather", static_cast<int64_t>(out.nbytes()), size_);
  return worker_->submit(collective("all_gather"), [this, in, out, n, in_place] {
    const int64_t bytes = row_bytes(in);
    if (bytes == 0) return InFlight{};
    const MPI_Datatype row = row_type(bytes);
    const int count = as_count(n, "all_gather rows");
    WEFT_MPI_CHECK(MPI_Allgather(in_place ? MPI_IN_PLACE : in.raw(), count, row, out.raw(), count,
                                 row, comm_));
    return InFlight{};
  });
}

WorkPtr MpiCommunicator::reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) {
  check_cpu(in, "reduce_scatter");
  check_cpu(out, "reduce_scatter");
  check_rows_match(in, out, "reduce_scatter");
  const MPI_Datatype type = reduce_type(in.dtype(), op, "reduce_scatter");
  WEFT_CHECK_EQ(in.dim(0), size_ * out.dim(0)) << "reduce_scatter: in " << in.str() << " needs "
                                               << size_ << " x the rows of out " << out.str();
  check_disjoint(in, out, "reduce_scatter");
  counters_->record("reduce_scatter", static_cast<int64_t>(in.nbytes()), size_);
  return worker_->submit(collective("reduce_scatter"), [this, in, out, type, op] {
    if (out.numel() == 0) return InFlight{};
    WEFT_MPI_CHECK(MPI_Reduce_scatter_block(in.raw(), out.raw(),
                                            as_count(out.numel(), "reduce_scatter elements"), type,
                                            reduce_op(op), comm_));
    if (op == ReduceOp::kAvg) divide_by(out, size_);
    return InFlight{};
  });
}

WorkPtr MpiCommunicator::all_to_all_async(const Tensor& in, Tensor& out) {
  check_cpu(in, "all_to_all");
  check_cpu(out, "all_to_all");
  check_rows_match(in, out, "all_to_all");
  WEFT_CHECK(in.shape() == out.shape() && in.dim(0) % size_ == 0)
      << "all_to_all: in " << in.str() << " and out " << out.str()
      << " need the same shape with dim 0 divisible by " << size_;
  check_disjoint(in, out, "all_to_all");
  counters_->record("all_to_all", static_cast<int64_t>(in.nbytes()), size_);
  return worker_->submit(collective("all_to_all"), [this, in, out] {
    const int64_t bytes = row_bytes(in);
    if (bytes == 0) return InFlight{};
    const MPI_Datatype row = row_type(bytes);
    const int count = as_count(in.dim(0) / size_, "all_to_all rows");
    WEFT_MPI_CHECK(MPI_Alltoall(in.raw(), count, row, out.raw(), count, row, comm_));
    return InFlight{};
  });
}

WorkPtr MpiCommunicator::all_to_all_v_async(const Tensor& in, const std::vector<int64_t>& send_rows,
                                            Tensor& out, const std::vector<int64_t>& recv_rows) {
  check_cpu(in, "all_to_all_v");
  check_cpu(out, "all_to_all_v");
  check_rows_match(in, out, "all_to_all_v");
  RowCounts send = row_counts(send_rows, size_, in.dim(0), "all_to_all_v send_rows");
  RowCounts recv = row_counts(recv_rows, size_, out.dim(0), "all_to_all_v recv_rows");
  check_disjoint(in, out, "all_to_all_v");
  const int64_t bytes = row_bytes(in);
  counters_->record("all_to_all_v", (in.dim(0) - send_rows[rank_]) * bytes, size_);
  return worker_->submit(collective("all_to_all_v"), [this, in, out, bytes, send = std::move(send),
                                                      recv = std::move(recv)] {
    if (bytes == 0) return InFlight{};
    const MPI_Datatype row = row_type(bytes);
    WEFT_MPI_CHECK(MPI_Alltoallv(in.raw(), send.counts.data(), send.displs.data(), row, out.raw(),
                                 recv.counts.data(), recv.displs.data(), row, comm_));
    return InFlight{};
  });
}

WorkPtr MpiCommunicator::send_async(const Tensor& t, int dst, int tag) {
  check_cpu(t, "send");
  WEFT_CHECK(dst >= 0 && dst < size_) << "send to rank " << dst << " of " << size_;
  WEFT_CHECK(tag >= 0 && tag <= max_tag_)
      << "send tag " << tag << " outside [0, " << max_tag_ << "]";
  counters_->record("send", static_cast<int64_t>(t.nbytes()), size_);
  return worker_->submit(p2p("send", dst), [this, t, dst, tag] {
    InFlight f;
    char* base = static_cast<char*>(t.raw());
    for (const Chunk& c : chunks(static_cast<int64_t>(t.nbytes()))) {
      MPI_Request& request = f.requests.emplace_back();
      WEFT_MPI_CHECK(MPI_Isend(base + c.begin, c.count, MPI_BYTE, dst, tag, comm_, &request));
    }
    f.buffers.push_back(t);
    return f;
  });
}

WorkPtr MpiCommunicator::recv_async(Tensor& t, int src, int tag) {
  check_cpu(t, "recv");
  WEFT_CHECK(src >= 0 && src < size_) << "recv from rank " << src << " of " << size_;
  WEFT_CHECK(tag >= 0 && tag <= max_tag_)
      << "recv tag " << tag << " outside [0, " << max_tag_ << "]";
  counters_->record("recv", static_cast<int64_t>(t.nbytes()), size_);
  return worker_->submit(p2p("recv", src), [this, t, src, tag] {
    InFlight f;
    std::vector<int> expected;
    char* base = static_cast<char*>(t.raw());
    for (const Chunk& c : chunks(static_cast<int64_t>(t.nbytes()))) {
      MPI_Request& request = f.requests.emplace_back();
      WEFT_MPI_CHECK(MPI_Irecv(base + c.begin, c.count, MPI_BYTE, src, tag, comm_, &request));
      expected.push_back(c.count);
    }
    f.on_complete = [expected, src, tag](const std::vector<MPI_Status>& statuses) {
      for (size_t i = 0; i < statuses.size(); ++i) {
        int got = 0;
        WEFT_MPI_CHECK(MPI_Get_count(&statuses[i], MPI_BYTE, &got));
        WEFT_CHECK_EQ(got, expected[i])
            << "recv from rank " << src << " tag " << tag << ": bytes sent vs buffer size";
      }
    };
    f.buffers.push_back(t);
    return f;
  });
}

WorkPtr MpiCommunicator::broadcast_async(Tensor& t, int root) {
  check_cpu(t, "broadcast");
  WEFT_CHECK(root >= 0 && root < size_) << "broadcast from rank " << root << " of " << size_;
  counters_->record("broadcast", static_cast<int64_t>(t.nbytes()), size_);
  return worker_->submit(collective("broadcast"), [this, t, root] {
    char* base = static_cast<char*>(t.raw());
    for (const Chunk& c : chunks(static_cast<int64_t>(t.nbytes()))) {
      WEFT_MPI_CHECK(MPI_Bcast(base + c.begin, c.count, MPI_BYTE, root, comm_));
    }
    return InFlight{};
  });
}

WorkPtr MpiCommunicator::barrier_async() {
  counters_->record("barrier", 0, size_);
  return worker_->submit(collective("barrier"), [this] {
    WEFT_MPI_CHECK(MPI_Barrier(comm_));
    return InFlight{};
  });
}

// Receives of every piece are posted up front; then each piece, in order, is waited for (except
// on the first rank of the direction), combined into `out` and sent on at once, so piece k
// travels on while piece k + 1 is still on its way here. The op returns with the sends in
// flight; the worker completes the Work once they are done.
WorkPtr MpiCommunicator::all_scan_async(const Tensor& local, const Tensor& decay, Tensor& s_in,
                                        int blocks, bool reverse) {
  check_cpu(local, "all_scan");
  ScanPlan plan = plan_all_scan(local, decay, s_in, rank_, size_, blocks, reverse, kMaxChunk);
  counters_->record("all_scan", plan.bytes_sent, size_);
  return worker_->submit(
      collective("all_scan"), [this, local, decay, s_in, plan = std::move(plan)] {
        const size_t n = plan.pieces.size();
        std::vector<MPI_Request> received(n, MPI_REQUEST_NULL);
        for (size_t k = 0; plan.prev >= 0 && k < n; ++k) {
          const Tensor in = piece_of(s_in, plan.pieces[k]);
          WEFT_MPI_CHECK(MPI_Irecv(in.raw(), static_cast<int>(in.numel()), MPI_FLOAT, plan.prev,
                                   scan_tag_, comm_, &received[k]));
        }
        InFlight f;
        const Tensor out = plan.next >= 0 ? Tensor::empty(s_in.shape(), DType::kF32, s_in.device())
                                          : Tensor();  // S_out
        for (size_t k = 0; k < n; ++k) {
          const ScanPiece& piece = plan.pieces[k];
          if (plan.prev >= 0) {
            MPI_Status status;
            WEFT_MPI_CHECK(MPI_Wait(&received[k], &status));
            int got = 0;
            WEFT_MPI_CHECK(MPI_Get_count(&status, MPI_FLOAT, &got));
            WEFT_CHECK_EQ(got, piece.count) << "all_scan piece " << k << " from rank " << plan.prev
                                            << ": every rank must pass the same shape and blocks";
          }
          if (plan.next < 0) continue;
          Tensor out_piece = piece_of(out, piece);
          out_piece.copy_from(piece_of(s_in, piece));
          kernels::mul_add_(out_piece, piece_of(decay, piece), piece_of(local, piece));
          MPI_Request& request = f.requests.emplace_back();
          WEFT_MPI_CHECK(MPI_Isend(out_piece.raw(), static_cast<int>(piece.count), MPI_FLOAT,
                                   plan.next, scan_tag_, comm_, &request));
        }
        if (out.defined()) f.buffers.push_back(out);
        return f;
      });
}

MPI_Comm MpiCommunicator::split_comm(int color, int key) {
  WEFT_CHECK(color >= 0) << "split colour " << color << " must be >= 0";
  MPI_Comm group = MPI_COMM_NULL;
  worker_
      ->submit(collective("split"),
               [this, color, key, &group] {
                 WEFT_MPI_CHECK(MPI_Comm_split(comm_, color, key, &group));
                 return InFlight{};
               })
      ->wait();
  return group;
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key, std::string name) {
  return std::make_unique<MpiCommunicator>(split_comm(color, key), std::move(name));
}

std::unique_ptr<Communicator> MpiCommunicator::split_within(int color, int key, std::string name) {
  return std::make_unique<MpiCommunicator>(split_comm(color, key), std::move(name), counters_);
}

std::vector<int> world_ranks_of(MPI_Comm comm) {
  int size = 0;
  WEFT_MPI_CHECK(MPI_Comm_size(comm, &size));
  MPI_Group group = MPI_GROUP_NULL, world_group = MPI_GROUP_NULL;
  WEFT_MPI_CHECK(MPI_Comm_group(comm, &group));
  WEFT_MPI_CHECK(MPI_Comm_group(MPI_COMM_WORLD, &world_group));
  std::vector<int> local(size), world(size);
  for (int i = 0; i < size; ++i) local[i] = i;
  WEFT_MPI_CHECK(MPI_Group_translate_ranks(group, size, local.data(), world_group, world.data()));
  MPI_Group_free(&group);
  MPI_Group_free(&world_group);
  return world;
}

std::unique_ptr<Communicator> mpi_world_communicator(std::string name) {
  int initialized = 0;
  WEFT_MPI_CHECK(MPI_Initialized(&initialized));
  WEFT_CHECK(initialized) << "MPI is not initialised: create a comm::MpiRuntime in main()";
  int level = MPI_THREAD_SINGLE;
  WEFT_MPI_CHECK(MPI_Query_thread(&level));
  WEFT_CHECK(level == MPI_THREAD_MULTIPLE)
      << "MPI was initialised at thread level " << level << ", weft needs MPI_THREAD_MULTIPLE";
  MPI_Comm world = MPI_COMM_NULL;
  WEFT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &world));
  return std::make_unique<MpiCommunicator>(world, std::move(name));
}

}  // namespace weft::comm
