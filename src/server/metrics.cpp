#include "server/metrics.h"

#include <cstdio>
#include <sstream>

namespace ds4::server {

void Metrics::add_prefill(uint64_t tokens, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  prefill_tokens_ += tokens;
  prefill_seconds_ += seconds;
  if (tokens > 0 && seconds > 0) last_prefill_tps_ = tokens / seconds;
}

void Metrics::add_decode(uint64_t tokens, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  decode_tokens_ += tokens;
  decode_seconds_ += seconds;
  if (tokens > 0 && seconds > 0) last_decode_tps_ = tokens / seconds;
}

std::string Metrics::render_prometheus() const {
  std::ostringstream o;
  auto metric = [&](const char* name, const char* type, const char* help, double value) {
    char num[64];
    std::snprintf(num, sizeof num, "%.17g", value);
    o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n'
      << name << ' ' << num << '\n';
  };
  metric("ds4_requests_total", "counter", "HTTP requests received.", requests_total.load());
  metric("ds4_generation_requests_total", "counter", "Generation jobs run by the worker.",
         generation_requests.load());
  metric("ds4_request_errors_total", "counter", "Requests answered with an error status.",
         request_errors.load());
  metric("ds4_cancelled_total", "counter", "Jobs cancelled because the client went away.",
         cancelled_jobs.load());
  metric("ds4_prompt_tokens_total", "counter", "Prompt tokens of generation jobs.",
         prompt_tokens.load());
  metric("ds4_cached_prompt_tokens_total", "counter", "Prompt tokens reused from the live session.",
         cached_prompt_tokens.load());
  metric("ds4_completion_tokens_total", "counter", "Generated tokens.", completion_tokens.load());
  metric("ds4_mtp_drafted_tokens_total", "counter", "MTP draft tokens verified (--mtp-draft).",
         mtp_drafted.load());
  metric("ds4_mtp_accepted_tokens_total", "counter", "MTP draft tokens accepted.", mtp_accepted.load());
  metric("ds4_cache_hits_total", "counter", "Jobs that reused part of the live session.",
         cache_hits.load());
  metric("ds4_queue_depth", "gauge", "Jobs queued or running.", queue_depth.load());
  metric("ds4_busy", "gauge", "Slots running a job (prefill or decode).", busy.load());
  metric("ds4_queue_rejected_total", "counter",
         "Requests answered 429 because every slot was busy and the queue full.",
         queue_rejected.load());
  metric("ds4_open_connections", "gauge", "HTTP connections open.", open_connections.load());
  metric("ds4_refused_connections_total", "counter",
         "Connections refused over --max-connections or --max-client-connections.",
         refused_connections.load());
  metric("ds4_decode_steps_total", "counter",
         "Scheduler decode steps (one token of every generating slot each).", decode_steps.load());
  metric("ds4_decode_step_rows_total", "counter",
         "Tokens evaluated by decode steps (rows / steps = mean batch size).",
         decode_step_rows.load());
  metric("ds4_batched_prefill_tokens_total", "counter",
         "Prompt tokens evaluated in the same forward pass as decode steps' rows.",
         batched_prefill_rows.load());
  std::lock_guard<std::mutex> lock(mu_);
  metric("ds4_prefill_tokens_total", "counter", "Prompt tokens evaluated (not reused).",
         prefill_tokens_);
  metric("ds4_decode_tokens_total", "counter", "Tokens decoded.", decode_tokens_);
  metric("ds4_prefill_tokens_per_second", "gauge", "Prefill speed over the whole run.",
         prefill_seconds_ > 0 ? prefill_tokens_ / prefill_seconds_ : 0.0);
  metric("ds4_decode_tokens_per_second", "gauge", "Decode speed over the whole run.",
         decode_seconds_ > 0 ? decode_tokens_ / decode_seconds_ : 0.0);
  metric("ds4_last_prefill_tokens_per_second", "gauge", "Prefill speed of the last job.",
         last_prefill_tps_);
  metric("ds4_last_decode_tokens_per_second", "gauge", "Decode speed of the last job.",
         last_decode_tps_);
  return o.str();
}

}  // namespace ds4::server
