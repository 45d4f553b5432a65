// weft ckpt inspect|verify|export|reshard --from CKPT [--to DIR] [--to-mesh tp=2,pp=1,dp=2]
//   inspect  what a checkpoint holds: step, data position, mesh, files, tensors and their chunks
//   verify   file sizes and SHA-256 checksums, and that every tensor is fully covered
//   export   a Hugging Face model directory of the weights: config.json as the run's, safetensors
//            (sharded with an index past --max-shard-size, default 5GB as transformers), and
//            the source model directory's tokenizer files and generation_config.json
//   reshard  an offline rewrite into DIR/step-N whose shard files follow another mesh
// CKPT may be a checkpoint directory or a parent holding several: the newest complete one is
// used. Runs on rank 0.
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "comm/activity.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "runtime/core/dtype.h"
#include "runtime/core/status.h"
#include "runtime/io/file_util.h"
#include "runtime/io/hf_model_files.h"
#include "runtime/io/safetensors.h"
#include "runtime/train/checkpoint.h"
#include "runtime/train/checkpoint_chunks.h"
#include "runtime/train/checkpoint_reshard.h"

namespace weft::cli {
namespace {

std::string shape_of(const google::protobuf::RepeatedField<int64_t>& dims) {
  return shape_str({dims.begin(), dims.end()});
}

absl::Status inspect(const std::string& from) {
  WEFT_ASSIGN_OR_RETURN(std::unique_ptr<train::CheckpointReader> reader,
                        train::CheckpointReader::open(from));
  const io::CheckpointManifest& m = reader->manifest();
  const io::MeshRecord& mesh = m.mesh();
  const std::string order =
      m.has_data_seed() ? absl::StrCat(" (shuffled by data seed ", m.data_seed(), ")") : "";
  std::printf("checkpoint %s\n  step %lld, data position %lld sequences%s, format %d\n",
              reader->path().c_str(), static_cast<long long>(m.step()),
              static_cast<long long>(m.data_position()), order.c_str(), m.format_version());
  std::printf("  source model %s\n",
              m.source_model_dir().empty() ? "(none recorded)" : m.source_model_dir().c_str());
  std::printf("  saved on mesh dp=%d pp=%d tp=%d sp=%d ep=%d etp=%d\n", mesh.dp(), mesh.pp(),
              mesh.tp(), mesh.sp(), mesh.ep(), mesh.etp());
  for (const io::ShardFile& f : m.files()) {
    std::printf("  file %s (rank %d)  %llu bytes  sha256 %s\n", f.file().c_str(), f.rank(),
                static_cast<unsigned long long>(f.bytes()), f.sha256().c_str());
  }
  int64_t weights = 0;
  for (const io::TensorEntry& e : m.tensors()) {
    const std::string split = e.group().empty()
                                  ? "replicated"
                                  : absl::StrCat("split dim ", e.split_dim(), " over ", e.group());
    if (!train::is_optimizer_state(e.name())) weights += train::box_volume(train::whole_box(e));
    std::printf("  %-60s %s %s  %s, %d chunk%s\n", e.name().c_str(), e.dtype().c_str(),
                shape_of(e.global_shape()).c_str(), split.c_str(), e.chunks_size(),
                e.chunks_size() == 1 ? "" : "s");
    for (const io::TensorChunk& c : e.chunks()) {
      std::printf("      %s  offsets [%s] lengths [%s]\n", c.file().c_str(),
                  absl::StrJoin(c.offsets(), ",").c_str(), absl::StrJoin(c.lengths(), ",").c_str());
    }
  }
  std::printf("  %d tensors, %lld model parameters\n", m.tensors_size(),
              static_cast<long long>(weights));
  return absl::OkStatus();
}

absl::Status verify(const std::string& from) {
  WEFT_ASSIGN_OR_RETURN(train::VerifyReport report, train::verify_checkpoint(from));
  for (const std::string& leftover : report.leftovers) {
    std::printf(
        "note: %s is the leftover of an interrupted save (not a checkpoint; the next "
        "weft train --save into this directory removes it)\n",
        leftover.c_str());
  }
  std::printf("OK: %s verified (manifest, sizes, checksums, coverage)\n",
              report.checkpoint.c_str());
  return absl::OkStatus();
}

absl::Status export_hf(const std::string& from, const std::string& to, const std::string& dtype,
                       const std::string& max_shard_size) {
  if (to.empty()) return invalid_argument("export needs --to DIR");
  absl::StatusOr<uint64_t> shard_bytes = io::parse_size(max_shard_size);
  if (!shard_bytes.ok())
    return invalid_argument("--max-shard-size: ", shard_bytes.status().message());
  DType out_dtype = DType::kF32;
  if (dtype == "bf16") {
    out_dtype = DType::kBF16;
  } else if (dtype == "f16") {
    out_dtype = DType::kF16;
  } else if (!dtype.empty() && dtype != "f32") {
    return invalid_argument("--dtype ", dtype, " is not one of f32, bf16, f16");
  }
  WEFT_ASSIGN_OR_RETURN(train::LoadedCheckpoint ckpt, train::load_checkpoint(from));
  io::NamedTensors weights;
  for (const io::TensorEntry& e : ckpt.manifest.tensors()) {
    if (train::is_optimizer_state(e.name())) continue;
    weights.emplace_back(e.name(), ckpt.tensors.at(e.name()).to_dtype(out_dtype));
  }
  std::error_code ec;
  std::filesystem::create_directories(to, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", to, ": ", ec.message()));
  WEFT_RETURN_IF_ERROR(io::write_sharded_safetensors(to, weights, *shard_bytes));
  const std::string& config = ckpt.manifest.model_config_json();
  WEFT_RETURN_IF_ERROR(
      io::write_file_atomic((std::filesystem::path(to) / "config.json").string(), config));
  const std::string& source = ckpt.manifest.source_model_dir();
  WEFT_ASSIGN_OR_RETURN(const io::HfSideFiles files, io::write_hf_side_files(to, source, config));
  std::printf("exported %zu tensors of %s (step %lld) to %s\n", weights.size(), ckpt.path.c_str(),
              static_cast<long long>(ckpt.manifest.step()), to.c_str());
  std::printf("  copied from the source model %s: %s\n",
              source.empty() ? "(none recorded)" : source.c_str(),
              files.copied.empty() ? "nothing" : absl::StrJoin(files.copied, ", ").c_str());
  if (files.generation_from_config) {
    std::printf("  generation_config.json written from config.json's token ids\n");
  }
  return absl::OkStatus();
}

absl::Status reshard(const std::string& from, const std::string& to, const std::string& mesh) {
  if (to.empty() || mesh.empty()) return invalid_argument("reshard needs --to DIR and --to-mesh");
  WEFT_ASSIGN_OR_RETURN(parallel::ParallelDims dims, train::parse_mesh_spec(mesh));
  WEFT_ASSIGN_OR_RETURN(std::string written, train::reshard_checkpoint(from, to, dims));
  std::printf("resharded %s to %s (mesh %s, %d ranks)\n", from.c_str(), written.c_str(),
              mesh.c_str(), dims.world_size());
  return absl::OkStatus();
}

constexpr char kCkptUsage[] =
    "usage: weft ckpt ACTION --from CKPT [flags]   (weft ckpt ACTION --help for its flags)\n"
    "  inspect   what a checkpoint holds: step, data position, mesh, files, tensors, chunks\n"
    "  verify    manifest, file sizes, SHA-256 checksums and coverage; lists leftovers of\n"
    "            interrupted saves\n"
    "  export    a Hugging Face model directory of the weights (--to DIR)\n"
    "  reshard   rewrite into DIR/step-N for another mesh (--to DIR --to-mesh tp=2,pp=1,dp=2)\n"
    "CKPT is a checkpoint directory or a parent holding several (the newest is used).\n";

}  // namespace

absl::Status run_ckpt(Session& session, const Args& args) {
  const std::string action = args.empty() ? "" : args[0];
  if (action == "--help" || action == "-h" || action == "help") {
    if (session.is_root()) std::fputs(kCkptUsage, stdout);
    return absl::OkStatus();
  }
  if (action != "inspect" && action != "verify" && action != "export" && action != "reshard") {
    return session.agree(invalid_argument(
        "ckpt needs an action: inspect, verify, export or reshard (weft ckpt ACTION --from CKPT)"));
  }
  WEFT_ASSIGN_OR_RETURN(
      Flags flags,
      parse_flags(
          session, "ckpt " + action, "checkpoint tools", Args(args.begin() + 1, args.end()),
          {{"from", FlagKind::kString, "checkpoint directory (or its parent)", true},
           {"to", FlagKind::kString,
            "export: the Hugging Face model directory; reshard: the new checkpoint's parent"},
           {"to-mesh", FlagKind::kString, "reshard: the target mesh, e.g. tp=2,pp=1,dp=2"},
           {"dtype", FlagKind::kString, "export: f32 (default), bf16 or f16"},
           {"max-shard-size", FlagKind::kString,
            "export: largest safetensors file, e.g. 5GB (default), 500MB, 2GiB or bytes"}}));
  absl::Status status;
  if (session.is_root()) {
    if (action == "inspect") status = inspect(flags.str("from"));
    if (action == "verify") status = verify(flags.str("from"));
    if (action == "export")
      status = export_hf(flags.str("from"), flags.str("to"), flags.str("dtype"),
                         flags.str("max-shard-size", "5GB"));
    if (action == "reshard")
      status = reshard(flags.str("from"), flags.str("to"), flags.str("to-mesh"));
  }
  // Rank 0 alone works (an export or a SHA-256 check may take minutes): the others' wait is idle.
  const comm::IdleWaitScope idle;
  return session.agree(status);
}

}  // namespace weft::cli
