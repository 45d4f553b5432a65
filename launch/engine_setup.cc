#include "launch/engine_setup.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "kernels/threads.h"
#include "launch/commands.h"
#include "runtime/core/byte_size.h"
#include "runtime/core/status.h"

namespace weft::cli {

namespace {

// The tokenizer's streaming decoder as the engine's Detokenizer (special tokens skipped, as the
// OpenAI API and vLLM render completions).
class StreamDetokenizer final : public serve::Detokenizer {
 public:
  explicit StreamDetokenizer(const serve::Tokenizer& tok) : decoder_(tok, true) {}
  std::string push(int64_t id) override { return decoder_.push(static_cast<int32_t>(id)); }
  std::string finish() override { return decoder_.finish(); }

 private:
  serve::StreamDecoder decoder_;
};

constexpr int64_t kDefaultKvBytes = int64_t{1} << 30;

}  // namespace

std::vector<FlagSpec> engine_flags() {
  std::vector<FlagSpec> specs = device_flags();
  std::vector<FlagSpec> rest = {
      {"tp", FlagKind::kInt, "tensor-parallel degree: heads and KV cache split (default 1)", false,
       1},
      {"precision", FlagKind::kString,
       "f32 (default) or bf16: bf16 GEMM inputs and activations, f32 accumulation, f32 master "
       "weights and optimizer state (on CPU an exact emulation that saves no memory)"},
      {"pp", FlagKind::kInt, "pipeline stages: layers split (default 1)", false, 1},
      {"ep", FlagKind::kInt,
       "MoE: experts split over N ranks of a stage; tokens dispatched to them (default 1)", false,
       1},
      {"etp", FlagKind::kInt, "MoE: each expert split by features over N ranks (default 1)", false,
       1},
      {"max-num-seqs", FlagKind::kInt, "requests in one step at most (default 64)", false, 1},
      {"max-num-batched-tokens", FlagKind::kInt,
       "tokens in one step at most: decodes, then prefill chunks (default 512)", false, 1},
      {"block-size", FlagKind::kInt, "tokens per KV cache block (default 16)", false, 1},
      {"kv-cache-memory", FlagKind::kString,
       "KV cache per rank, e.g. 2GiB (default: max-num-seqs full-length requests, at most 1GiB)"},
      {"num-kv-blocks", FlagKind::kInt, "KV cache blocks (instead of --kv-cache-memory)", false, 1},
      {"max-model-len", FlagKind::kInt,
       "prompt + completion tokens at most (default: max_position_embeddings)", false, 1},
      {"no-prefix-caching", FlagKind::kBool, "do not reuse cached prompt blocks across requests"},
      {"scheduler", FlagKind::kString,
       "continuous (default: chunked prefill, stall-free) or static (a batch runs to completion)"},
      {"shift-parallel", FlagKind::kBool,
       "shift parallelism: steps above --shift-threshold tokens run sequence-parallel (Ulysses "
       "over all ranks, full weights on each), the others tensor-parallel over all ranks; one KV "
       "cache"},
      {"sp", FlagKind::kInt,
       "with --shift-parallel: the sequence-parallel degree (every rank; default the world)", false,
       1},
      {"token-weave", FlagKind::kBool,
       "TokenWeave under --tp: each step in two halves, one half's reduce-scatter/all-gather "
       "overlapping the other's compute; residual and norms on this rank's rows"},
      {"prefill-ranks", FlagKind::kInt,
       "disaggregated serving: the first N ranks prefill (instances of --prefill-tp); the rest "
       "decode",
       false, 1},
      {"decode-ranks", FlagKind::kInt, "disaggregated serving: the ranks that decode", false, 1},
      {"prefill-tp", FlagKind::kInt,
       "disaggregated serving: each prefill instance's tp (default --prefill-ranks: one "
       "instance)",
       false, 1},
      {"decode-tp", FlagKind::kInt,
       "disaggregated serving: each decode instance's tp (default --decode-ranks: one instance)",
       false, 1},
      {"disagg-local-prefill", FlagKind::kInt,
       "disaggregated serving: prompts of at most N tokens are prefilled on their decode "
       "instance, without a KV transfer (default 0)",
       false, 0},
      {"shift-threshold", FlagKind::kInt,
       "with --shift-parallel: tokens in a step above which it runs sequence-parallel (default "
       "256)",
       false, 0}};
  specs.insert(specs.end(), rest.begin(), rest.end());
  return specs;
}

namespace {

// --shift-parallel [--sp N] [--tp N]: both name every rank (SP mode with tp inside is not built).
absl::StatusOr<int> shift_degree(const Flags& flags, int world) {
  const int sp = static_cast<int>(flags.integer("sp", world));
  const int tp = static_cast<int>(flags.integer("tp", 1));
  if (!flags.boolean("shift-parallel")) {
    if (flags.has("sp") || flags.has("shift-threshold")) {
      return invalid_argument(flags.has("sp") ? "--sp" : "--shift-threshold",
                              " applies to --shift-parallel (serving splits one model over "
                              "--tp x --pp otherwise)");
    }
    return 0;
  }
  if (flags.has("pp") || flags.has("ep") || flags.has("etp")) {
    return invalid_argument("--shift-parallel runs on --sp ranks alone (no --pp, --ep, --etp)");
  }
  if (sp != world || (tp != 1 && tp != world)) {
    return invalid_argument("--shift-parallel --sp ", sp, " --tp ", tp, " on ", world,
                            " ranks: both modes span every rank (--sp ", world,
                            "; sequence-parallel mode with tp inside it is not built)");
  }
  return world;
}

// --prefill-ranks A --decode-ranks B [--prefill-tp a] [--decode-tp b]: the disaggregated
// layout, or nullopt when neither rank flag is given.
absl::StatusOr<std::optional<serve::DisaggLayout>> disagg_layout(const Flags& flags, int world) {
  if (!flags.has("prefill-ranks") && !flags.has("decode-ranks")) {
    for (const char* f : {"prefill-tp", "decode-tp", "disagg-local-prefill"}) {
      if (flags.has(f)) {
        return invalid_argument("--", f, " applies to --prefill-ranks/--decode-ranks");
      }
    }
    return std::nullopt;
  }
  serve::DisaggLayout l;
  l.prefill_ranks = static_cast<int>(flags.integer("prefill-ranks", 1));
  l.decode_ranks = static_cast<int>(flags.integer("decode-ranks", world - l.prefill_ranks));
  l.decode_tp = static_cast<int>(flags.integer("decode-tp", l.decode_ranks));
  if (l.prefill_ranks + l.decode_ranks != world || l.decode_ranks < 1) {
    return invalid_argument("--prefill-ranks ", l.prefill_ranks, " + --decode-ranks ",
                            l.decode_ranks, " must be the ", world, " ranks, each at least 1");
  }
  l.prefill_tp = static_cast<int>(flags.integer("prefill-tp", l.prefill_ranks));
  if (l.prefill_tp < 1 || l.prefill_ranks % l.prefill_tp != 0) {
    return invalid_argument("--prefill-tp ", l.prefill_tp, " does not divide --prefill-ranks ",
                            l.prefill_ranks);
  }
  if (l.decode_tp < 1 || l.decode_ranks % l.decode_tp != 0) {
    return invalid_argument("--decode-tp ", l.decode_tp, " does not divide --decode-ranks ",
                            l.decode_ranks);
  }
  for (const char* f :
       {"tp", "pp", "ep", "etp", "shift-parallel", "token-weave", "no-prefix-caching"}) {
    if (flags.has(f)) {
      return invalid_argument("--", f,
                              " with disaggregated serving: each instance is tensor-parallel over "
                              "its own ranks (--prefill-ranks, --decode-tp), and the decode "
                              "instances reuse the transferred blocks as cached prefixes");
    }
  }
  return l;
}

}  // namespace

absl::StatusOr<int64_t> parse_bytes(const std::string& flag, const std::string& text) {
  const std::optional<int64_t> bytes = parse_byte_size(text);
  if (!bytes) {
    return invalid_argument("--", flag, " '", text, "' is not a size (e.g. 2GiB, 512MiB, 1e9)");
  }
  return *bytes;
}

absl::StatusOr<EngineSetup> setup_engine(Session& session, const Flags& flags, int64_t max_queue) {
  EngineSetup out;
  // A serving step multiplies a few rows at a time: BLAS threads spinning for so little work
  // cost more than they bring, and the HTTP front door and the clients need a core. Unless
  // OPENBLAS_NUM_THREADS / WEFT_NUM_THREADS say otherwise, leave one core free (measured in
  // bench/RESULTS.md: 1 thread decodes 2.7x faster than 2 on two cores).
  if (std::getenv("OPENBLAS_NUM_THREADS") == nullptr &&
      std::getenv("WEFT_NUM_THREADS") == nullptr) {
    kernels::set_cpu_threads(std::max(1, kernels::cpu_threads() - 1));
  }
  const std::string dir = flags.str("model");
  const absl::StatusOr<int> shift = shift_degree(flags, session.size());
  WEFT_RETURN_IF_ERROR(session.agree(shift.status()));
  const absl::StatusOr<std::optional<serve::DisaggLayout>> disagg =
      disagg_layout(flags, session.size());
  WEFT_RETURN_IF_ERROR(session.agree(disagg.status()));
  // Disaggregated: this rank's instance (prefill, or its decode instance) is its own world.
  comm::Communicator* group = &session.compute_world();
  bool leads = session.is_root();  // loads a tokenizer: rank 0, and each decode leader
  if (disagg->has_value()) {
    const serve::DisaggLayout& l = **disagg;
    const int r = session.rank();
    out.group = session.compute_world().split(l.instance_of(r), r, "serving_instance");
    group = out.group.get();
    leads = r == l.leader(l.instance_of(r));
  }
  absl::StatusOr<parallel::ParallelDims> dims =
      disagg->has_value()
          ? parallel::resolve_dims(group->size(), group->size(), 1, 1, 1, 1)
          : parallel::resolve_dims(session.size(), *shift > 0 ? *shift : flags.integer("tp", 1),
                                   flags.integer("pp", 1), 1, flags.integer("ep", 1),
                                   flags.integer("etp", 1));
  absl::Status valid = dims.status();
  if (valid.ok() && dims->dp != 1) {
    valid = invalid_argument("serving splits one model over all ranks: ", session.size(),
                             " ranks need --tp x --pp = ", session.size(), " (got --tp ", dims->tp,
                             " --pp ", dims->pp, ")");
  }
  serve::EngineConfig config;
  config.scheduler.max_num_seqs = static_cast<int>(flags.integer("max-num-seqs", 64));
  config.scheduler.max_num_batched_tokens =
      static_cast<int>(flags.integer("max-num-batched-tokens", 512));
  const std::string policy = flags.str("scheduler", "continuous");
  if (policy == "static") {
    config.scheduler.policy = serve::SchedulerPolicy::kStatic;
  } else if (policy != "continuous") {
    valid.Update(invalid_argument("--scheduler '", policy, "': choose continuous or static"));
  }
  config.block_size = static_cast<int>(flags.integer("block-size", 16));
  config.num_blocks = flags.integer("num-kv-blocks", 0);
  if (flags.has("kv-cache-memory") && flags.has("num-kv-blocks")) {
    valid.Update(invalid_argument("give --kv-cache-memory or --num-kv-blocks, not both"));
  }
  if (flags.has("kv-cache-memory")) {
    absl::StatusOr<int64_t> bytes = parse_bytes("kv-cache-memory", flags.str("kv-cache-memory"));
    if (bytes.ok()) config.kv_cache_bytes = *bytes;
    valid.Update(bytes.status());
  }
  config.max_model_len = flags.integer("max-model-len", 0);
  config.max_queue = max_queue;
  config.prefix_caching = !flags.boolean("no-prefix-caching");
  config.eos_ids = serve::read_eos_ids(dir);
  if (*shift > 0) config.shift_threshold = flags.integer("shift-threshold", 256);
  config.disagg_local_prefill = flags.integer("disagg-local-prefill", 0);
  WEFT_RETURN_IF_ERROR(session.agree(valid));

  out.mesh = parallel::Mesh::create(*group, *dims);
  absl::StatusOr<std::unique_ptr<models::CausalLM>> model = models::CausalLM::from_pretrained(
      dir, {.mesh = out.mesh.get(), .token_weave = flags.boolean("token-weave")});
  WEFT_RETURN_IF_ERROR(session.agree(model.status()));
  out.model = std::move(*model);
  if (*shift > 0) {
    // Sequence-parallel steps: every weight on every rank; the heads split as tp splits them.
    const io::ModelConfig& c = out.model->config();
    absl::Status heads;
    if (c.num_attention_heads % *shift != 0 || c.num_key_value_heads % *shift != 0) {
      heads = invalid_argument("--shift-parallel over ", *shift, " ranks: ", c.num_attention_heads,
                               " heads and ", c.num_key_value_heads,
                               " KV heads must both divide by it (Ulysses moves whole heads)");
    }
    WEFT_RETURN_IF_ERROR(session.agree(heads));
    absl::StatusOr<std::unique_ptr<models::CausalLM>> full = models::CausalLM::from_pretrained(dir);
    WEFT_RETURN_IF_ERROR(session.agree(full.status()));
    out.shift_model = std::move(*full);
  }
  absl::Status tok_status;
  if (leads) {
    absl::StatusOr<std::unique_ptr<serve::Tokenizer>> tok = serve::Tokenizer::load(dir);
    if (tok.ok()) {
      out.tokenizer = std::move(*tok);
      if (out.tokenizer->vocab_size() > out.model->config().vocab_size) {
        tok_status = invalid_argument(
            "the tokenizer of ", dir, " has ", out.tokenizer->vocab_size(),
            " tokens, more than the model's vocab_size ", out.model->config().vocab_size);
      }
      if (config.eos_ids.empty()) {
        for (int32_t id : out.tokenizer->eos_token_ids()) config.eos_ids.push_back(id);
      }
    } else if (!absl::IsNotFound(tok.status())) {
      tok_status = tok.status();
    }
  }
  WEFT_RETURN_IF_ERROR(session.agree(tok_status));
  if (config.num_blocks == 0 && config.kv_cache_bytes == 0) {
    // Enough for max-num-seqs requests of the full length, at most 1GiB per rank.
    absl::StatusOr<int64_t> block_bytes = out.model->paged_cache_block_bytes(config.block_size);
    const int64_t len = config.max_model_len > 0 ? config.max_model_len
                                                 : out.model->config().max_position_embeddings;
    const int64_t blocks =
        config.scheduler.max_num_seqs * ((len + config.block_size - 1) / config.block_size);
    config.kv_cache_bytes =
        block_bytes.ok() ? std::min(kDefaultKvBytes, blocks * *block_bytes) : kDefaultKvBytes;
  }
  serve::DetokenizerFactory detok;
  if (out.tokenizer != nullptr) {
    const serve::Tokenizer* tok = out.tokenizer.get();
    detok = [tok] { return std::make_unique<StreamDetokenizer>(*tok); };
  }
  absl::Status heads;
  if (disagg->has_value()) {
    const int64_t kv = out.model->config().num_key_value_heads;
    if (kv % (*disagg)->prefill_tp != 0 || kv % (*disagg)->decode_tp != 0) {
      heads = invalid_argument("disaggregated serving moves whole KV heads: --prefill-tp ",
                               (*disagg)->prefill_tp, " and --decode-tp ", (*disagg)->decode_tp,
                               " must divide the ", kv, " KV heads");
    }
  }
  WEFT_RETURN_IF_ERROR(session.agree(heads));
  const int block_size = config.block_size;
  absl::StatusOr<std::unique_ptr<serve::Engine>> engine = serve::Engine::create(
      *out.model, *group, out.mesh.get(), std::move(config), std::move(detok));
  WEFT_RETURN_IF_ERROR(session.agree(engine.status()));
  out.engine = std::move(*engine);
  if (disagg->has_value()) {
    serve::DisaggLayout l = **disagg;
    l.kv_heads = out.model->config().num_key_value_heads;
    l.block_size = block_size;
    // A rank the health monitor wrote off (a dead decode instance's) is lost to the transfers.
    auto lost = [&session](int rank) {
      const comm::HealthMonitor* health = session.health();
      return health != nullptr && health->is_lost(rank);
    };
    out.engine->set_disaggregation(
        serve::Disaggregation::create(session.compute_world(), l, std::move(lost)));
  }
  if (out.shift_model != nullptr)
    out.engine->set_shift_model(out.shift_model.get(), &out.mesh->tp());
  return out;
}

}  // namespace weft::cli
