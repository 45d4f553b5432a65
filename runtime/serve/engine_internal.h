// What the Engine's source files share (runtime/serve/engine.cc, engine_disagg.cc): a request's
// state on the engine thread and the step messages between an instance's ranks.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/serve/engine.h"

namespace weft::serve {

using Clock = std::chrono::steady_clock;

// Step messages from an instance's rank 0 to its other ranks: a header, then one i64 payload.
// kExport (disaggregated prefill ranks): send requests' keys and values to decode instances;
// kImport (disaggregated decode ranks): receive them.
enum StepCommand : int64_t { kShutdown = 0, kStep = 1, kExport = 2, kImport = 3 };
constexpr int64_t kHeaderSize = 5;  // command, tokens N, block-table rows R, max blocks, samples S

struct Engine::Request {
  int64_t id = 0;
  std::vector<int64_t> prompt;
  GenerationParams params;
  UpdateFn on_update;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<Detokenizer> detok;
  std::string text;      // everything decoded so far
  size_t emitted = 0;    // bytes of `text` already delivered
  size_t hold_back = 0;  // bytes kept back while they may begin a stop string
  int64_t generated = 0;
  int64_t cached_prompt = -1;  // set at its first scheduled chunk
  Clock::time_point submitted;
  std::optional<Clock::time_point> first_token;
  bool done = false;
  // Disaggregated serving, a prefill leader: this is the prefill of rank 0's request `front` for
  // decode instance `export_to` (its keys and values go there once computed), or -1.
  int export_to = -1;
  int64_t front = 0;
};

// Rank 0 of disaggregated serving: a request served by a decode instance, prefilled by a
// prefill instance (unless its prompt is short).
struct Engine::FrontRequest {
  int decode = 0;  // its instances (DisaggLayout numbering)
  int prefill = 0;
  int64_t prefill_tokens = 0;  // its share of the prefill instance's load, until forwarded
  UpdateFn on_update;
  std::vector<int64_t> prompt;
  GenerationParams params;
  bool forwarded = false;  // the instance has it
  bool cancelled = false;
  bool answered = false;  // an update has reached on_update (the client may have seen output)
  bool rerouted = false;  // moved off a lost decode instance: prefilled where it now decodes
};

}  // namespace weft::serve
