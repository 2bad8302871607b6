#include "mpi/comm.h"

#include <mpi.h>

#include <chrono>

namespace ds4::mpi {

struct Comm::Pending {
  MPI_Request req;
  Bytes buf;
};

Comm& Comm::get() {
  static Comm* c = new Comm;  // never destroyed: used from atexit handlers
  return *c;
}

void Comm::start(int rank, int size) {
  rank_ = rank;
  size_ = size;
  progress_ = std::thread([this] { progress_loop(); });
}

void Comm::init_world(int* argc, char*** argv) {
  int provided = 0, rank = 0, size = 1;
  MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  start(rank, size);
}

void Comm::send(int dest, int tag, Bytes msg) {
  auto* p = new Pending{MPI_REQUEST_NULL, std::move(msg)};
  std::lock_guard<std::mutex> lk(mu_);
  bytes_sent_ += p->buf.size();
  MPI_Isend(p->buf.data(), static_cast<int>(p->buf.size()), MPI_BYTE, dest, tag, MPI_COMM_WORLD, &p->req);
  pending_.push_back(p);
  cv_.notify_all();
}

bool Comm::test_pending_locked() {
  for (auto it = pending_.begin(); it != pending_.end();) {
    int done = 0;
    MPI_Test(&(*it)->req, &done, MPI_STATUS_IGNORE);
    if (done) {
      delete *it;
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  return pending_.empty();
}

// Sends only move while some MPI call runs in this process; this thread makes those calls
// while the caller computes. It sleeps between polls so that it costs no core.
void Comm::progress_loop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stop_) {
    if (pending_.empty()) {
      cv_.wait(lk);
      continue;
    }
    test_pending_locked();
    lk.unlock();
    std::this_thread::sleep_for(std::chrono::microseconds(50));
    lk.lock();
  }
}

namespace {
// Polls without holding a core: a few quick tries, then short sleeps.
template <class F>
void poll(std::mutex& mu, F&& try_once) {
  for (int i = 0;; ++i) {
    {
      std::lock_guard<std::mutex> lk(mu);
      if (try_once()) return;
    }
    if (i < 200) std::this_thread::yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(i < 2000 ? 20 : 200));
  }
}
}  // namespace

Bytes Comm::recv(int source, int tag) {
  Bytes out;
  poll(mu_, [&] {
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(source, tag, MPI_COMM_WORLD, &flag, &st);
    if (!flag) return false;
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    out.resize(static_cast<size_t>(count));
    MPI_Recv(out.data(), count, MPI_BYTE, source, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    return true;
  });
  return out;
}

void Comm::flush() {
  poll(mu_, [&] { return test_pending_locked(); });
}

void Comm::finalize() {
  if (finalized_) return;
  flush();
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (progress_.joinable()) progress_.join();
  finalized_ = true;
  MPI_Finalize();
}

}  // namespace ds4::mpi
