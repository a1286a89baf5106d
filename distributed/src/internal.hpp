// Pieces the communicators share.
#pragma once

#include <memory>

#include "xgrad/distributed/communicator.hpp"

namespace xg::distributed {

std::size_t dtype_bytes(DType dtype);
/// acc = op(acc, in), elementwise.
void reduce_into(void* acc, const void* in, std::size_t count, DType dtype, ReduceOp op);
std::shared_ptr<Communicator> single_process_communicator(CommOptions options);
/// Whether mpirun (or another MPI launcher) started this process.
bool launched_by_mpirun();
/// MPI_COMM_WORLD; initialises MPI (finalised at exit).
std::shared_ptr<Communicator> mpi_world(CommOptions options);

}  // namespace xg::distributed
