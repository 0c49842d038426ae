/* The Highway backend's implementation, compiled once as C++17 (no -march
 * flags: Highway compiles each target with its own attributes). The tests
 * and the bench link it with libhwy. */
#define SDPA_HWY_IMPLEMENTATION
#include "sdpa_hwy.h"
