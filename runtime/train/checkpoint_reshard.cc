#include "runtime/train/checkpoint_reshard.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "models/model_layout.h"
#include "models/sharding.h"
#include "models/weight_shapes.h"
#include "parallel/pipeline_layout.h"
#include "runtime/core/status.h"
#include "runtime/io/model_config.h"
#include "runtime/train/checkpoint_files.h"
#include "runtime/train/checkpoint_reader.h"

namespace weft::train {
namespace fs = std::filesystem;
namespace {

constexpr char kLayerPrefix[] = "model.layers.";

// The layer index of "model.layers.<i>.<...>", or -1.
int layer_of(const std::string& name) {
  if (name.rfind(kLayerPrefix, 0) != 0) return -1;
  int layer = -1;
  const std::string rest = name.substr(sizeof(kLayerPrefix) - 1);
  if (!absl::SimpleAtoi(rest.substr(0, rest.find('.')), &layer)) return -1;
  return layer;
}

absl::StatusOr<parallel::Group> group_of(const std::string& name) {
  for (parallel::Group g : parallel::kAllGroups) {
    if (name == parallel::group_name(g)) return g;
  }
  return absl::InvalidArgumentError(absl::StrCat("checkpoint split group '", name,
                                                 "' is not a mesh group (tp, sp, dp, pp, ...)"));
}

// Where each tensor goes on the target mesh.
class TargetLayout {
 public:
  static absl::StatusOr<TargetLayout> create(const parallel::ParallelDims& dims, int num_layers) {
    TargetLayout layout;
    layout.dims_ = dims;
    for (int p = 0; p < dims.pp; ++p) {
      WEFT_ASSIGN_OR_RETURN(std::vector<parallel::LayerRange> chunks,
                            parallel::stage_layers(num_layers, dims.pp, 1, p));
      for (const parallel::LayerRange& r : chunks) {
        for (int l = r.first; l < r.last; ++l) layout.stage_of_layer_[l] = p;
      }
    }
    for (int r = dims.world_size() - 1; r >= 0; --r) {
      const parallel::Coord c = parallel::coord_of(r, dims);
      if (c.tp == 0 && c.sp == 0 && c.dp == 0) layout.stage_root_[c.pp] = r;
    }
    return layout;
  }

  [[nodiscard]] int stage_of(const std::string& name) const {
    const int layer = layer_of(name);
    if (layer >= 0) return stage_of_layer_.at(layer);
    return name.rfind("model.embed_tokens", 0) == 0 ? 0 : dims_.pp - 1;
  }
  // The world rank writing part `k` of a tensor split over `group` on pipeline stage `stage`.
  [[nodiscard]] int writer_of(int stage, parallel::Group group, int k) const {
    return parallel::group_ranks(stage_root_.at(stage), group, dims_)[k];
  }
  [[nodiscard]] int stage_root(int stage) const { return stage_root_.at(stage); }

 private:
  parallel::ParallelDims dims_;
  std::map<int, int> stage_of_layer_;
  std::map<int, int> stage_root_;  // pp stage -> its rank with every other coordinate 0
};

// How the target mesh holds a tensor: whole (parts 0), or cut along `dim` into `parts` blocks
// over `group`, block k held by group ranks k * copies .. (k + 1) * copies - 1 (KV heads
// replicated over tp / Hkv ranks) and written by the first of them.
struct TargetSplit {
  int dim = -1;
  parallel::Group group = parallel::Group::kTp;
  int parts = 0;
  int copies = 1;
};

// The split a save on the target mesh records: the model's own (models::hf_weight_shapes) for
// the dense weights it names, whatever the source mesh was; for expert weights and names the
// config does not list, the source's recorded split over the target's group. A group of one
// rank holds the tensor whole.
absl::StatusOr<TargetSplit> target_split(const io::TensorEntry& rule,
                                         const std::map<std::string, models::WeightShape>& model,
                                         const io::ModelConfig& config,
                                         const parallel::ParallelDims& dims) {
  const auto it = model.find(rule.name());
  if (it != model.end() && it->second.split != models::TpSplit::kExpert) {
    const models::WeightShape& w = it->second;
    if (w.split == models::TpSplit::kNone || dims.tp == 1) return TargetSplit{};
    const int parts = w.split == models::TpSplit::kKvHeads
                          ? static_cast<int>(std::min<int64_t>(dims.tp, config.num_key_value_heads))
                          : dims.tp;
    return TargetSplit{w.split_dim, parallel::Group::kTp, parts, dims.tp / parts};
  }
  if (rule.group().empty() || rule.split_dim() >= rule.global_shape_size()) return TargetSplit{};
  WEFT_ASSIGN_OR_RETURN(const parallel::Group group, group_of(rule.group()));
  const int size = static_cast<int>(parallel::group_ranks(0, group, dims).size());
  if (size == 1) return TargetSplit{};
  return TargetSplit{rule.split_dim(), group, size, 1};
}

// The entry whose split rule `entry` follows: its parameter for an optimizer moment.
const io::TensorEntry& rule_of(const CheckpointReader& reader, const io::TensorEntry& entry) {
  if (!is_optimizer_state(entry.name())) return entry;
  const std::string base = entry.name().substr(0, entry.name().rfind('.'));
  absl::StatusOr<const io::TensorEntry*> param = reader.entry(base);
  return param.ok() ? **param : entry;
}

}  // namespace

absl::StatusOr<parallel::ParallelDims> parse_mesh_spec(const std::string& spec) {
  std::map<std::string, int> degrees = {{"dp", 1}, {"pp", 1}, {"tp", 1},
                                        {"sp", 1}, {"ep", 1}, {"etp", 1}};
  std::map<std::string, bool> seen;
  for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
    std::vector<std::string> kv = absl::StrSplit(item, '=');
    int value = 0;
    if (kv.size() != 2 || !degrees.count(kv[0]) || seen[kv[0]] ||
        !absl::SimpleAtoi(kv[1], &value) || value < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--to-mesh '", spec, "': '", std::string(item),
          "' is not KEY=N with KEY one of dp, pp, tp, sp, ep, etp (once each) and N >= 1"));
    }
    seen[kv[0]] = true;
    degrees[kv[0]] = value;
  }
  const int world = degrees["dp"] * degrees["pp"] * degrees["tp"] * degrees["sp"];
  return parallel::resolve_dims(world, degrees["tp"], degrees["pp"], degrees["sp"], degrees["ep"],
                                degrees["etp"]);
}

absl::StatusOr<std::string> reshard_checkpoint(const std::string& from, const std::string& to,
                                               const parallel::ParallelDims& dims) {
  WEFT_ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, CheckpointReader::open(from));
  // The same mesh rules as `weft train`: a checkpoint no run could load is not written.
  WEFT_ASSIGN_OR_RETURN(const io::ModelConfig config,
                        io::parse_model_config(reader->model_config_json()));
  WEFT_RETURN_IF_ERROR(models::check_mesh_fits(config, dims));
  int num_layers = 0;
  for (const io::TensorEntry& e : reader->manifest().tensors()) {
    num_layers = std::max(num_layers, layer_of(e.name()) + 1);
  }
  WEFT_ASSIGN_OR_RETURN(TargetLayout layout, TargetLayout::create(dims, std::max(num_layers, 1)));
  std::map<std::string, models::WeightShape> model;
  for (models::WeightShape& w : models::hf_weight_shapes(config)) model[w.name] = std::move(w);

  std::vector<std::vector<CheckpointTensor>> per_rank(dims.world_size());
  for (const io::TensorEntry& e : reader->manifest().tensors()) {
    const Shape global(e.global_shape().begin(), e.global_shape().end());
    const int stage = layout.stage_of(e.name());
    WEFT_ASSIGN_OR_RETURN(const TargetSplit split,
                          target_split(rule_of(*reader, e), model, config, dims));
    if (split.parts == 0) {
      WEFT_ASSIGN_OR_RETURN(Tensor whole, reader->read(e.name()));
      per_rank[layout.stage_root(stage)].push_back({e.name(), whole, global, {}, -1, ""});
      continue;
    }
    const int d = split.dim;
    for (int k = 0; k < split.parts; ++k) {
      // Blocks as the model cuts the vocabulary (an even split when `parts` divides the
      // dimension); a block that starts past the end holds nothing and is not written.
      const models::ShardExtent block =
          models::shard_extent(global[d], {split.parts, k, 0, /*padded=*/true});
      if (block.length <= 0) continue;
      std::vector<int64_t> offsets(global.size(), 0);
      std::vector<int64_t> lengths(global.begin(), global.end());
      offsets[d] = block.offset;
      lengths[d] = block.length;
      WEFT_ASSIGN_OR_RETURN(Tensor slice, reader->read_slice(e.name(), offsets, lengths));
      per_rank[layout.writer_of(stage, split.group, k * split.copies)].push_back(
          {e.name(), slice, global, offsets, d, std::string(parallel::group_name(split.group))});
    }
  }

  io::CheckpointManifest header = reader->manifest();
  *header.mutable_mesh() = mesh_record(dims);
  const std::string final_dir = (fs::path(to) / step_dir_name(header.step())).string();
  const std::string tmp_dir = final_dir + ".tmp";
  WEFT_RETURN_IF_ERROR(prepare_tmp_dir(tmp_dir));
  std::vector<io::CheckpointManifest> parts;
  for (int r = 0; r < dims.world_size(); ++r) {
    WEFT_ASSIGN_OR_RETURN(io::CheckpointManifest part, write_shard(tmp_dir, r, per_rank[r]));
    parts.push_back(std::move(part));
  }
  WEFT_ASSIGN_OR_RETURN(io::CheckpointManifest merged, merge_parts(header, parts));
  WEFT_RETURN_IF_ERROR(commit_checkpoint(tmp_dir, final_dir, merged));
  return final_dir;
}

}  // namespace weft::train
