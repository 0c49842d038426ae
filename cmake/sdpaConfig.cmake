# find_package(sdpa) entry point; installed by both CMake and `make install`.
# Gives the INTERFACE target sdpa::sdpa (include directory, -lm, threads).
include(CMakeFindDependencyMacro)
set(THREADS_PREFER_PTHREAD_FLAG ON)
find_dependency(Threads)
include("${CMAKE_CURRENT_LIST_DIR}/sdpaTargets.cmake")
