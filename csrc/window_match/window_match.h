// window_match: fused mutual template matching (SPEC §2), torch-free declarations.
//
// Inputs (one layer):
//   query      [B, C, H, W]  query features, L2-normalised over C at every pixel (not re-normalised here).
//   templates  [N, C, H, W]  template features, same C, H, W.
//   Element type: float32, float16, bfloat16 or float64 (both maps the same); arbitrary element strides.
// Outputs (caller-allocated, contiguous float32):
//   fwd [B, H, W]  fwd[b, p] = max(-1, max_t max_{p' in Omega_kf(p)} <q[b, :, p],  T[t, :, p']>)
//   bwd [B, H, W]  bwd[b, p] = max(-1, max_t max_{p' in Omega_kb(p)} <q[b, :, p'], T[t, :, p]>)
//   Omega_k(p): grid positions within d = k // 2 in both axes, clipped at the border (never padded).
//
// Semantics: both directions read the pair set {(p, p') : |p - p'|_inf <= max(kf, kb) // 2}; every pair's dot
// products (all b, all t) are computed exactly once and folded into the forward map of the query pixel and the
// backward map of the template pixel ("fused mutual matching").
//
// Numerics: float32/float16/bfloat16 inputs are computed in float32 (fp16/bf16 converted exactly while packing),
// float64 inputs in float64; the outputs are rounded to float32 (after the max, which rounding commutes with).
// Every dot product is one sequential multiply-add chain over c = 0..C-1 (fused in builds with FMA), so a result
// does not depend on the thread count, the schedule or the position of the pair in a tile. NaN inputs give
// unspecified outputs.
//
// Complexity: 2*B*ceil(N/L)*L*C*sum_p |Omega_k(p)| FLOPs (L = 16 templates per tile, 8 for float64; at most
// 2*B*N*H*W*k^2*C when L divides N, k the larger window); reads every template element once; extra memory
// B*C*H*W (pixel-major query copy) + threads*(B*H*W floats + W*(16*C + 16) compute-type elements), never
// O(B*N*H*W).
#pragma once

#include <cstdint>

namespace hetmm {

enum class FeatureDtype : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

// A strided 4-D feature tensor [count, channels, height, width]; strides are in elements, not bytes.
struct FeatureMap {
  const void* data = nullptr;
  FeatureDtype dtype = FeatureDtype::kFloat32;
  int64_t count = 0, channels = 0, height = 0, width = 0;
  int64_t stride_n = 0, stride_c = 0, stride_h = 0, stride_w = 0;
};

// Computes fwd and bwd (see above) with OpenMP threads (omp_get_max_threads()). Results are bit-identical for
// any number of threads. Throws std::invalid_argument on inconsistent shapes, empty maps, a null pointer or an
// even / non-positive window.
void window_match_cpu(const FeatureMap& query, const FeatureMap& templates, int64_t fwd_window, int64_t bwd_window,
                      float* fwd, float* bwd);

// Converts one IEEE binary16 / bfloat16 value (given as its bit pattern) to float32, exactly.
float half_bits_to_float(uint16_t bits);
float bfloat16_bits_to_float(uint16_t bits);

}  // namespace hetmm
