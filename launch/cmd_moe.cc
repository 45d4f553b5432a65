// weft moe profile --model DIR --tokens FILE --ep N --out PLACEMENT.json
// Runs the model on one rank over the token file, counts for every MoE layer how often each
// pair of experts is chosen by the same token, and writes a per-layer expert placement over N
// ep ranks (balanced co-clustering, parallel/expert_placement.h) that `--speculative-moe
// PLACEMENT.json` reads. The file also records, per layer, the share of co-chosen pairs that
// land on one rank with the placement and with the contiguous default.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "models/causal_lm.h"
#include "models/moe_block.h"
#include "nlohmann/json.hpp"
#include "parallel/expert_placement.h"
#include "runtime/core/status.h"
#include "runtime/io/file_util.h"
#include "runtime/train/token_data.h"

namespace weft::cli {
namespace {

using nlohmann::json;

constexpr const char* kFormat = "weft-expert-placement";

absl::Status run_profile(Session& session, const Args& args) {
  WEFT_ASSIGN_OR_RETURN(
      Flags flags,
      parse_flags(session, "moe profile",
                  "routing statistics of a token file -> an expert placement for --ep N", args,
                  {{"model", FlagKind::kString, "Hugging Face MoE model directory", true},
                   {"tokens", FlagKind::kString, "token file: one sequence per line", true},
                   {"ep", FlagKind::kInt, "expert-parallel degree the placement is for", true, 1},
                   {"out", FlagKind::kString, "placement JSON to write", true}}));
  if (session.size() != 1) {
    return session.agree(
        invalid_argument("weft moe profile runs on one rank (got ", session.size(), ")"));
  }
  WEFT_ASSIGN_OR_RETURN(std::unique_ptr<models::CausalLM> model,
                        models::CausalLM::from_pretrained(flags.str("model"), {}));
  const io::ModelConfig& config = model->config();
  const int ep = static_cast<int>(flags.integer("ep"));
  if (!config.is_moe()) {
    return invalid_argument("the model of ", flags.str("model"), " has no MoE layers");
  }
  if (config.num_local_experts % ep != 0) {
    return invalid_argument("--ep ", ep, " does not divide num_local_experts ",
                            config.num_local_experts);
  }
  WEFT_ASSIGN_OR_RETURN(train::TokenFile data, train::TokenFile::load(flags.str("tokens")));
  const int64_t e_count = config.num_local_experts;
  std::map<int64_t, std::vector<double>> together;  // layer -> [E * E]
  for (auto [layer, moe] : model->moe_layers()) {
    std::vector<double>& t = together[layer];
    t.assign(e_count * e_count, 0);
    moe->set_routing_sink([&t, e_count](const Tensor& idx) {
      const std::vector<int64_t> choice = idx.to_ints();
      const int64_t k = idx.dim(1);
      for (int64_t n = 0; n < idx.dim(0); ++n) {
        for (int64_t a = 0; a < k; ++a) {
          for (int64_t b = 0; b < k; ++b) {
            if (a != b) t[choice[n * k + a] * e_count + choice[n * k + b]] += 1;
          }
        }
      }
    });
  }
  constexpr int64_t kBatch = 8;
  for (int64_t first = 0; first < data.num_sequences(); first += kBatch) {
    const Tensor tokens = data.sequences(first, std::min(kBatch, data.num_sequences() - first));
    WEFT_RETURN_IF_ERROR(model->check_tokens(tokens));
    (void)model->forward(tokens, {});
  }
  json out = {{"format", kFormat},
              {"ep", ep},
              {"num_experts", e_count},
              {"tokens", data.num_sequences() * data.seq_len()},
              {"layers", json::array()}};
  std::vector<int64_t> contiguous(e_count);
  for (int64_t e = 0; e < e_count; ++e) contiguous[e] = e;
  for (const auto& [layer, t] : together) {
    const std::vector<int64_t> placement = parallel::co_cluster_experts(t, e_count, ep);
    const double share = parallel::co_located_share(t, placement, ep);
    const double before = parallel::co_located_share(t, contiguous, ep);
    out["layers"].push_back({{"layer", layer},
                             {"placement", placement},
                             {"co_located", share},
                             {"co_located_contiguous", before}});
    std::printf("layer %lld: co-chosen expert pairs on one rank %.1f%% (contiguous %.1f%%)\n",
                static_cast<long long>(layer), 100 * share, 100 * before);
  }
  WEFT_RETURN_IF_ERROR(io::write_file_atomic(flags.str("out"), out.dump(2) + "\n"));
  std::printf("wrote %s\n", flags.str("out").c_str());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<std::vector<int64_t>>> load_expert_placement(
    const std::string& path, const io::ModelConfig& config, int ep) {
  WEFT_ASSIGN_OR_RETURN(const std::string text, io::read_file(path));
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& what) {
    return invalid_argument("expert placement ", path, ": ", what);
  };
  if (!j.is_object() || j.value("format", "") != kFormat || !j.contains("layers") ||
      !j["layers"].is_array()) {
    return bad("not a placement written by `weft moe profile`");
  }
  if (j.value("ep", 0) != ep) {
    return bad(absl::StrCat("written for --ep ", j.value("ep", 0), ", this run has --ep ", ep));
  }
  if (j.value("num_experts", int64_t{0}) != config.num_local_experts) {
    return bad(absl::StrCat("written for ", j.value("num_experts", int64_t{0}),
                            " experts, the model has ", config.num_local_experts));
  }
  std::vector<std::vector<int64_t>> placement(config.num_hidden_layers);
  for (const json& l : j["layers"]) {
    const int64_t layer = l.value("layer", int64_t{-1});
    if (layer < 0 || layer >= config.num_hidden_layers || !l.contains("placement") ||
        !l["placement"].is_array()) {
      return bad(absl::StrCat("layer entry ", l.dump(), " is malformed"));
    }
    for (const json& e : l["placement"]) {
      if (!e.is_number_integer()) return bad("a placement entry is not an expert index");
      placement[layer].push_back(e.get<int64_t>());
    }
  }
  return placement;
}

absl::StatusOr<MoePlacement> moe_placement(const std::string& model_dir, const std::string& path,
                                           int ep) {
  if (path.empty()) return MoePlacement{};
  if (model_dir.empty()) return invalid_argument("--speculative-moe needs --model");
  WEFT_ASSIGN_OR_RETURN(const io::ModelConfig config, io::load_model_config(model_dir));
  WEFT_ASSIGN_OR_RETURN(std::vector<std::vector<int64_t>> placement,
                        load_expert_placement(path, config, ep));
  return MoePlacement{std::move(placement), true};
}

absl::Status run_moe(Session& session, const Args& args) {
  const std::string sub = args.empty() ? "" : args[0];
  if (sub == "profile") return run_profile(session, Args(args.begin() + 1, args.end()));
  if (sub == "--help" || sub == "-h" || sub == "help") {
    if (session.is_root()) {
      std::fputs("usage: weft moe profile --model DIR --tokens FILE --ep N --out PLACEMENT.json\n",
                 stdout);
    }
    return absl::OkStatus();
  }
  return session.agree(
      invalid_argument("unknown action '", sub, "' (expected: profile; see weft moe --help)"));
}

}  // namespace weft::cli
