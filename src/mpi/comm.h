// MPI point-to-point for the pipeline (docs/mpi.md): byte messages, sends that complete in
// the background while the caller computes, and receives that wait without spinning a core.
// Every MPI call of the process goes through one Comm (one mutex), so MPI_THREAD_SERIALIZED
// is enough whatever thread calls.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace ds4::mpi {

using Bytes = std::vector<uint8_t>;

// Message tags.
enum Tag : int {
  kChain = 1,   // commands passed from rank to rank (0 -> 1 -> ... -> last)
  kResult = 2,  // last rank -> 0: outputs of an evaluation
  kStatus = 3,  // rank -> 0: load status of a stage (empty: loaded)
  kPull = 4,    // rank -> 0: its layers' state of a sequence
  kPush = 5,    // 0 -> rank: its layers' state of a sequence
};

class Comm {
 public:
  static Comm& get();
  void start(int rank, int size);
  // MPI_Init (serialized threads) and start(); for tools that use Comm alone (bench_mpi).
  void init_world(int* argc, char*** argv);
  int rank() const { return rank_; }
  int size() const { return size_; }
  // Queues `msg` to `dest`; returns at once (the progress thread completes it).
  void send(int dest, int tag, Bytes msg);
  // Waits for the next message from `source` with `tag`.
  Bytes recv(int source, int tag);
  // Waits until every queued send has completed.
  void flush();
  // Flushes, stops the progress thread, MPI_Finalize.
  void finalize();
  bool finalized() const { return finalized_; }
  // Bytes sent so far (benchmarks).
  uint64_t bytes_sent() const { return bytes_sent_; }

 private:
  struct Pending;
  void progress_loop();
  bool test_pending_locked();  // true when none is left

  int rank_ = 0, size_ = 1;
  std::mutex mu_;  // every MPI call
  std::condition_variable cv_;
  std::list<Pending*> pending_;
  std::thread progress_;
  bool stop_ = false;
  bool finalized_ = false;
  uint64_t bytes_sent_ = 0;
};

// Little helpers to pack and unpack messages.
struct Writer {
  Bytes b;
  template <class T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
  }
  template <class T>
  void put_n(const T* p, size_t n) {
    put<uint64_t>(n);
    const auto* q = reinterpret_cast<const uint8_t*>(p);
    b.insert(b.end(), q, q + n * sizeof(T));
  }
  void put_str(const std::string& s) { put_n(s.data(), s.size()); }
};

struct Reader {
  const Bytes& b;
  size_t off = 0;
  void need(size_t n) {
    if (b.size() - off < n) throw std::runtime_error("MPI message shorter than its contents");
  }
  template <class T>
  T get() {
    T v;
    need(sizeof(T));
    std::memcpy(&v, b.data() + off, sizeof(T));
    off += sizeof(T);
    return v;
  }
  template <class T>
  void get_n(std::vector<T>& out) {
    const uint64_t n = get<uint64_t>();
    need(n * sizeof(T));
    out.resize(n);
    if (n) std::memcpy(out.data(), b.data() + off, n * sizeof(T));
    off += n * sizeof(T);
  }
  std::string get_str() {
    std::vector<char> v;
    get_n(v);
    return std::string(v.begin(), v.end());
  }
};

}  // namespace ds4::mpi
