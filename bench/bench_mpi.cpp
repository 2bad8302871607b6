// What the MPI pipeline's network carries per decode token (docs/mpi.md), timed on the
// pipeline's own transport (mpi::Comm): rank 0 sends the hidden state of one entry down the
// ranks (hc x dim floats + its entry), the last rank sends back the logits and final state
// (vocab + hc x dim floats). Run under mpirun with 2 or more ranks:
//   mpirun -np 2 build/bin/bench_mpi [--dim 4096 --hc 4 --vocab 129280 --iters 200]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "mpi/comm.h"

int main(int argc, char** argv) {
  int dim = 4096, hc = 4, vocab = 129280, iters = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int v = std::atoi(argv[i + 1]);
    if (a == "--dim") dim = v;
    else if (a == "--hc") hc = v;
    else if (a == "--vocab") vocab = v;
    else if (a == "--iters") iters = v;
    else {
      std::fprintf(stderr, "usage: mpirun -np N bench_mpi [--dim D --hc H --vocab V --iters N]\n");
      return 2;
    }
  }
  ds4::mpi::Comm& comm = ds4::mpi::Comm::get();
  comm.init_world(&argc, &argv);
  const int rank = comm.rank(), size = comm.size();
  if (size < 2) {
    std::fprintf(stderr, "bench_mpi: run it under mpirun with at least 2 ranks\n");
    comm.finalize();
    return 2;
  }
  // The pipeline's message sizes: 40-byte header + 24-byte entry + the state; the result.
  const size_t fwd = 40 + 24 + sizeof(float) * static_cast<size_t>(hc) * dim;
  const size_t back = sizeof(float) * (static_cast<size_t>(vocab) + static_cast<size_t>(hc) * dim);
  std::vector<double> rtt;
  for (int it = 0; it < iters + 10; ++it) {
    if (rank == 0) {
      const auto t0 = std::chrono::steady_clock::now();
      comm.send(1, ds4::mpi::kChain, ds4::mpi::Bytes(fwd, 1));
      ds4::mpi::Bytes r = comm.recv(size - 1, ds4::mpi::kResult);
      if (r.size() != back) std::abort();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (it >= 10) rtt.push_back(s);
    } else {
      ds4::mpi::Bytes m = comm.recv(rank - 1, ds4::mpi::kChain);
      if (rank + 1 < size) comm.send(rank + 1, ds4::mpi::kChain, std::move(m));
      else comm.send(0, ds4::mpi::kResult, ds4::mpi::Bytes(back, 2));
    }
  }
  if (rank == 0) {
    std::sort(rtt.begin(), rtt.end());
    const double med = rtt[rtt.size() / 2], p90 = rtt[rtt.size() * 9 / 10];
    std::printf("ranks %d: per decode token each boundary carries %zu B forward, the last rank %zu B back\n", size,
                fwd, back);
    std::printf("round trip through all ranks (loopback): median %.3f ms, p90 %.3f ms over %d tokens\n", med * 1e3,
                p90 * 1e3, iters);
    for (double gbit : {10.0, 1.0}) {
      const double wire = static_cast<double>(fwd * (size - 1) + back) * 8 / (gbit * 1e9);
      std::printf("at %.0f GbE: %.3f ms of transfer per token (+ ~0.05 ms latency per hop)\n", gbit, wire * 1e3);
    }
  }
  comm.finalize();
  return 0;
}
