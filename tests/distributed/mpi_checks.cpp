// The distributed checks under mpirun: every rank runs every check with MPI's world communicator.
// Exit status 0 when all pass on this rank; rank 0 prints one line per check.
#include <cstdio>
#include <exception>

#include "checks.hpp"

int main() {
  auto comm = xg::distributed::init({.timeout_seconds = 60});
  int failed = 0;
  for (const auto& [name, check] : test::distributed_checks()) {
    try {
      check(*comm);
      if (comm->rank() == 0) std::printf("ok   %s (%d ranks)\n", name.c_str(), comm->size());
    } catch (const std::exception& e) {
      ++failed;
      std::printf("FAIL %s on rank %d: %s\n", name.c_str(), comm->rank(), e.what());
    }
    std::fflush(stdout);
  }
  if (comm->size() < 2) {
    std::printf("FAIL expected at least 2 ranks, got %d: run under mpirun -np 2\n", comm->size());
    return 1;
  }
  return failed ? 1 : 0;
}
