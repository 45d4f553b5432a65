// weft-mpi-ranks: 2 4
// Sharded asynchronous checkpoints: N ranks save row-split, column-split (even and uneven) and
// replicated tensors; any box of any tensor reads back bit-exact, as a load under another mesh
// asks; the snapshot isolates the saved values; a failure on one rank fails every rank; the
// newest complete checkpoint wins; verify catches corruption, a missing shard and incomplete
// coverage; reshard rewrites to another mesh's layout.
#include "runtime/train/checkpoint.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "comm/mpi_communicator.h"
#include "runtime/io/file_util.h"
#include "runtime/train/checkpoint_reshard.h"
#include "tests/support/test_util.h"

namespace weft::train {
namespace {
namespace fs = std::filesystem;

struct Extent {
  int64_t begin = 0;
  int64_t size = 0;
};

// Part `k` of `parts` of [0, n): the first n % parts parts one longer.
Extent part_of(int64_t n, int parts, int k) {
  const int64_t base = n / parts;
  const int64_t extra = n % parts;
  return {k * base + std::min<int64_t>(k, extra), base + (k < extra ? 1 : 0)};
}

// A synthetic model: name, global shape, split dim (-1: replicated).
struct Spec {
  std::string name;
  Shape shape;
  int split_dim;
};

const std::vector<Spec>& model_specs() {
  static const std::vector<Spec> specs = {
      {"model.embed_tokens.weight", {12, 6}, 0},              // rows, even
      {"model.layers.0.self_attn.o_proj.weight", {5, 8}, 1},  // columns, even
      {"model.layers.0.self_attn.o_proj.weight.exp_avg", {5, 8}, 1},
      {"model.layers.1.mlp.experts", {4, 6, 3}, 1},  // middle dim, uneven at 4
      {"lm_head.weight", {10, 5}, 0},                // rows, uneven at 4
      {"model.norm.weight", {5}, -1},                // replicated
  };
  return specs;
}

Tensor global_value(const Spec& spec) {
  return testing::random_tensor(spec.shape, std::hash<std::string>()(spec.name));
}

// The box [offsets, offsets + lengths) of `global`, element by element.
Tensor extract(const Tensor& global, const std::vector<int64_t>& offsets,
               const std::vector<int64_t>& lengths) {
  Tensor out = Tensor::empty(Shape(lengths.begin(), lengths.end()));
  const Shape& g = global.shape();
  for (int64_t i = 0; i < out.numel(); ++i) {
    int64_t rest = i;
    int64_t at = 0;
    int64_t stride = 1;
    for (int d = static_cast<int>(lengths.size()) - 1; d >= 0; --d) {
      at += (offsets[d] + rest % lengths[d]) * stride;
      rest /= lengths[d];
      stride *= g[d];
    }
    out.data<float>()[i] = global.data<float>()[at];
  }
  return out;
}

// Part `k` of `parts` along `dim` (the whole tensor when dim < 0).
void box_along(const Shape& shape, int dim, int parts, int k, std::vector<int64_t>& offsets,
               std::vector<int64_t>& lengths) {
  offsets.assign(shape.size(), 0);
  lengths.assign(shape.begin(), shape.end());
  if (dim < 0) return;
  const Extent e = part_of(shape[dim], parts, k);
  offsets[dim] = e.begin;
  lengths[dim] = e.size;
}

// This rank's tensors: its part of every split tensor over "tp" = all ranks; rank 0 alone
// writes the replicated ones.
std::vector<CheckpointTensor> my_tensors(int rank, int world) {
  std::vector<CheckpointTensor> out;
  for (const Spec& s : model_specs()) {
    if (s.split_dim < 0 && rank != 0) continue;
    std::vector<int64_t> offsets, lengths;
    box_along(s.shape, s.split_dim, world, rank, offsets, lengths);
    out.push_back({s.name, extract(global_value(s), offsets, lengths), s.shape, offsets,
                   s.split_dim, s.split_dim < 0 ? "" : "tp"});
  }
  return out;
}

io::CheckpointManifest header(int64_t step, int world) {
  io::CheckpointManifest m;
  m.set_format_version(2);
  m.set_step(step);
  m.set_data_position(step * 8);
  m.mutable_mesh()->set_tp(world);
  m.mutable_mesh()->set_dp(1);
  m.mutable_mesh()->set_pp(1);
  // A config that the meshes of the reshard test fit (tp 2 and 3 divide heads, intermediate size
  // and vocabulary; two layers for pp 2).
  m.set_model_config_json(
      R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 12, "hidden_size": 12,
          "intermediate_size": 6, "num_hidden_layers": 2, "num_attention_heads": 6,
          "num_key_value_heads": 6, "max_position_embeddings": 16})");
  return m;
}

// A fresh directory every rank sees (rank 0 makes it and broadcasts its path).
std::string shared_temp_dir(comm::Communicator& world, const std::string& prefix) {
  Tensor path = Tensor::zeros({512}, DType::kU8);
  if (world.rank() == 0) {
    const std::string dir = testing::make_temp_dir(prefix);
    std::memcpy(path.raw(), dir.data(), dir.size());
  }
  world.broadcast(path, 0);
  return std::string(static_cast<const char*>(path.raw()));
}

void save(comm::Communicator& world, const std::string& dir, int64_t step) {
  CheckpointWriter writer(world);
  writer.save_async(dir, header(step, world.size()), my_tensors(world.rank(), world.size()));
  ASSERT_TRUE(writer.wait().ok());
}

void expect_reads_every_partition(const CheckpointReader& reader) {
  for (const Spec& s : model_specs()) {
    const Tensor global = global_value(s);
    for (int dim = 0; dim < static_cast<int>(s.shape.size()); ++dim) {
      for (int parts : {1, 2, 3, 5}) {
        for (int k = 0; k < parts; ++k) {
          std::vector<int64_t> offsets, lengths;
          box_along(s.shape, dim, parts, k, offsets, lengths);
          absl::StatusOr<Tensor> got = reader.read_slice(s.name, offsets, lengths);
          ASSERT_TRUE(got.ok()) << got.status();
          EXPECT_EQ(got->to_floats(), extract(global, offsets, lengths).to_floats())
              << s.name << " dim " << dim << " part " << k << "/" << parts;
        }
      }
    }
  }
}

TEST(Checkpoint, ShardsSavedByEveryRankReadBackBitExactUnderAnyPartition) {
  auto world = comm::mpi_world_communicator();
  const std::string dir = shared_temp_dir(*world, "weft_ckpt_sharded");
  save(*world, dir, 3);
  auto reader = CheckpointReader::open(dir);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->path(), dir + "/step-00000003");
  EXPECT_EQ((*reader)->step(), 3);
  EXPECT_EQ((*reader)->data_position(), 24);
  EXPECT_EQ((*reader)->mesh().tp(), world->size());
  EXPECT_EQ((*reader)->manifest().files_size(), world->size());
  for (const Spec& s : model_specs()) {
    auto entry = (*reader)->entry(s.name);
    ASSERT_TRUE(entry.ok());
    EXPECT_EQ((*entry)->chunks_size(), s.split_dim < 0 ? 1 : world->size()) << s.name;
    EXPECT_EQ((*reader)->read(s.name)->to_floats(), global_value(s).to_floats()) << s.name;
  }
  expect_reads_every_partition(**reader);
  // A box crossing every chunk boundary.
  const Spec& rows = model_specs()[0];
  EXPECT_EQ((*reader)->read_slice(rows.name, {1, 2}, {10, 3})->to_floats(),
            extract(global_value(rows), {1, 2}, {10, 3}).to_floats());
  EXPECT_EQ((*reader)->read_slice("model.missing", {0}, {1}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ((*reader)->read_slice(rows.name, {4, 0}, {9, 6}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(verify_checkpoint(dir).ok());
  world->barrier();
}

TEST(Checkpoint, CallerMayOverwriteItsTensorsOnceTheSnapshotIsTaken) {
  auto world = comm::mpi_world_communicator();
  const std::string dir = shared_temp_dir(*world, "weft_ckpt_async");
  std::vector<CheckpointTensor> tensors = my_tensors(world->rank(), world->size());
  CheckpointWriter writer(*world);
  writer.save_async(dir, header(1, world->size()), tensors);  // shares the tensors' storage
  writer.wait_snapshot();
  for (CheckpointTensor& t : tensors) std::fill_n(t.value.data<float>(), t.value.numel(), 999.0f);
  ASSERT_TRUE(writer.wait().ok());
  auto reader = CheckpointReader::open(dir);
  ASSERT_TRUE(reader.ok()) << reader.status();
  for (const Spec& s : model_specs()) {
    EXPECT_EQ((*reader)->read(s.name)->to_floats(), global_value(s).to_floats()) << s.name;
  }
  world->barrier();
}

TEST(Checkpoint, AFailureOnOneRankFailsTheSaveOnEveryRank) {
  auto world = comm::mpi_world_communicator();
  const std::string dir = shared_temp_dir(*world, "weft_ckpt_fail");
  CheckpointWriter writer(*world);
  // The last rank's chunk leaves its tensor.
  std::vector<CheckpointTensor> tensors = my_tensors(world->rank(), world->size());
  if (world->rank() == world->size() - 1) tensors[0].offsets[0] = 11;
  writer.save_async(dir, header(5, world->size()), tensors);
  absl::Status status = writer.wait();
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find(absl::StrCat("rank ", world->size() - 1)), std::string::npos)
      << status;
  EXPECT_EQ(status.message().find("rank 0"), std::string::npos) << status;
  world->barrier();
  EXPECT_FALSE(fs::exists(dir + "/step-00000005"));
  EXPECT_FALSE(fs::exists(dir + "/step-00000005.tmp"));

  // Rank 0 cannot create the directory: a file stands where it should go.
  const std::string blocked = dir + "/blocked";
  if (world->rank() == 0) ASSERT_TRUE(io::write_file_atomic(blocked, "x").ok());
  world->barrier();
  writer.save_async(blocked, header(6, world->size()), my_tensors(world->rank(), world->size()));
  status = writer.wait();
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("rank 0"), std::string::npos) << status;
  // The writer still works afterwards.
  writer.save_async(dir, header(7, world->size()), my_tensors(world->rank(), world->size()));
  EXPECT_TRUE(writer.wait().ok());
  world->barrier();
}

TEST(Checkpoint, ReplicasWrittenByTwoRanksFailTheSaveAsOverlapping) {
  auto world = comm::mpi_world_communicator();
  const std::string dir = shared_temp_dir(*world, "weft_ckpt_overlap");
  CheckpointWriter writer(*world);
  std::vector<CheckpointTensor> tensors = my_tensors(world->rank(), world->size());
  if (world->rank() == 1) tensors.push_back(my_tensors(0, world->size()).back());  // the norm
  writer.save_async(dir, header(2, world->size()), tensors);
  const absl::Status status = writer.wait();
  EXPECT_NE(status.message().find("model.norm.weight': chunks"), std::string::npos) << status;
  EXPECT_NE(status.message().find("overlap"), std::string::npos) << status;
  world->barrier();
  EXPECT_FALSE(find_latest_checkpoint(dir).ok());
  world->barrier();
}

TEST(Checkpoint, LeftoversAreIgnoredAndANewerStepWithoutManifestIsRefusedNotSkipped) {
  auto world = comm::mpi_world_communicator();
  const std::string dir = shared_temp_dir(*world, "weft_ckpt_latest");
  save(*world, dir, 1);
  save(*world, dir, 2);
  if (world->rank() == 0) {
    // What a crash mid-save leaves: never a checkpoint.
    fs::create_directories(dir + "/step-00000003.tmp");
    ASSERT_TRUE(io::write_file_atomic(dir + "/step-00000003.tmp/manifest.pb", "").ok());
  }
  world->barrier();
  EXPECT_EQ(*find_latest_checkpoint(dir), dir + "/step-00000002");
  EXPECT_EQ((*CheckpointReader::open(dir))->step(), 2);
  EXPECT_EQ(leftover_checkpoints(dir), std::vector<std::string>{dir + "/step-00000003.tmp"});
  world->barrier();
  if (world->rank() == 0) {
    // A step directory is renamed into place only with its manifest: one without it is damage,
    // reported with the newest complete checkpoint before it, never silently passed over.
    fs::create_directories(dir + "/step-00000004");
  }
  world->barrier();
  const absl::StatusOr<std::string> latest = find_latest_checkpoint(dir);
  EXPECT_EQ(latest.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(latest.status().message().find("step-00000004 has no manifest.pb"), std::string::npos)
      << latest.status();
  EXPECT_NE(latest.status().message().find("before it is " + dir + "/step-00000002"),
            std::string::npos)
      << latest.status();
  EXPECT_EQ(checkpoint_candidates(dir),
            (std::vector<std::string>{dir + "/step-00000004", dir + "/step-00000002",
                                      dir + "/step-00000001"}));
  world->barrier();
}

TEST(Checkpoint, VerifyCatchesAFlippedByteAMissingShardAndIncompleteCoverage) {
  auto world = comm::mpi_world_communicator();
  const std::string dir = shared_temp_dir(*world, "weft_ckpt_verify");
  save(*world, dir, 1);
  world->barrier();
  if (world->rank() == 0) {
    const std::string ckpt = dir + "/step-00000001";
    const std::string shard = ckpt + "/shard-00001.safetensors";
    ASSERT_TRUE(verify_checkpoint(dir).ok()) << verify_checkpoint(dir).status();
    std::string bytes = *io::read_file(shard);
    std::string flipped = bytes;
    flipped[flipped.size() - 3] ^= 0x01;
    ASSERT_TRUE(io::write_file_atomic(shard, flipped).ok());
    absl::Status status = verify_checkpoint(dir).status();
    EXPECT_NE(status.message().find("shard-00001.safetensors: checksum mismatch"),
              std::string::npos)
        << status;

    fs::remove(shard);
    status = verify_checkpoint(dir).status();
    EXPECT_NE(status.message().find("shard-00001.safetensors: missing"), std::string::npos)
        << status;
    EXPECT_FALSE((*CheckpointReader::open(dir))->read(model_specs()[0].name).ok());
    ASSERT_TRUE(io::write_file_atomic(shard, bytes).ok());
    EXPECT_TRUE(verify_checkpoint(dir).ok());

    // A manifest that lost one chunk of the row-split tensor (resealed, so that its checksum
    // holds and the coverage check is what refuses it).
    io::CheckpointManifest manifest = *read_manifest(ckpt);
    manifest.mutable_tensors(0)->mutable_chunks()->RemoveLast();
    manifest.set_manifest_sha256(manifest_digest(manifest));
    ASSERT_TRUE(io::write_file_atomic(ckpt + "/manifest.pb", manifest.SerializeAsString()).ok());
    status = verify_checkpoint(dir).status();
    EXPECT_NE(
        status.message().find(absl::StrCat("tensor '", model_specs()[0].name, "': chunks cover")),
        std::string::npos)
        << status;
    EXPECT_EQ(CheckpointReader::open(dir).status().code(), absl::StatusCode::kDataLoss);
  }
  world->barrier();
}

TEST(Checkpoint, ReshardFollowsTheTargetMeshAndKeepsEveryValue) {
  auto world = comm::mpi_world_communicator();
  const std::string dir = shared_temp_dir(*world, "weft_ckpt_reshard");
  save(*world, dir, 4);
  if (world->rank() == 0) {
    for (const std::string mesh : {"tp=2,pp=1,dp=2", "pp=2", "tp=3"}) {
      SCOPED_TRACE(mesh);
      const std::string to = dir + "/resharded-" + mesh;
      absl::StatusOr<parallel::ParallelDims> dims = parse_mesh_spec(mesh);
      ASSERT_TRUE(dims.ok()) << dims.status();
      absl::StatusOr<std::string> written = reshard_checkpoint(dir, to, *dims);
      ASSERT_TRUE(written.ok()) << written.status();
      EXPECT_EQ(*written, to + "/step-00000004");
      EXPECT_TRUE(verify_checkpoint(to).ok());
      auto reader = CheckpointReader::open(to);
      ASSERT_TRUE(reader.ok());
      EXPECT_EQ((*reader)->step(), 4);
      EXPECT_EQ((*reader)->mesh().tp(), dims->tp);
      EXPECT_EQ((*reader)->mesh().pp(), dims->pp);
      for (const Spec& s : model_specs()) {
        EXPECT_EQ((*reader)->read(s.name)->to_floats(), global_value(s).to_floats()) << s.name;
      }
      expect_reads_every_partition(**reader);
      // Split tensors are cut into tp parts as the vocabulary is (models::shard_extent: 8
      // columns over tp 3 are 3, 3 and 2); the moment follows its parameter.
      const io::TensorEntry& rows = **(*reader)->entry("model.embed_tokens.weight");
      EXPECT_EQ(rows.chunks_size(), dims->tp);
      const io::TensorEntry& moment =
          **(*reader)->entry("model.layers.0.self_attn.o_proj.weight.exp_avg");
      ASSERT_EQ(moment.chunks_size(), dims->tp);
      const int64_t block = (8 + dims->tp - 1) / dims->tp;
      for (int k = 0; k < dims->tp; ++k) {
        EXPECT_EQ(moment.chunks(k).offsets(1), k * block) << "part " << k;
        EXPECT_EQ(moment.chunks(k).lengths(1), std::min<int64_t>(block, 8 - k * block))
            << "part " << k;
      }
      // Stage 0 holds the embeddings, the last stage the head (world rank tp*dp*(pp-1)).
      EXPECT_EQ(rows.chunks(0).file(), "shard-00000.safetensors");
      const int last_stage_root = dims->tp * dims->dp * (dims->pp - 1);
      EXPECT_EQ((**(*reader)->entry("model.norm.weight")).chunks(0).file(),
                shard_file_name(last_stage_root));
    }
    EXPECT_FALSE(parse_mesh_spec("tp=2,tq=1").ok());
    EXPECT_FALSE(parse_mesh_spec("tp=0").ok());
  }
  world->barrier();
}

}  // namespace
}  // namespace weft::train
