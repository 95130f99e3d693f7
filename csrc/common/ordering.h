// Tie-breaking order shared by the CPU and CUDA engines, torch-free, C++17 and CUDA.
//
// Every argmin / argmax of the ops (the next OPTICS point, a cluster's prototype, the greedy PTS fill) picks the best
// value and, among equal values, the smallest index (SPEC §4). Written once so that a sequential scan on the CPU and
// any reduction tree on the GPU choose the same element.
#pragma once

#include "host_device.h"

namespace hetmm {

// Better of two (value, index) pairs: kMax prefers the larger value, kMax = false the smaller; equal values go to the
// smaller index. A total order on pairs (no NaN), so any reduction tree gives the same winner.
template <bool kMax, typename Index>
HETMM_HOST_DEVICE inline bool better(double v, Index i, double best_v, Index best_i) {
  return kMax ? (v > best_v || (v == best_v && i < best_i)) : (v < best_v || (v == best_v && i < best_i));
}

}  // namespace hetmm
