#include "runtime/serve/serve_metrics.h"

#include <algorithm>
#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace weft::serve {

std::string prometheus_metrics(const EngineStats& s) {
  std::string out;
  auto gauge = [&](const char* name, const char* help, double v, const char* type = "gauge") {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name, " ",
                    absl::StrFormat("%.17g", v), "\n");
  };
  gauge("weft_requests_running", "Requests in the running batch.", s.running);
  gauge("weft_requests_waiting", "Requests waiting to be scheduled.", s.waiting);
  gauge("weft_kv_blocks_used", "KV cache blocks referenced by requests or cached.",
        s.kv_blocks_used);
  gauge("weft_kv_blocks_free", "KV cache blocks free to allocate.",
        s.kv_blocks_total - s.kv_blocks_used);
  gauge("weft_prefix_cache_hit_rate",
        "Full prompt blocks served from the prefix cache over those looked up.", s.prefix_hit_rate);
  gauge("weft_prompt_tokens_total", "Prompt tokens computed (prefix-cache hits excluded).",
        static_cast<double>(s.prompt_tokens), "counter");
  gauge("weft_generation_tokens_total", "Tokens generated.",
        static_cast<double>(s.generated_tokens), "counter");
  gauge("weft_requests_finished_total", "Requests finished (any reason).",
        static_cast<double>(s.requests_finished), "counter");
  gauge("weft_requests_rejected_total", "Requests refused with 429 (queue full).",
        static_cast<double>(s.requests_rejected), "counter");
  gauge("weft_requests_aborted_total", "Requests aborted: the client went away, or shutdown.",
        static_cast<double>(s.requests_aborted), "counter");
  gauge("weft_preemptions_total", "Requests preempted (recomputed) for lack of KV blocks.",
        static_cast<double>(s.preemptions), "counter");
  gauge("weft_engine_steps_total", "Engine steps run.", static_cast<double>(s.steps), "counter");
  gauge("weft_disaggregated_requests_total",
        "Requests whose prefill ran here and whose decode went to a decode instance.",
        static_cast<double>(s.disaggregated_requests), "counter");
  gauge("weft_kv_transfer_bytes_total",
        "Bytes of keys and values the prefill instances' leaders sent to decode instances.",
        static_cast<double>(s.kv_transfer_bytes), "counter");
  gauge("weft_lost_decode_instances",
        "Decode instances lost to a dead rank while the server went on without them.",
        static_cast<double>(s.lost_instances));
  gauge("weft_rerouted_requests_total",
        "Requests moved off a lost decode instance before any output, started again on another.",
        static_cast<double>(s.rerouted_requests), "counter");
  if (!s.prefills.empty()) {
    absl::StrAppend(&out,
                    "# HELP weft_prefill_requests_total Requests each prefill instance prefilled "
                    "for a decode instance.\n# TYPE weft_prefill_requests_total counter\n");
    for (size_t p = 0; p < s.prefills.size(); ++p) {
      absl::StrAppend(&out, "weft_prefill_requests_total{instance=\"", p, "\"} ", s.prefills[p],
                      "\n");
    }
  }
  gauge("weft_engine_sequence_parallel_steps_total",
        "Engine steps run in shift parallelism's sequence-parallel mode.",
        static_cast<double>(s.sequence_parallel_steps), "counter");
  auto histogram = [&](const char* name, const char* help, const std::vector<double>& values,
                       std::initializer_list<double> bounds) {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " histogram\n");
    double sum = 0;
    for (double v : values) sum += v;
    for (double b : bounds) {
      const auto count =
          std::count_if(values.begin(), values.end(), [&](double v) { return v <= b; });
      absl::StrAppend(&out, name, "_bucket{le=\"", absl::StrFormat("%g", b), "\"} ", count, "\n");
    }
    absl::StrAppend(&out, name, "_bucket{le=\"+Inf\"} ", values.size(), "\n", name, "_sum ",
                    absl::StrFormat("%.9g", sum), "\n", name, "_count ", values.size(), "\n");
  };
  histogram("weft_time_to_first_token_seconds", "Time from arrival to the first token.",
            s.ttft_seconds, {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30});
  histogram("weft_time_per_output_token_seconds", "Mean time per token after the first.",
            s.tpot_seconds, {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1});
  return out;
}

}  // namespace weft::serve
