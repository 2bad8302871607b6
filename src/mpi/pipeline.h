// Pipeline parallelism over MPI (docs/mpi.md). Rank 0 runs the program (CLI, server,
// tokenizer, sampling) and the first stage; every other rank serves one stage: layers
// [bounds[r], bounds[r+1]) of the model, the last one also the output head. A batch's hidden
// states pass rank to rank; a prefill batch flows through as micro-batches so that every rank
// works at once. Only built with MPI (DS4_HAVE_MPI).
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"
#include "model/weights.h"

namespace ds4::mpi {

// Starts MPI when the process was started by mpirun. On ranks other than 0 it serves stages
// until rank 0 ends and then exits the process; on rank 0 it returns.
void init(int* argc, char*** argv);
int rank();
int size();
// Rank 0: tells the other ranks to exit, then MPI_Finalize (also run at exit).
void finalize();

// Rank 0: splits the model over the ranks, has each load its stage (an error names the rank
// that failed), and returns rank 0's weights (its stage only) and a backend that runs the
// whole pipeline.
struct Pipeline {
  std::unique_ptr<model::Weights> weights;
  std::unique_ptr<backend::Backend> backend;
};
Pipeline open_pipeline(const std::string& path, const EngineOptions& opt);

}  // namespace ds4::mpi
