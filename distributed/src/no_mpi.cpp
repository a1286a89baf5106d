// Built instead of the MPI backend when MPI is not found: the thread communicator still works.
#include <xgrad/check.hpp>

#include <cstdlib>

#include "internal.hpp"

namespace xg::distributed {

bool has_mpi() { return false; }

std::shared_ptr<Communicator> mpi_world(CommOptions) { fail("xgrad was built without MPI"); }

}  // namespace xg::distributed
