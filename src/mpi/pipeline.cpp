#include "mpi/pipeline.h"

#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <unordered_map>

#include "cpu/backend.h"
#include "model/config.h"
#include "model/stages.h"
#include "mpi/comm.h"

namespace ds4::mpi {

namespace {

enum Op : int32_t { kOpen = 1, kClose, kShutdown, kNewSeq, kFreeSeq, kEval, kTruncate, kPull, kPush, kWarm };

struct Header {
  int32_t op = 0;
  int32_t engine = 0;
  uint64_t seq = 0;
  int64_t a = 0, b = 0;
  int32_t n = 0;
  int32_t pad = 0;
};

struct WireEntry {
  uint64_t seq;
  int64_t pos;
  int32_t token;
  int32_t output;
};

bool g_initialized = false;  // MPI started (by mpirun)
bool g_active = false;       // ... with more than one rank
int g_rank = 0, g_size = 1;
// Held by every exchange that waits for replies (open, close, eval, pull, push): replies
// carry no request id, so one exchange at a time.
std::mutex g_rpc;
// Rank 0's evaluations, printed when the pipeline shuts down (under g_rpc).
struct {
  int64_t evaluations = 0, micro_batches = 0, sessions_spread = 0;
} g_stats;

std::string host_name() {
  char h[256] = {0};
  gethostname(h, sizeof h - 1);
  return h;
}

std::string rank_name(int r, const std::string& host) { return "rank " + std::to_string(r) + " (" + host + ")"; }

Bytes header_only(const Header& h) {
  Writer w;
  w.put(h);
  return std::move(w.b);
}

// A layer's state on the wire: the raw ring (slot positions and occupied rows), then each
// compressor's completed rows and frontier. A layer in its initial state is one byte.
bool is_fresh(const model::LayerState& L) {
  for (int64_t p : L.raw.slot_pos)
    if (p >= 0) return false;
  for (const model::CompressorState* c : {&L.comp, &L.icomp}) {
    if (c->n_rows) return false;
    for (float v : c->kv)
      if (v != 0.f) return false;
    for (float v : c->score)
      if (v != model::kNegInf) return false;
  }
  return true;
}

void put_comp(Writer& w, const model::CompressorState& c) {
  w.put<int64_t>(c.n_rows);
  w.put_n(c.rows.data(), static_cast<size_t>(c.n_rows) * c.d);
  w.put_n(c.kv.data(), c.kv.size());
  w.put_n(c.score.data(), c.score.size());
}

void get_comp(Reader& r, model::CompressorState& c) {
  c.n_rows = r.get<int64_t>();
  r.get_n(c.rows);
  std::vector<float> kv, score;
  r.get_n(kv);
  r.get_n(score);
  if (kv.size() != c.kv.size() || score.size() != c.score.size() ||
      c.rows.size() != static_cast<size_t>(c.n_rows) * c.d)
    throw std::runtime_error("MPI: compressor state of another shape");
  c.kv = std::move(kv);
  c.score = std::move(score);
}

void put_layer(Writer& w, const model::LayerState& L) {
  const bool fresh = is_fresh(L);
  w.put<uint8_t>(fresh);
  if (fresh) return;
  w.put_n(L.raw.slot_pos.data(), L.raw.slot_pos.size());
  for (int i = 0; i < L.raw.cap; ++i)
    if (L.raw.slot_pos[i] >= 0) {
      const float* row = L.raw.rows.data() + static_cast<size_t>(i) * L.raw.width;
      w.b.insert(w.b.end(), reinterpret_cast<const uint8_t*>(row),
                 reinterpret_cast<const uint8_t*>(row + L.raw.width));
    }
  put_comp(w, L.comp);
  put_comp(w, L.icomp);
}

// Takes the layer's state over as a whole (no undo log: as after a snapshot load or reset).
void get_layer(Reader& r, model::LayerState& L) {
  if (r.get<uint8_t>()) {
    L.reset();
    return;
  }
  std::vector<int64_t> slots;
  r.get_n(slots);
  if (slots.size() != L.raw.slot_pos.size()) throw std::runtime_error("MPI: raw ring of another shape");
  L.raw.slot_pos = slots;
  for (int i = 0; i < L.raw.cap; ++i)
    if (slots[i] >= 0) {
      const size_t bytes = sizeof(float) * L.raw.width;
      r.need(bytes);
      std::memcpy(L.raw.rows.data() + static_cast<size_t>(i) * L.raw.width, r.b.data() + r.off, bytes);
      r.off += bytes;
    }
  get_comp(r, L.comp);
  get_comp(r, L.icomp);
  L.comp.clear_undo();
  L.icomp.clear_undo();
}

// The bookkeeping an evaluation at `pos` leaves in a layer's state (ring slot, compressor undo
// entry, completed-row count) without its data: what rank 0 keeps of the layers it does not
// hold, so that rewinds (can_truncate) are decided as in one process.
void mirror_step(model::LayerState& L, int64_t pos) {
  L.raw.slot_pos[static_cast<size_t>(pos % L.raw.cap)] = pos;
  for (model::CompressorState* c : {&L.comp, &L.icomp}) {
    if (!c->ratio) continue;
    c->save_undo(pos);
    if ((pos + 1) % c->ratio == 0) ++c->n_rows;
  }
}

// ---------------------------------------------------------------------------------------
// Worker ranks.

struct Stage {
  std::unique_ptr<model::Weights> w;
  std::unique_ptr<backend::Backend> be;
  int first = 0, end = 0;
  bool last = false;
  std::unordered_map<uint64_t, std::unique_ptr<backend::Sequence>> seqs;
  backend::Sequence& seq(uint64_t id) {
    auto it = seqs.find(id);
    if (it == seqs.end()) throw std::runtime_error("unknown sequence " + std::to_string(id));
    return *it->second;
  }
};

[[noreturn]] void worker_fail(const std::string& what) {
  std::fprintf(stderr, "ds4: %s: error: %s\n", rank_name(g_rank, host_name()).c_str(), what.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

void worker_eval(Stage& st, const Header& h, Reader& r) {
  Comm& comm = Comm::get();
  const ModelConfig& c = st.w->config;
  const size_t hcD = static_cast<size_t>(c.hc) * c.dim;
  const int n = h.n;
  std::vector<WireEntry> wire(n);
  for (auto& e : wire) e = r.get<WireEntry>();
  std::vector<float> X(n * hcD);
  r.need(X.size() * sizeof(float));
  std::memcpy(X.data(), r.b.data() + r.off, X.size() * sizeof(float));
  std::vector<backend::Entry> entries(n);
  int n_out = 0;
  for (int i = 0; i < n; ++i) {
    entries[i] = backend::Entry{&st.seq(wire[i].seq), wire[i].token, wire[i].pos, wire[i].output != 0};
    n_out += wire[i].output != 0;
  }
  backend::Batch b;
  b.entries = entries.data();
  b.n = n;
  b.first_layer = st.first;
  b.end_layer = st.end;
  b.in = X.data();
  if (st.last) {
    // Result: n_out logits rows, then n_out hidden states.
    Bytes out(static_cast<size_t>(n_out) * (c.vocab + hcD) * sizeof(float));
    b.logits = reinterpret_cast<float*>(out.data());
    b.hidden = b.logits + static_cast<size_t>(n_out) * c.vocab;
    st.be->eval(b);
    comm.send(0, kResult, std::move(out));
  } else {
    Writer w;
    w.put(h);
    for (const auto& e : wire) w.put(e);
    const size_t at = w.b.size();
    w.b.resize(at + X.size() * sizeof(float));
    b.out = reinterpret_cast<float*>(w.b.data() + at);
    st.be->eval(b);
    comm.send(g_rank + 1, kChain, std::move(w.b));
  }
}

[[noreturn]] void serve() {
  // mpirun passes Ctrl-C and SIGTERM to every rank: rank 0 decides (a server saves its
  // caches, which needs this rank), and this rank ends when rank 0 does.
  std::signal(SIGINT, SIG_IGN);
  std::signal(SIGTERM, SIG_IGN);
  Comm& comm = Comm::get();
  const int prev = g_rank - 1;
  const int next = g_rank + 1 < g_size ? g_rank + 1 : -1;
  std::unordered_map<int32_t, Stage> stages;
  for (;;) {
    Bytes msg = comm.recv(prev, kChain);
    Reader r{msg};
    Header h;
    try {
      h = r.get<Header>();
    } catch (const std::exception& e) {
      worker_fail(e.what());
    }
    // Commands are passed on first so the next ranks work meanwhile; an evaluation is
    // passed on with this stage's output.
    if (next >= 0 && h.op != kEval) comm.send(next, kChain, msg);
    try {
      switch (h.op) {
        case kShutdown:
          comm.finalize();
          std::exit(0);
        case kOpen: {
          const std::string path = r.get_str();
          EngineOptions opt;
          opt.threads = r.get<int32_t>();
          opt.pin_threads = r.get<int32_t>() != 0;
          opt.qat_simulation = r.get<int32_t>() != 0;
          std::vector<int32_t> bounds;
          r.get_n(bounds);
          Writer status;
          try {
            if (static_cast<int>(bounds.size()) != g_size + 1) throw std::runtime_error("bad layer split");
            Stage st;
            st.first = bounds[g_rank];
            st.end = bounds[g_rank + 1];
            st.w = model::Weights::load(path, "", st.first, st.end);
            st.last = st.end == st.w->config.n_layers;
            if (st.last != (next < 0)) throw std::runtime_error("the layer split does not end on the last rank");
            st.be = cpu::make_backend(*st.w, opt);
            const ModelConfig& c = st.w->config;
            status.put_str("");
            for (int v : {c.n_layers, c.dim, c.vocab, c.hc}) status.put<int32_t>(v);
            stages[h.engine] = std::move(st);
          } catch (const std::exception& e) {
            status = Writer{};
            std::string what = e.what();
            if (static_cast<int>(bounds.size()) == g_size + 1)
              what = "cannot load layers " + std::to_string(bounds[g_rank]) + ".." +
                     std::to_string(bounds[g_rank + 1] - 1) + " of " + path + ": " + what;
            status.put_str(what);
          }
          status.put_str(host_name());
          comm.send(0, kStatus, std::move(status.b));
          break;
        }
        case kClose:
          stages.erase(h.engine);
          break;
        default: {
          auto it = stages.find(h.engine);
          if (it == stages.end()) throw std::runtime_error("command for an engine this rank has not opened");
          Stage& st = it->second;
          switch (h.op) {
            case kNewSeq:
              st.seqs[h.seq] = st.be->new_sequence(static_cast<int>(h.a), static_cast<int>(h.b));
              break;
            case kFreeSeq:
              st.seqs.erase(h.seq);
              break;
            case kTruncate:
              st.seq(h.seq).truncate(h.a, h.b);
              break;
            case kEval:
              worker_eval(st, h, r);
              break;
            case kPull: {
              Writer w;
              const auto& layers = st.seq(h.seq).host().layers;
              for (int il = st.first; il < st.end; ++il) put_layer(w, layers[il]);
              comm.send(0, kPull, std::move(w.b));
              break;
            }
            case kWarm: {
              st.be->warm_weights();
              Writer w;
              w.put_str("");
              comm.send(0, kStatus, std::move(w.b));
              break;
            }
            case kPush: {
              Bytes data = comm.recv(0, kPush);
              Reader pr{data};
              auto& layers = st.seq(h.seq).host().layers;
              for (int il = st.first; il < st.end; ++il) get_layer(pr, layers[il]);
              break;
            }
            default:
              throw std::runtime_error("unknown command " + std::to_string(h.op));
          }
        }
      }
    } catch (const std::exception& e) {
      worker_fail(e.what());
    }
  }
}

// ---------------------------------------------------------------------------------------
// Rank 0.

class PipelineBackend;

class PipeSequence final : public backend::Sequence {
 public:
  PipeSequence(PipelineBackend& owner, uint64_t id, model::SequenceState st) : owner_(owner), id_(id), st_(std::move(st)) {}
  ~PipeSequence() override;
  model::SequenceState& host() override { return st_; }
  void pull() override;
  void push() override;
  void truncate(int64_t n, int64_t pos) override;
  uint64_t id() const { return id_; }

 private:
  PipelineBackend& owner_;
  uint64_t id_;
  model::SequenceState st_;
};

class PipelineBackend final : public backend::Backend {
 public:
  PipelineBackend(int engine, model::Weights& w, std::unique_ptr<backend::Backend> local, std::vector<int> bounds)
      : engine_(engine), w_(w), local_(std::move(local)), bounds_(std::move(bounds)) {}

  ~PipelineBackend() override {
    Comm& comm = Comm::get();
    if (comm.finalized()) return;
    std::lock_guard<std::mutex> lk(g_rpc);
    Header h;
    h.op = kClose;
    h.engine = engine_;
    comm.send(1, kChain, header_only(h));
  }

  const char* name() const override { return "cpu (MPI pipeline)"; }

  std::unique_ptr<backend::Sequence> new_sequence(int ring_cap, int rewind_depth) override {
    const uint64_t id = next_seq_.fetch_add(1);
    send_simple(kNewSeq, id, ring_cap, rewind_depth);
    return std::make_unique<PipeSequence>(*this, id, backend::make_state(w_, ring_cap, rewind_depth));
  }

  void send_simple(int32_t op, uint64_t seq, int64_t a = 0, int64_t b = 0) {
    Comm& comm = Comm::get();
    if (comm.finalized()) return;
    Header h;
    h.op = op;
    h.engine = engine_;
    h.seq = seq;
    h.a = a;
    h.b = b;
    comm.send(1, kChain, header_only(h));
  }

  void pull(PipeSequence& s) {
    std::lock_guard<std::mutex> lk(g_rpc);
    Comm& comm = Comm::get();
    send_simple(kPull, s.id());
    for (int r = 1; r < comm.size(); ++r) {
      Bytes data = comm.recv(r, kPull);
      Reader rd{data};
      for (int il = bounds_[r]; il < bounds_[r + 1]; ++il) get_layer(rd, s.host().layers[il]);
    }
  }

  void push(PipeSequence& s) {
    std::lock_guard<std::mutex> lk(g_rpc);
    Comm& comm = Comm::get();
    send_simple(kPush, s.id());
    for (int r = 1; r < comm.size(); ++r) {
      Writer w;
      for (int il = bounds_[r]; il < bounds_[r + 1]; ++il) put_layer(w, s.host().layers[il]);
      comm.send(r, kPush, std::move(w.b));
    }
  }

  void eval(const backend::Batch& b) override {
    const ModelConfig& c = w_.config;
    const size_t hcD = static_cast<size_t>(c.hc) * c.dim;
    const int n = b.n;
    if (n <= 0) return;
    if (b.first_layer != 0 || (b.end_layer >= 0 && b.end_layer != c.n_layers))
      throw Error(Error::Kind::InvalidArgument, "MPI pipeline: only whole-model evaluations");
    std::lock_guard<std::mutex> lk(g_rpc);
    Comm& comm = Comm::get();
    const int S = comm.size();
    const std::vector<int> cuts = micro_batches(b, S);
    ++g_stats.evaluations;
    g_stats.micro_batches += static_cast<int64_t>(cuts.size()) - 1;
    std::vector<int> outs_in_piece;
    for (size_t pc = 0; pc + 1 < cuts.size(); ++pc) {
      const int lo = cuts[pc], hi = cuts[pc + 1];
      Writer w;
      Header h;
      h.op = kEval;
      h.engine = engine_;
      h.n = hi - lo;
      w.put(h);
      int n_out = 0;
      for (int i = lo; i < hi; ++i) {
        const backend::Entry& e = b.entries[i];
        w.put(WireEntry{static_cast<PipeSequence*>(e.seq)->id(), e.pos, e.token, e.output ? 1 : 0});
        n_out += e.output;
      }
      outs_in_piece.push_back(n_out);
      const size_t at = w.b.size();
      w.b.resize(at + static_cast<size_t>(hi - lo) * hcD * sizeof(float));
      backend::Batch local;
      local.entries = b.entries + lo;
      local.n = hi - lo;
      local.first_layer = 0;
      local.end_layer = bounds_[1];
      local.out = reinterpret_cast<float*>(w.b.data() + at);
      local.embed_s = b.embed_s;
      local.layer_s = b.layer_s;
      local.attention_s = b.attention_s;
      local.indexer_s = b.indexer_s;
      local_->eval(local);
      comm.send(1, kChain, std::move(w.b));
    }
    // Outputs come back from the last rank, one message per micro-batch, in entry order.
    size_t o = 0;
    const int last = S - 1;
    for (int n_out : outs_in_piece) {
      Bytes res = comm.recv(last, kResult);
      if (res.size() != static_cast<size_t>(n_out) * (c.vocab + hcD) * sizeof(float))
        throw Error(Error::Kind::InvalidArgument, "MPI pipeline: result of the wrong size from the last rank");
      if (n_out == 0) continue;  // a piece with no outputs: its (empty) result has no data pointer
      const float* lg = reinterpret_cast<const float*>(res.data());
      const float* hd = lg + static_cast<size_t>(n_out) * c.vocab;
      if (b.logits) std::memcpy(b.logits + o * c.vocab, lg, static_cast<size_t>(n_out) * c.vocab * sizeof(float));
      if (b.hidden) std::memcpy(b.hidden + o * hcD, hd, static_cast<size_t>(n_out) * hcD * sizeof(float));
      o += n_out;
    }
    // What the other ranks' layers now hold, as bookkeeping only.
    for (int i = 0; i < n; ++i) {
      auto& layers = b.entries[i].seq->host().layers;
      for (int il = bounds_[1]; il < c.n_layers; ++il) mirror_step(layers[il], b.entries[i].pos);
    }
  }

  // Where eval cuts a batch into micro-batches (cut points, first 0, last b.n), so that every
  // stage works at once. A long batch (prefill) goes in 2S pieces of at least 16 entries, so
  // each piece still reads the weights once for many tokens. A short batch of several
  // sequences (decode steps of parallel sessions, docs/mpi.md) goes in up to S pieces cut
  // between sequences: one session's step is on stage 1 while the next one's is on stage 0.
  // Batch invariance keeps every split bit-identical to one pass.
  std::vector<int> micro_batches(const backend::Batch& b, int S) {
    const int n = b.n;
    std::vector<int> cuts{0};
    const int long_pieces = std::min(2 * S, n / 16);
    if (long_pieces >= 2) {
      const int step = (n + long_pieces - 1) / long_pieces;
      for (int lo = step; lo < n; lo += step) cuts.push_back(lo);
    } else {
      std::vector<int> runs;  // where each sequence's run of entries starts (after the first)
      for (int i = 1; i < n; ++i)
        if (b.entries[i].seq != b.entries[i - 1].seq) runs.push_back(i);
      const int pieces = std::min(S, static_cast<int>(runs.size()) + 1);
      if (pieces >= 2) {
        ++g_stats.sessions_spread;
        // An equal number of sequences in each piece.
        const int seqs = static_cast<int>(runs.size()) + 1;
        for (int p = 1; p < pieces; ++p) cuts.push_back(runs[static_cast<size_t>(seqs * p / pieces - 1)]);
      }
    }
    cuts.push_back(n);
    return cuts;
  }

  void mtp_eval(backend::Sequence&, const float*, int32_t, int64_t, float*, float*) override {
    throw Error(Error::Kind::InvalidArgument, "the MTP block is not available with several MPI ranks yet");
  }

  uint64_t scratch_bytes() const override { return local_->scratch_bytes(); }
  int threads() const override { return local_->threads(); }
  bool threads_pinned() const override { return local_->threads_pinned(); }

  void embed(const int32_t* tokens, int n, float* X) override { local_->embed(tokens, n, X); }
  void block(int layer, backend::Sequence& seq, float* X, const int32_t* tokens, int n, int64_t pos0,
             model::BlockTrace* trace) override {
    if (layer >= bounds_[1]) unavailable();
    local_->block(layer, seq, X, tokens, n, pos0, trace);
  }
  void head(const float*, int, float*) override { unavailable(); }
  void warm_weights() override {
    std::lock_guard<std::mutex> lk(g_rpc);
    Comm& comm = Comm::get();
    send_simple(kWarm, 0);
    local_->warm_weights();
    for (int r = 1; r < comm.size(); ++r) comm.recv(r, kStatus);
  }
  void use_f32_activations() override { unavailable(); }

 private:
  [[noreturn]] static void unavailable() {
    throw Error(Error::Kind::InvalidArgument, "this test hook needs the whole model in one process (not under MPI)");
  }

  int engine_;
  model::Weights& w_;
  std::unique_ptr<backend::Backend> local_;
  std::vector<int> bounds_;
  std::atomic<uint64_t> next_seq_{1};
};

PipeSequence::~PipeSequence() { owner_.send_simple(kFreeSeq, id_); }
void PipeSequence::pull() { owner_.pull(*this); }
void PipeSequence::push() { owner_.push(*this); }
void PipeSequence::truncate(int64_t n, int64_t pos) {
  for (auto& L : st_.layers) {
    L.truncate(n, pos);
  }
  st_.mtp.raw.drop_from(pos);
  owner_.send_simple(kTruncate, id_, n, pos);
}

void at_exit() {
  Comm& comm = Comm::get();
  if (comm.finalized()) return;
  if (g_stats.evaluations > 0)
    std::fprintf(stderr, "ds4: MPI pipeline: %lld evaluations in %lld micro-batches, %lld of them batches of "
                 "several sessions spread over the stages\n", static_cast<long long>(g_stats.evaluations),
                 static_cast<long long>(g_stats.micro_batches), static_cast<long long>(g_stats.sessions_spread));
  Header h;
  h.op = kShutdown;
  comm.send(1, kChain, header_only(h));
  comm.finalize();
}

bool launched_by_mpirun() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}

}  // namespace

void init(int* argc, char*** argv) {
  if (!launched_by_mpirun()) return;
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  g_initialized = true;
  if (provided < MPI_THREAD_SERIALIZED) {
    if (g_rank == 0) std::fprintf(stderr, "ds4: this MPI library does not allow calls from several threads\n");
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  Comm::get().start(g_rank, g_size);
  if (g_size == 1) {
    std::atexit([] { Comm::get().finalize(); });
    return;
  }
  g_active = true;
  if (g_rank == 0) {
    std::atexit(at_exit);
    return;
  }
  serve();
}

void finalize() {
  if (!g_initialized) return;
  if (g_active) at_exit();
  else Comm::get().finalize();
}

int rank() { return g_rank; }
int size() { return g_active ? g_size : 1; }

Pipeline open_pipeline(const std::string& path, const EngineOptions& opt) {
  std::lock_guard<std::mutex> lk(g_rpc);
  static int next_engine = 1;
  const int engine = next_engine++;
  Comm& comm = Comm::get();
  // The split, from rank 0's copy of the file's header.
  std::vector<int> bounds;
  {
    std::unique_ptr<gguf::File> f;
    ModelConfig c;
    try {
      f = gguf::File::open(path);
      c = model::read_config(*f);
    } catch (const gguf::Error& e) {
      throw Error(Error::Kind::BadModel, e.what());
    }
    try {
      bounds = opt.layer_split.empty() ? model::split_by_bytes(model::stage_bytes(*f, c.n_layers), g_size)
                                       : model::split_from_counts(opt.layer_split, c.n_layers, g_size);
    } catch (const std::invalid_argument& e) {
      throw Error(Error::Kind::InvalidArgument, std::string("MPI pipeline over ") + std::to_string(g_size) +
                                                   " ranks: " + e.what());
    }
  }
  Writer w;
  Header h;
  h.op = kOpen;
  h.engine = engine;
  w.put(h);
  w.put_str(path);
  w.put<int32_t>(opt.threads);
  w.put<int32_t>(opt.pin_threads);
  w.put<int32_t>(opt.qat_simulation);
  std::vector<int32_t> b32(bounds.begin(), bounds.end());
  w.put_n(b32.data(), b32.size());
  comm.send(1, kChain, std::move(w.b));

  Pipeline p;
  std::string failures;
  try {
    p.weights = model::Weights::load(path, opt.mtp_path, 0, bounds[1]);
  } catch (const std::exception& e) {
    failures = rank_name(0, host_name()) + ": cannot load layers 0.." + std::to_string(bounds[1] - 1) + ": " + e.what();
  }
  std::string split = "ds4: MPI pipeline: rank 0 layers 0.." + std::to_string(bounds[1] - 1) + " + embedding";
  for (int r = 1; r < g_size; ++r) {
    Bytes st = comm.recv(r, kStatus);
    Reader rd{st};
    const std::string err = rd.get_str();
    std::string host;
    std::vector<int32_t> fp;
    if (err.empty())
      for (int i = 0; i < 4; ++i) fp.push_back(rd.get<int32_t>());
    host = rd.get_str();
    std::string msg = err;
    if (msg.empty() && p.weights) {
      const ModelConfig& c = p.weights->config;
      if (fp != std::vector<int32_t>{c.n_layers, c.dim, c.vocab, c.hc})
        msg = "opened a model of another shape at " + path + " (every machine needs the same file)";
    }
    if (!msg.empty()) failures += (failures.empty() ? "" : "; ") + rank_name(r, host) + ": " + msg;
    split += ", rank " + std::to_string(r) + " (" + host + ") layers " + std::to_string(bounds[r]) + ".." +
             std::to_string(bounds[r + 1] - 1);
  }
  if (!failures.empty()) {
    Header cl;
    cl.op = kClose;
    cl.engine = engine;
    comm.send(1, kChain, header_only(cl));
    throw Error(Error::Kind::BadModel, "MPI pipeline: " + failures);
  }
  std::fprintf(stderr, "%s + head\n", split.c_str());
  p.backend = std::make_unique<PipelineBackend>(engine, *p.weights, cpu::make_backend(*p.weights, opt), bounds);
  return p;
}

}  // namespace ds4::mpi
