# Configures xgrad with a oneDNN config and an MPI module that fail to load (as Debian's oneDNN config does
# without the OpenCL headers): configure must succeed with OpenBLAS alone and no MPI, and say why.
#   cmake -DSOURCE_DIR=... -DWORK_DIR=... -P broken_backends.cmake
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}/dnnl" "${WORK_DIR}/modules")
file(WRITE "${WORK_DIR}/dnnl/dnnl-config.cmake" "find_package(OpenCL_that_is_not_installed REQUIRED)\n")
file(WRITE "${WORK_DIR}/modules/FindMPI.cmake" "message(FATAL_ERROR \"this MPI install is broken\")\n")
execute_process(
  COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${WORK_DIR}/build" -DCMAKE_BUILD_TYPE=Release
          "-Ddnnl_DIR=${WORK_DIR}/dnnl" "-DCMAKE_MODULE_PATH=${WORK_DIR}/modules"
          -DXGRAD_BUILD_TESTS=OFF -DXGRAD_BUILD_EXAMPLES=OFF -DXGRAD_BUILD_BENCH=OFF
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(all "${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configure failed with a broken oneDNN and MPI:\n${all}")
endif()
foreach(expected "oneDNN's CMake config does not load" "OpenCL_that_is_not_installed" "building with OpenBLAS alone"
                 "MPI not usable" "thread communicator only")
  string(FIND "${all}" "${expected}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "configure did not say \"${expected}\":\n${all}")
  endif()
endforeach()
message(STATUS "configure went on without the broken backends, and said why")
file(REMOVE_RECURSE "${WORK_DIR}")
