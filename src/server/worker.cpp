#include "server/worker.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace ds4::server {

using Clock = std::chrono::steady_clock;

namespace {

const char* state_name(Slot::State s) {
  switch (s) {
    case Slot::State::Idle: return "idle";
    case Slot::State::Prefill: return "prefill";
    case Slot::State::Decode: return "decode";
  }
  return "idle";
}

double unix_seconds(Clock::time_point t) {
  if (t == Clock::time_point{}) return 0;
  const auto wall = std::chrono::system_clock::now() - (Clock::now() - t);
  return std::chrono::duration<double>(wall.time_since_epoch()).count();
}

int32_t find_id(const text::Tokenizer& tok, const char* text) {
  auto id = tok.find_token(text);
  return id ? *id : -1;
}

WorkerOptions single_slot_options(bool log) {
  WorkerOptions o;
  o.log = log;
  return o;
}

std::vector<std::unique_ptr<Session>> one(std::unique_ptr<Session> s) {
  std::vector<std::unique_ptr<Session>> v;
  v.push_back(std::move(s));
  return v;
}

}  // namespace

Worker::Worker(std::vector<std::unique_ptr<Session>> sessions, const text::Tokenizer& tok,
               Metrics& metrics, WorkerOptions options, std::unique_ptr<kvcache::DiskCache> disk)
    : metrics_(metrics), opt_(options),
      ctx_(sessions.empty() ? 0 : sessions.front()->context_size()), disk_(std::move(disk)),
      shared_{tok, metrics, disk_.get(), nullptr, options.log, options.prefill_chunk,
              find_id(tok, "<｜User｜>"), find_id(tok, "<｜Assistant｜>"), options.engine,
              options.mtp_draft, options.mtp_adaptive} {
  if (sessions.empty()) throw std::invalid_argument("Worker: no sessions");
  for (size_t i = 0; i < sessions.size(); ++i) {
    slots_.push_back(std::make_unique<Slot>(static_cast<int>(i), std::move(sessions[i]), shared_));
  }
  running_.resize(slots_.size());
  idle_slots_ = static_cast<int>(slots_.size());
  publish(true);
  thread_ = std::thread([this] { loop(); });
}

Worker::Worker(std::unique_ptr<Session> session, const text::Tokenizer& tok, Metrics& metrics,
               bool log, std::unique_ptr<kvcache::DiskCache> disk)
    : Worker(one(std::move(session)), tok, metrics, single_slot_options(log), std::move(disk)) {}

Worker::~Worker() { stop(); }

std::shared_ptr<Job> Worker::submit(GenerationSpec spec) {
  auto job = std::make_shared<Job>(std::move(spec));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      ApiError e(503, "server shutting down", "server_error");
      e.retry_after_s = opt_.retry_after_s;
      throw e;
    }
    // Jobs beyond the idle slots wait; at most max_queue of them.
    const int waiting = static_cast<int>(queue_.size()) - idle_slots_;
    if (waiting >= opt_.max_queue) {
      metrics_.queue_rejected++;
      ApiError e(429,
                 "server busy: all " + std::to_string(slots_.size()) + " slot(s) are generating and " +
                     std::to_string(std::max(0, waiting)) + " request(s) are waiting (--max-queue " +
                     std::to_string(opt_.max_queue) + "); retry later",
                 "server_error");
      e.code = "server_busy";
      e.retry_after_s = opt_.retry_after_s;
      throw e;
    }
    job->serial = next_serial_++;
    job->on_final = [this] { metrics_.queue_depth--; };
    queue_.push_back(job);
    metrics_.queue_depth++;
  }
  cv_.notify_one();
  return job;
}

void Worker::stop() {
  std::deque<std::shared_ptr<Job>> queued;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    queued.swap(queue_);
    for (auto& j : running_) {
      if (j) j->cancelled = true;
    }
  }
  // Jobs that never reached a slot are answered at once; their clients may retry elsewhere
  // or after the restart.
  for (auto& j : queued) {
    ApiError e(503, "server shutting down", "server_error");
    e.retry_after_s = opt_.retry_after_s;
    GenEvent ev{GenEvent::Kind::Failed};
    ev.error = e;
    j->push(std::move(ev));
    job_ended(*j);
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (disk_ && !shutdown_saved_) {
    shutdown_saved_ = true;
    for (auto& s : slots_) s->save_live(kvcache::Reason::Shutdown);
  }
}

bool Worker::stopping() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stopping_;
}

void Worker::job_ended(Job& job) { job.finalize(); }

void Worker::release(Slot& s) {
  std::shared_ptr<Job> job;
  {
    std::lock_guard<std::mutex> lock(mu_);
    job = std::move(running_[static_cast<size_t>(s.id())]);
    ++idle_slots_;
  }
  if (job) job_ended(*job);
}

bool Worker::admit() {
  bool any = false;
  while (true) {
    std::shared_ptr<Job> job;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.empty() || idle_slots_ == 0) break;
      job = queue_.front();
      queue_.pop_front();
    }
    any = true;
    if (job->cancelled) {
      metrics_.cancelled_jobs++;
      GenEvent ev{GenEvent::Kind::Failed};
      ev.error = ApiError(499, "request cancelled", "cancelled");
      job->push(std::move(ev));
      job_ended(*job);
      continue;
    }
    std::vector<SlotCandidate> cands(slots_.size());
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& s = *slots_[i];
      cands[i].idle = s.state() == Slot::State::Idle;
      cands[i].live_tokens = static_cast<size_t>(s.session().n_tokens());
      cands[i].last_used = s.last_used();
      if (cands[i].idle && cands[i].live_tokens > 0) {
        try {
          cands[i].reusable = s.reusable_for(job->spec);
        } catch (const std::exception&) {
          cands[i].reusable = 0;
        }
      }
    }
    const int pick = route_request(cands);
    Slot& slot = *slots_[static_cast<size_t>(pick)];
    metrics_.generation_requests++;
    {
      // Taken before the job hears it is running, so the queue bound counts it as busy.
      std::lock_guard<std::mutex> lock(mu_);
      running_[static_cast<size_t>(pick)] = job;
      --idle_slots_;
      if (stopping_) job->cancelled = true;
    }
    slot.begin(job);
    if (slot.state() == Slot::State::Idle) release(slot);  // failed at admission
  }
  return any;
}

void Worker::gather_decode(Step& st) {
  const auto now = Clock::now();
  const bool shutting_down = stopping();
  // The test hook's pause (ds4_test_delay_ms) stands for a slow model: a step waits for
  // every generating slot, as one batched pass would. Cancelled slots do not wait.
  bool waiting = false;
  for (auto& sp : slots_) {
    if (sp->state() == Slot::State::Decode && !sp->job()->cancelled && sp->ready_at() > now) {
      waiting = true;
    }
  }
  for (auto& sp : slots_) {
    Slot& s = *sp;
    if (s.state() != Slot::State::Decode) continue;
    if (waiting && !s.job()->cancelled) continue;
    st.any = true;
    int32_t next = -1;  // -1: the answer is over
    try {
      if (auto tok = s.next_token()) {
        next = *tok;
      } else {
        s.finish(shutting_down);
      }
    } catch (const std::exception& e) {
      s.fail(e);
    }
    if (next < 0) {
      release(s);
      continue;
    }
    st.rows.push_back(&s);
    st.tokens.push_back(next);
    st.before.push_back(s.session().n_tokens());
  }
}

Slot* Worker::oldest_prefill() {
  Slot* oldest = nullptr;
  for (auto& sp : slots_) {
    if (sp->state() != Slot::State::Prefill) continue;
    if (sp->job()->cancelled) {
      // A client that left frees its slot now, not when its prefill's turn comes.
      sp->prefill_chunk();
      release(*sp);
      continue;
    }
    if (!oldest || sp->job()->serial < oldest->job()->serial) oldest = sp.get();
  }
  return oldest;
}

void Worker::evaluate(Step& st) {
  std::vector<BatchEntry> entries;
  for (size_t i = 0; i < st.rows.size(); ++i) {
    if (st.rows[i]->speculating()) continue;  // its own verify pass (drafts), below
    Session& s = st.rows[i]->session();
    entries.push_back(BatchEntry{&s, st.tokens[i], s.n_tokens(), false});
  }
  const size_t decode_rows = entries.size();
  if (st.prefill) {
    Session& s = st.prefill->session();
    const auto& prompt = st.prefill->prompt_tokens();
    for (int p = st.piece.from; p < st.piece.to; ++p) {
      entries.push_back(BatchEntry{&s, prompt[static_cast<size_t>(p)], p, false});
    }
  }
  // One forward pass when the engine can and more than one session takes part; a lone
  // decode row is a plain Session::eval (the single-slot path).
  const bool shared = decode_rows > 1 || (decode_rows > 0 && entries.size() > decode_rows);
  if (opt_.eval_batch && shared) {
    try {
      opt_.eval_batch(entries);
    } catch (const std::exception&) {
      // The batch failed (the engine validates before it evaluates): the sessions it did
      // not advance evaluate on their own below, so only the slot at fault fails.
    }
  }
}

void Worker::after_decode(Step& st) {
  for (size_t i = 0; i < st.rows.size(); ++i) {
    Slot& s = *st.rows[i];
    try {
      if (s.speculating()) {
        s.eval_next(st.tokens[i]);
      } else if (s.session().n_tokens() == st.before[i]) {
        s.session().eval(st.tokens[i]);
      }
      s.after_eval();
    } catch (const std::exception& e) {
      s.fail(e);
      release(s);
    }
  }
  if (!st.rows.empty()) {
    metrics_.decode_steps++;
    metrics_.decode_step_rows += st.rows.size();
  }
}

void Worker::after_prefill(Step& st) {
  Slot& s = *st.prefill;
  if (s.session().n_tokens() == st.piece.to) {
    metrics_.batched_prefill_rows += static_cast<uint64_t>(st.piece.to - st.piece.from);
    s.piece_done(st.piece);
  } else {
    s.prefill_chunk();  // the pass did not take it: on its own
  }
  if (s.state() == Slot::State::Idle) release(s);
}

bool Worker::step() {
  Step st;
  gather_decode(st);
  Slot* prefill = oldest_prefill();
  bool plain_rows = false;
  for (Slot* s : st.rows) plain_rows |= !s->speculating();
  if (prefill && plain_rows && opt_.eval_batch) {
    // The prefill chunk rides in the decode rows' pass: one weight read for both, and the
    // streams still wait at most one chunk.
    if (auto piece = prefill->next_piece()) {
      st.prefill = prefill;
      st.piece = *piece;
    } else {
      release(*prefill);  // cancelled
    }
    prefill = nullptr;
  }
  evaluate(st);
  after_decode(st);
  if (st.prefill) after_prefill(st);
  if (prefill) {
    // No decode rows to share a pass with: the chunk alone.
    prefill->prefill_chunk();
    if (prefill->state() == Slot::State::Idle) release(*prefill);
  }
  return st.any || st.prefill || prefill;
}

Clock::time_point Worker::next_ready() const {
  // The step waits for every generating slot (see decode_step).
  auto t = Clock::time_point::min();
  for (const auto& s : slots_) {
    if (s->state() == Slot::State::Decode) t = std::max(t, s->ready_at());
  }
  return t == Clock::time_point::min() ? Clock::time_point::max() : t;
}

void Worker::publish(bool rehash) {
  int busy = 0;
  std::lock_guard<std::mutex> lock(mu_);
  infos_.resize(slots_.size());
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = *slots_[i];
    SlotInfo& info = infos_[i];
    const std::string state = state_name(s.state());
    const int64_t n = s.session().n_tokens();
    if (rehash || state != info.state || (s.state() == Slot::State::Idle && n != info.tokens)) {
      info.prefix_hash = n > 0 ? prefix_hash(s.session().tokens()) : std::string();
    }
    info.id = s.id();
    info.state = state;
    info.n_ctx = s.session().context_size();
    info.tokens = n;
    info.last_used = unix_seconds(s.last_used());
    info.task = s.last_serial();
    info.totals = s.totals();
    if (s.state() != Slot::State::Idle) ++busy;
  }
  metrics_.busy = busy;
}

void Worker::loop() {
  while (true) {
    bool worked = admit();
    worked = step() || worked;
    publish(false);
    if (worked) continue;
    std::unique_lock<std::mutex> lock(mu_);
    const bool active = idle_slots_ < static_cast<int>(slots_.size());
    if (stopping_ && queue_.empty() && !active) return;
    const bool admissible = !queue_.empty() && idle_slots_ > 0;
    if (admissible) continue;
    // Nothing to run now: wait for a job, a stop, or the next delayed decode step.
    const auto until = next_ready();
    auto wake = [&] { return stopping_ || (!queue_.empty() && idle_slots_ > 0); };
    if (until == Clock::time_point::max()) {
      if (active) {
        // Only cancelled prefill or decode work left to notice: look again shortly.
        cv_.wait_for(lock, std::chrono::milliseconds(5), wake);
      } else {
        cv_.wait(lock, wake);
      }
    } else {
      cv_.wait_until(lock, until, wake);
    }
  }
}

std::vector<SlotInfo> Worker::slot_infos() const {
  std::lock_guard<std::mutex> lock(mu_);
  return infos_;
}

std::string Worker::render_slot_metrics() const {
  const auto infos = slot_infos();
  std::ostringstream o;
  auto series = [&](const char* name, const char* type, const char* help, auto value) {
    o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
    for (const auto& s : infos) o << name << "{slot=\"" << s.id << "\"} " << value(s) << '\n';
  };
  series("ds4_slot_busy", "gauge", "1 while the slot runs a request (prefill or decode).",
         [](const SlotInfo& s) { return s.state == "idle" ? 0 : 1; });
  series("ds4_slot_tokens", "gauge", "Tokens in the slot's live session.",
         [](const SlotInfo& s) { return s.tokens; });
  series("ds4_slot_requests_total", "counter", "Requests the slot served.",
         [](const SlotInfo& s) { return s.totals.requests; });
  series("ds4_slot_reused_tokens_total", "counter", "Prompt tokens the slot reused (live or disk).",
         [](const SlotInfo& s) { return s.totals.reused; });
  series("ds4_slot_evaluated_tokens_total", "counter", "Prompt tokens the slot evaluated.",
         [](const SlotInfo& s) { return s.totals.evaluated; });
  series("ds4_slot_generated_tokens_total", "counter", "Tokens the slot generated.",
         [](const SlotInfo& s) { return s.totals.generated; });
  series("ds4_slot_cancelled_total", "counter", "Requests of the slot cancelled.",
         [](const SlotInfo& s) { return s.totals.cancelled; });
  return o.str();
}

}  // namespace ds4::server
