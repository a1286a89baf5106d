// The distributed training checks, written once against a Communicator: the thread communicator runs
// them in the unit tests (test_distributed.cpp) and MPI runs them under mpirun (mpi_checks.cpp).
// A check throws xg::Error with what differed; every rank runs every check.
#pragma once

#include <xgrad/xgrad.hpp>

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace test {

using DistributedCheck = std::function<void(xg::distributed::Communicator&)>;
/// Every check with its name.
const std::vector<std::pair<std::string, DistributedCheck>>& distributed_checks();

}  // namespace test
