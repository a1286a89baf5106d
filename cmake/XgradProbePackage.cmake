# xgrad_probe_package(<var> <find_package arguments...>)
#
# Loads a package's config in a throw-away CMake run before this project loads it. An optional backend whose
# installed config is broken (Debian's oneDNN config requires OpenCL headers that are only a Recommends of
# its -dev package) would otherwise end the whole configure with a fatal error that QUIET cannot silence.
# Sets <var> to TRUE when the package loads, else FALSE and <var>_REASON to the probe's first error line.
function(xgrad_probe_package var)
  set(dir "${CMAKE_BINARY_DIR}/CMakeFiles/xgrad_probe_${var}")
  file(REMOVE_RECURSE "${dir}")
  file(MAKE_DIRECTORY "${dir}/src")
  list(JOIN ARGN " " args)
  file(WRITE "${dir}/src/CMakeLists.txt"
       "cmake_minimum_required(VERSION 3.20)\nproject(xgrad_probe LANGUAGES CXX)\nfind_package(${args} REQUIRED)\n")
  set(forward "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}")
  foreach(v CMAKE_PREFIX_PATH CMAKE_FIND_ROOT_PATH CMAKE_MODULE_PATH ${ARGV1}_DIR ${ARGV1}_ROOT)
    if(DEFINED ${v})
      list(JOIN ${v} "\\;" value)
      list(APPEND forward "-D${v}=${value}")
    endif()
  endforeach()
  execute_process(COMMAND "${CMAKE_COMMAND}" -S "${dir}/src" -B "${dir}/build" ${forward}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0)
    set(${var} TRUE PARENT_SCOPE)
  else()
    set(${var} FALSE PARENT_SCOPE)
    # The first line that says what is missing, without CMake's call stack.
    string(REGEX MATCH "Could NOT find [^\n]*|Could not find a package configuration file provided by \"[^\"]*\"" reason "${err}")
    if(NOT reason)
      string(REGEX MATCH "CMake Error[^\n]*\n[^\n]*" reason "${err}")
      string(REGEX REPLACE "\n *" " " reason "${reason}")
    endif()
    set(${var}_REASON "${reason}" PARENT_SCOPE)
  endif()
  file(REMOVE_RECURSE "${dir}")
endfunction()
