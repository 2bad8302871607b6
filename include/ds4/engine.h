// ds4 engine: the narrow public API the CLI and the server are built on.
//
// An Engine is one opened model file (mmap'ed GGUF, weights used in their stored format).
// A Session is one sequence's state (raw attention window, compressed rows, compressor
// frontiers) plus the last logits. Everything throws ds4::Error.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <iosfwd>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "model/hparams.h"

namespace ds4 {

// The one exception type of the engine. kind() lets callers react without parsing text.
class Error : public std::runtime_error {
 public:
  enum class Kind {
    InvalidArgument,  // bad token id, bad option, bad position
    ContextOverflow,  // more tokens than the session's context
    BadModel,         // missing/inconsistent metadata or tensors, unreadable file
    BadSnapshot,      // snapshot payload malformed or of another shape
    Cancelled,        // the cancel flag was raised during sync()
    Io,               // read/write failure on a stream
  };
  Error(Kind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

// Cpu always; Vulkan only in builds with it (ds4::has_backend); opening an engine with a
// backend the build lacks is an InvalidArgument error.
enum class Backend { Cpu, Vulkan };
bool has_backend(Backend b);
// "cpu" or "vulkan" (the spelling of -b/--backend); false for any other name.
bool parse_backend(const std::string& name, Backend* out);
// What --list-devices prints: one line per Vulkan device with its index (EngineOptions::device),
// or a line saying that there is none or that this build has no Vulkan backend.
std::string describe_devices();

struct EngineOptions {
  int threads = 0;              // 0: the CPUs this process may run on
  bool pin_threads = true;      // one worker thread per CPU (DS4_PIN=0 also turns it off)
  Backend backend = Backend::Cpu;
  int device = 0;               // Vulkan: index into the device list (ds4 --list-devices)
  // Vulkan hybrid MoE: the routed experts of the first cpu_moe_layers layers stay in host
  // memory and run on the CPU, everything else on the device. 0: none; a value above
  // n_layers (--cpu-moe) also covers the MTP block. The CPU backend ignores it.
  int cpu_moe_layers = 0;
  std::string mtp_path;         // optional MTP sidecar GGUF; else mtp.0.* of the main file
  bool qat_simulation = true;   // FP8/FP4 simulation (test-only switch; the model needs it)
  int prefill_chunk = 256;      // tokens per prefill chunk (sync() default)
  // How far back Session::rewind() goes without re-evaluating anything (each session keeps
  // this many steps of compressor undo log, raw rows and logits).
  int rewind_tokens = 16;
  // CPU backend: re-encode the IQ2_XXS weights in memory at load (lossless, same size; the
  // file is unchanged) for faster kernels. Reads all of them at load and keeps them as this
  // process's pages (not evictable file cache), so the model must fit in RAM.
  bool repack_iq2_xxs = false;
  // Under mpirun with several ranks (docs/mpi.md): layers per rank, in rank order, adding up
  // to the model's layer count; empty: split by bytes.
  std::vector<int> layer_split;
};

// Pipeline parallelism over MPI (docs/mpi.md). Programs that open engines call this first
// in main(). Started by mpirun with several ranks, it starts MPI: rank 0 returns and runs the
// program (Engine::open then spreads the layers over the ranks), every other rank serves its
// stage for rank 0 and exits when rank 0 ends, never returning. Otherwise it does nothing
// (in a build without MPI, started by mpirun with several ranks, it says so and exits).
void init_cluster(int* argc, char*** argv);
// Ranks of the pipeline (1 without MPI or mpirun).
int cluster_size();
// Ends the other ranks and MPI now; done at exit too, but a program that leaves through
// _Exit calls it first. No engine may be used afterwards.
void finalize_cluster();

// Hyperparameters as read from the GGUF metadata (docs/gguf.md); defined with the model
// description (src/model/hparams.h).
using ModelConfig = model::ModelConfig;

struct SyncOptions {
  int chunk = 0;  // 0: the engine's prefill_chunk
  // Called after each chunk with (tokens evaluated so far in this call, total to evaluate).
  std::function<void(int done, int total)> progress;
  // Test/perplexity hook: when set, the output head runs for every evaluated position and
  // this receives (absolute position, vocab logits) in position order.
  std::function<void(int pos, const float* logits)> on_logits;
};

// Work a device backend did since the engine was opened (zeros on the CPU backend), for
// ds4-bench: command-buffer submissions, host waits for the device, forward passes.
struct DeviceCounters {
  uint64_t submits = 0;
  uint64_t host_waits = 0;
  uint64_t passes = 0;  // evaluations (eval, eval_batch, mtp_eval)
};

// Where evaluation time goes, for benchmarks (ds4-bench). Wall-clock seconds accumulated
// since the session was made or reset_stats(); a forward pass over one token of the session
// counts as decode, over several as prefill. A pass shared with other sessions
// (Engine::eval_batch) adds its whole time to each of them.
struct EvalStats {
  struct Phase {
    int64_t passes = 0;            // forward passes (single tokens or chunks)
    int64_t tokens = 0;            // tokens evaluated
    double total_s = 0;            // whole passes (embedding + layers + head)
    double embed_s = 0;
    double head_s = 0;             // output head (logits)
    std::vector<double> layer_s;   // per layer (n_layers entries)
    // Parts of layer_s (n_layers entries; zeros where a backend does not time them): the
    // attention over KV rows (scores, softmax and value sums over the window and the chosen
    // compressed rows) and the indexer (scoring every compressed row of a ratio-4 layer and
    // choosing the top-k). The rest of a layer's time is its weights: projections, experts,
    // norms, the compressors.
    std::vector<double> attention_s;
    std::vector<double> indexer_s;
  };
  Phase decode, prefill;
  // Rewinds: cheap ones (nothing re-evaluated) and those that re-evaluated the kept prefix.
  int64_t rewinds_cheap = 0;
  int64_t rewinds_reevaluated = 0;
  int64_t tokens_reevaluated = 0;
};

class Engine;
class Session;

// One row of Engine::eval_batch: `token` at position `pos` of `session`.
struct BatchEntry {
  Session* session = nullptr;
  int32_t token = 0;
  int pos = 0;          // must be the session's next position: n_tokens() + its earlier entries
  bool logits = false;  // return this entry's logits in BatchResult
};

struct BatchResult {
  // n_vocab logits per entry with `logits` set, in entry order.
  std::vector<float> logits;
  int rows = 0;
  int n_vocab = 0;
  const float* row(int i) const { return logits.data() + static_cast<size_t>(i) * n_vocab; }
};

class Session {
 public:
  virtual ~Session() = default;

  int context_size() const { return ctx_; }
  virtual int n_tokens() const = 0;
  virtual const std::vector<int32_t>& tokens() const = 0;

  // Makes the session's prefix equal to `tokens`: reuses the longest common prefix of the
  // live state, evaluates only the rest (chunked). Returns the number of reused tokens.
  // Throws ContextOverflow / InvalidArgument / Cancelled (on cancel the session holds a
  // consistent shorter prefix ending at a chunk boundary).
  virtual int sync(const std::vector<int32_t>& tokens, const SyncOptions& opt = {}) = 0;
  // Evaluates one more token at position n_tokens().
  virtual void eval(int32_t token) = 0;
  // Next-token logits after the current prefix (n_vocab values; empty before any token).
  virtual const std::vector<float>& logits() const = 0;
  // Final hyper-connection state (hc × dim floats) of the last evaluated token: the MTP input.
  virtual const std::vector<float>& hidden() const = 0;

  // Truncates the prefix to `pos` tokens. Cheap (nothing re-evaluated, O(layers)) when
  // n_tokens() - pos <= EngineOptions::rewind_tokens and those tokens were evaluated by this
  // session (not loaded from a snapshot); otherwise the prefix is re-evaluated from
  // position 0. pos > n_tokens() is an InvalidArgument error.
  virtual void rewind(int pos) = 0;
  virtual bool can_rewind_cheaply(int pos) const = 0;
  virtual void reset() = 0;

  // Snapshot payload in the "DSV4" layout (docs/kvcache.md), generalised to the model's
  // shape. Loading validates everything and throws BadSnapshot.
  virtual std::vector<uint8_t> save_snapshot() const = 0;
  virtual void save_snapshot(std::FILE* f) const = 0;
  virtual void save_snapshot(std::ostream& os) const = 0;
  virtual void load_snapshot(const uint8_t* data, size_t size) = 0;
  virtual void load_snapshot(std::FILE* f) = 0;
  virtual void load_snapshot(std::istream& is) = 0;

  // Timing of the evaluations so far (see EvalStats); reset_stats() zeroes it.
  virtual const EvalStats& stats() const {
    static const EvalStats none;
    return none;
  }
  virtual void reset_stats() {}

  // Cancellation: the flag is checked between chunks (and between tokens in eval loops).
  void set_cancel_flag(const std::atomic<bool>* flag) { cancel_ = flag; }

  // MTP block (docs/forward-pass.md): runs on (hidden state hc×dim, token, position) with
  // its own raw window; returns its logits. Its own output state (mtp_hidden()) gives further
  // drafts. Rows of positions >= pos are discarded first, so re-drafting the last few
  // positions is exact; the window holds only rows of positions actually run (after a
  // prefill or snapshot load it is empty, as in ds4). Oracle pairing: row j of a prompt is
  // mtp_eval(hidden state of position j, token j+1, j).
  virtual bool has_mtp() const = 0;
  virtual const std::vector<float>& mtp_eval(const float* hin, int32_t token, int pos) = 0;
  virtual const std::vector<float>& mtp_hidden() const = 0;
  virtual void mtp_reset() = 0;

 protected:
  explicit Session(int ctx) : ctx_(ctx) {}
  bool cancelled() const { return cancel_ && cancel_->load(std::memory_order_relaxed); }
  int ctx_;
  const std::atomic<bool>* cancel_ = nullptr;
};

// Sessions of one engine share its backend; evaluations (sync, eval, eval_batch, mtp_eval)
// are serialised by the engine, so sessions may be driven from different threads, and made,
// saved or destroyed while another session evaluates.
class Engine {
 public:
  static std::unique_ptr<Engine> open(const std::string& gguf_path, const EngineOptions& opt = {});
  virtual ~Engine() = default;

  virtual const ModelConfig& config() const = 0;
  int n_vocab() const { return config().vocab; }
  virtual int64_t context_limit() const = 0;
  virtual const EngineOptions& options() const = 0;

  // GGUF vocabulary strings (tokenizer.ggml.tokens; empty if the file has none).
  virtual const std::vector<std::string>& vocab_tokens() const = 0;
  // Token id whose vocabulary string is exactly `text`, or -1.
  virtual int32_t find_token(std::string_view text) const = 0;
  virtual bool has_mtp() const = 0;

  // Bytes one session of `ctx` tokens holds: caches, compressor states and undo logs, and
  // the logits kept for rewinds (docs/backend.md, "Memory per session").
  virtual uint64_t session_memory_bytes(int ctx) const = 0;

  // Bytes a decode step must read at position `pos` (bench/README.md): weights of
  // layer `layer` that one token touches (dense matrices, HC mixers, router, compressor,
  // indexer, the shared expert and n_experts_used routed experts of average size) plus the
  // KV rows it reads (window, compressed rows, indexer rows). layer == n_layers: the
  // output head and its mixer. The decode bandwidth bound of a layer is this / read bandwidth.
  virtual uint64_t decode_read_bytes(int layer, int64_t pos) const { (void)layer; (void)pos; return 0; }
  // Scratch memory the engine holds for evaluations (activation buffers; grows to the
  // largest chunk evaluated, then stays). Weights are used in place in the mmap.
  virtual uint64_t scratch_bytes() const { return 0; }
  // Worker threads of the evaluation pool and whether they are pinned to CPUs.
  virtual int threads() const { return 1; }
  virtual bool threads_pinned() const { return false; }
  // See DeviceCounters.
  virtual DeviceCounters device_counters() const { return {}; }
  // The device's memory bandwidth in GB/s (bytes read + written per second) measured by a
  // copy shader over `bytes` (two buffers of that size); 0 on the CPU backend.
  virtual double measure_device_bandwidth(size_t bytes) { (void)bytes; return 0; }
  virtual std::unique_ptr<Session> new_session(int ctx) = 0;

  // One forward pass over entries of several sessions of this engine (weights read once for
  // the whole batch): a decode step of many sessions is one entry per session, a speculative
  // verify k+1 consecutive positions of one session, a prefill chunk consecutive positions.
  // A session's entries must be at its next positions, in order; entries of different
  // sessions may interleave. Afterwards each session is as if it had eval()'d its entries:
  // tokens(), logits() (after its last entry), hidden(), rewind history, stats().
  // Results are bit-identical to evaluating each session alone (batch invariance).
  // Everything is validated before anything is evaluated (InvalidArgument, ContextOverflow).
  // A session must not be used from another thread during the call; other sessions may.
  virtual void eval_batch(std::span<const BatchEntry> entries, BatchResult* out = nullptr) = 0;
};

}  // namespace ds4
