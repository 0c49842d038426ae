/* sdpa.h, the CPU library, for the CUDA tests' comparisons. */
#define SDPA_IMPLEMENTATION
#include "sdpa.h"
