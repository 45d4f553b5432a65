// What `weft serve` and `weft generate` share: the engine's flags, and building the mesh, the
// model's shard, the tokenizer (rank 0) and the serving engine from them.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "launch/flags.h"
#include "launch/session.h"
#include "models/causal_lm.h"
#include "parallel/mesh.h"
#include "runtime/serve/engine.h"
#include "runtime/serve/tokenizer.h"

namespace weft::cli {

// --tp --pp --max-num-seqs --max-num-batched-tokens --block-size --kv-cache-memory
// --num-kv-blocks --max-model-len --no-prefix-caching --scheduler --shift-parallel --sp
// --shift-threshold --token-weave --prefill-ranks --decode-ranks --prefill-tp --decode-tp
std::vector<FlagSpec> engine_flags();

struct EngineSetup {
  // Disaggregated serving: this rank's instance (the prefill ranks, or its decode instance).
  std::unique_ptr<comm::Communicator> group;
  std::unique_ptr<parallel::Mesh> mesh;
  std::unique_ptr<models::CausalLM> model;
  std::unique_ptr<models::CausalLM> shift_model;  // --shift-parallel: every weight, one rank's
  std::unique_ptr<serve::Tokenizer> tokenizer;    // rank 0; null when the directory has none
  std::unique_ptr<serve::Engine> engine;
};

// Collective (every phase ends in Session::agree). `max_queue`: requests queued beyond the
// running ones before submit() refuses.
absl::StatusOr<EngineSetup> setup_engine(Session& session, const Flags& flags, int64_t max_queue);

// "2GiB", "512MiB", "1.5GB", "1048576": bytes. Errors name the flag and the text.
absl::StatusOr<int64_t> parse_bytes(const std::string& flag, const std::string& text);

}  // namespace weft::cli
