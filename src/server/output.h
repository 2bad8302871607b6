// The per-request output pipeline: what happens to each decoded token of one request —
// sampling (its own sampler state), logprobs, detokenization, stop strings, the DSML
// parser (reasoning / text / tool-call events) — and the final Done event. The scheduler
// owns the sessions and evaluates the tokens; this class never touches a session.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <optional>
#include <string>
#include <vector>

#include "grammar/sampling.h"
#include "sample/sampler.h"
#include "server/job.h"
#include "server/tool_replay.h"
#include "text/dsml.h"
#include "text/tokenizer.h"

namespace ds4::server {

class OutputPipeline {
 public:
  // `max_new`: the most tokens this request may sample (its max_tokens clamped to the room
  // left in the context).
  OutputPipeline(Job& job, const text::Tokenizer& tok, ToolReplay* replay, bool log,
                 int64_t max_new);

  // One decode step: picks the next token from `logits` and runs it through the stages.
  // Returns the token the session must evaluate next, or nullopt when the answer is over
  // (EOS, a stop string, the end of a tool-call block, the length limit).
  // `pick` (optional) chooses the token instead of the sampler (speculative decoding: the
  // acceptance test of a verified draft), given the logits and the greedy flag.
  std::optional<int32_t> step(std::span<const float> logits,
                              const std::function<int32_t(std::span<const float>, bool)>& pick = {});
  sample::Sampler& sampler() { return sampler_; }
  // The client left or the server stops: no more tokens, no more text.
  void cancel() { cancelled_ = true; }

  // Flushes the decoder and parser, stores the parsed calls in the replay memory, and sends
  // the Done event (finish "error" for a cancellation by shutdown, "cancelled" otherwise).
  void finish(const Usage& usage, bool shutting_down);

  int64_t generated() const { return generated_; }
  bool cancelled() const { return cancelled_; }
  // The final sampled token (EOS or the end of a tool-call block), evaluated after the
  // answer is out so the next turn extends the live state; -1 when there is none.
  int32_t closing_token() const { return pending_eval_; }
  bool in_dsml_syntax() const { return parser_.in_dsml_syntax(); }
  // The log's finish word ("cancelled" for any cancellation).
  std::string log_finish() const { return cancelled_ ? "cancelled" : finish_; }
  // The answer ended normally (EOS or a complete tool-call block), with a closing token.
  bool complete() const;
  bool ended_with_eos() const { return finish_ == "stop" && !stop_hit_; }
  // The answer text the client saw, and the first tool-call block's sampled bytes.
  const std::string& visible_content() const { return visible_content_; }
  std::string first_call_block() const;

 private:
  void forward(std::vector<text::DsmlEvent>& evs);
  void feed(size_t upto);

  Job& job_;
  const GenerationSpec& spec_;
  const text::Tokenizer& tok_;
  ToolReplay* replay_;
  bool log_;
  int64_t max_new_;
  sample::Sampler sampler_;
  // Structured output: masks the answer's tokens with the request's grammar.
  grammar::ConstrainedSampling grammar_;
  text::DsmlStreamParser parser_;
  text::StreamDecoder decoder_;
  size_t max_stop_ = 0;
  std::string raw_;  // every decided output byte
  size_t fed_ = 0;   // bytes of raw_ already handed to the parser
  std::vector<text::DsmlEvent> pevents_;
  std::string visible_content_;
  std::string finish_ = "length";
  std::string done_finish_;
  int64_t generated_ = 0;
  int32_t pending_eval_ = -1;
  bool stop_hit_ = false, cancelled_ = false;
  std::string stop_matched_;
};

}  // namespace ds4::server
