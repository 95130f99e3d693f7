// window_match CPU kernel (SPEC §2), torch-free; see window_match.h for the contract.
//
// Work split: one OpenMP task per template row y2 (schedule dynamic). The task owns the backward map of row y2 for
// every b (written by it alone) and adds forward contributions to a per-thread partial forward map; the partial maps
// are merged with max after the parallel region. max is exact and order-free, and every dot product is computed
// once, by one fixed multiply-add sequence, so the outputs are bit-identical for any thread count.
//
// Tiling inside a task: templates are taken L at a time (a "chunk": L = 16 for float32 compute, 8 for float64; a
// short last chunk repeats its first template, which cannot change a maximum). The chunk's templates of row y2 are
// packed as panels [x2][C][L] (C*64 bytes per position, converted from fp16/bf16 on the way). The panel of template
// position p' = (y2, x2) is multiplied with every query pixel p of every image inside the window
// |p - p'|_inf <= d (d = max(kf, kb) / 2, clipped): a dense GEMM [B*|window|, C] x [C, L] with no pair outside the
// band, computed 6 query pixels at a time by a 6 x L register-blocked micro-kernel (12 AVX2 FMA accumulators; a
// portable scalar loop without AVX2). The max over the L lanes of each row of the result is folded into fwd[b, p]
// (if |p - p'| <= kf/2) and bwd[b, p'] (if |p - p'| <= kb/2).
//
// Data moved: the query is repacked once to pixel-major [B][H][W][C] in the compute type; every template element is
// read once and written once into a per-thread pack buffer of W panels; each panel stays in L1 while it meets its
// B*k^2 query pixels, which slide through L2 as x2 advances.
// FLOPs: 2*C*L*ceil(N/L)*sum_{p'} B*|window(p')| (~2*B*N*H*W*k^2*C when L divides N).
#include "window_match.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif
#if defined(__AVX2__) && defined(__FMA__)
#define HETMM_WM_AVX2 1
#include "../common/avx2_transpose.h"
#endif

namespace hetmm {

float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: mantissa * 2^-24 is exact in float32
      const float f = std::ldexp(static_cast<float>(mantissa), -24);
      return sign ? -f : f;
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

float bfloat16_bits_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

namespace {

constexpr int kRows = 6;           // query pixels per micro-kernel call (6 x 2 accumulators + 2 panel + 1 broadcast)
constexpr int kPrefetchAhead = 2;  // channels ahead whose template rows the pack prefetches

// Element types. type: stored element; acc: compute type; load: one element; load8: 8 consecutive elements as a
// float32 vector (only for float32 compute in AVX2 builds).
struct F32 {
  using type = float;
  using acc = float;
  static float load(float v) { return v; }
#ifdef HETMM_WM_AVX2
  static __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
#endif
};
struct F16 {
  using type = uint16_t;
  using acc = float;
#if defined(__F16C__)
  static float load(uint16_t v) { return _cvtsh_ss(v); }
#else
  static float load(uint16_t v) { return half_bits_to_float(v); }
#endif
#ifdef HETMM_WM_AVX2
#if defined(__F16C__)
  static __m256 load8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
#else
  static __m256 load8(const uint16_t* p) {
    alignas(32) float f[8];
    for (int i = 0; i < 8; ++i) f[i] = half_bits_to_float(p[i]);
    return _mm256_load_ps(f);
  }
#endif
#endif
};
struct BF16 {
  using type = uint16_t;
  using acc = float;
  static float load(uint16_t v) { return bfloat16_bits_to_float(v); }
#ifdef HETMM_WM_AVX2
  static __m256 load8(const uint16_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
#endif
};
struct F64 {
  using type = double;
  using acc = double;
  static double load(double v) { return v; }
};

// Templates per chunk: two 32-byte vectors of the compute type.
template <typename T>
constexpr int lanes() {
  return static_cast<int>(64 / sizeof(T));
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
template <typename T>
using Aligned = std::unique_ptr<T[], FreeDeleter>;

template <typename T>
Aligned<T> aligned_array(int64_t count) {
  const size_t bytes = ((static_cast<size_t>(std::max<int64_t>(count, 1)) * sizeof(T) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  return Aligned<T>(static_cast<T*>(p));
}

#ifdef HETMM_WM_AVX2
template <typename T>
struct Simd;
template <>
struct Simd<float> {
  using V = __m256;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_load_ps(p); }
  static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static float hmax(V a, V b) {
    const __m256 v = _mm256_max_ps(a, b);
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
};
template <>
struct Simd<double> {
  using V = __m256d;
  static V zero() { return _mm256_setzero_pd(); }
  static V load(const double* p) { return _mm256_load_pd(p); }
  static V broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static double hmax(V a, V b) {
    const __m256d v = _mm256_max_pd(a, b);
    __m128d m = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    m = _mm_max_sd(m, _mm_unpackhi_pd(m, m));
    return _mm_cvtsd_f64(m);
  }
};

// out[i] = max_j sum_c q[i][c] * panel[c][j] over the L lanes j (panel 32-byte aligned), for 6 query rows.
template <typename T>
void dot_max(const T* const* q, const T* panel, int64_t C, T* out) {
  using S = Simd<T>;
  constexpr int L = lanes<T>(), H = L / 2;
  const T *q0 = q[0], *q1 = q[1], *q2 = q[2], *q3 = q[3], *q4 = q[4], *q5 = q[5];
  typename S::V a00 = S::zero(), a01 = S::zero(), a10 = S::zero(), a11 = S::zero(), a20 = S::zero(),
                a21 = S::zero(), a30 = S::zero(), a31 = S::zero(), a40 = S::zero(), a41 = S::zero(),
                a50 = S::zero(), a51 = S::zero();
  for (int64_t c = 0; c < C; ++c) {
    const typename S::V t0 = S::load(panel + L * c), t1 = S::load(panel + L * c + H);
    typename S::V b = S::broadcast(q0 + c);
    a00 = S::fmadd(b, t0, a00);
    a01 = S::fmadd(b, t1, a01);
    b = S::broadcast(q1 + c);
    a10 = S::fmadd(b, t0, a10);
    a11 = S::fmadd(b, t1, a11);
    b = S::broadcast(q2 + c);
    a20 = S::fmadd(b, t0, a20);
    a21 = S::fmadd(b, t1, a21);
    b = S::broadcast(q3 + c);
    a30 = S::fmadd(b, t0, a30);
    a31 = S::fmadd(b, t1, a31);
    b = S::broadcast(q4 + c);
    a40 = S::fmadd(b, t0, a40);
    a41 = S::fmadd(b, t1, a41);
    b = S::broadcast(q5 + c);
    a50 = S::fmadd(b, t0, a50);
    a51 = S::fmadd(b, t1, a51);
  }
  out[0] = S::hmax(a00, a01);
  out[1] = S::hmax(a10, a11);
  out[2] = S::hmax(a20, a21);
  out[3] = S::hmax(a30, a31);
  out[4] = S::hmax(a40, a41);
  out[5] = S::hmax(a50, a51);
}
#else
template <typename T>
void dot_max(const T* const* q, const T* panel, int64_t C, T* out) {
  constexpr int L = lanes<T>();
  T acc[kRows][L] = {};
  for (int64_t c = 0; c < C; ++c) {
    const T* t = panel + L * c;
    for (int i = 0; i < kRows; ++i) {
      const T b = q[i][c];
      for (int j = 0; j < L; ++j) acc[i][j] += b * t[j];
    }
  }
  for (int i = 0; i < kRows; ++i) out[i] = *std::max_element(acc[i], acc[i] + L);
}
#endif

// Whether the AVX2 8x8 transposes apply: float32 compute from unit-stride rows.
template <typename D>
constexpr bool vector_pack() {
#ifdef HETMM_WM_AVX2
  return sizeof(typename D::acc) == 4;
#else
  return false;
#endif
}

// dst[i * dst_stride + j] = src[j][x + i] as float32 for i, j < 8: an 8x8 transpose through registers, so both the
// loads and the stores are whole 32-byte vectors.
template <typename D>
inline void transpose8(const typename D::type* const* src, int64_t x, float* dst, int64_t dst_stride) {
#ifdef HETMM_WM_AVX2
  if constexpr (vector_pack<D>()) {
    __m256 r[8];
    for (int j = 0; j < 8; ++j) r[j] = D::load8(src[j] + x);
    store_transposed8x8(r, dst, dst_stride);
  }
#else
  (void)src, (void)x, (void)dst, (void)dst_stride;
#endif
}

// qp[b][y][x][c] = query[b][c][y][x] in the compute type; rows (b, y) split over threads.
template <typename D>
void repack_query(const FeatureMap& q, typename D::acc* qp) {
  using E = typename D::type;
  const auto* base = static_cast<const E*>(q.data);
  const int64_t B = q.count, C = q.channels, H = q.height, W = q.width;
  const bool vec = vector_pack<D>() && q.stride_w == 1;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < B * H; ++r) {
    const int64_t b = r / H, y = r % H;
    const E* row0 = base + b * q.stride_n + y * q.stride_h;
    typename D::acc* dst = qp + r * W * C;
    int64_t c0 = 0;
    if constexpr (vector_pack<D>()) {
      if (vec) {
        for (; c0 + 8 <= C; c0 += 8) {
          const E* rows[8];
          for (int i = 0; i < 8; ++i) rows[i] = row0 + (c0 + i) * q.stride_c;
          int64_t x = 0;
          for (; x + 8 <= W; x += 8) transpose8<D>(rows, x, dst + x * C + c0, C);
          for (; x < W; ++x)
            for (int i = 0; i < 8; ++i) dst[x * C + c0 + i] = D::load(rows[i][x]);
        }
      }
    }
    for (int64_t c = c0; c < C; ++c)
      for (int64_t x = 0; x < W; ++x) dst[x * C + c] = D::load(row0[c * q.stride_c + x * q.stride_w]);
  }
}

// buf[x * panel_stride + c * L + j] = templates[n0 + j][c][y][x] in the compute type; lanes j >= nc repeat template
// n0. Each source row (n, c, y) lies on its own page, so the rows kPrefetchAhead channels ahead are prefetched while
// the current L rows go through 8x8 register transposes (every store fills half a 64-byte panel line).
// panel_stride is padded off a multiple of 4 KiB so the W panel lines of one channel do not alias one cache set.
template <typename D>
void pack_templates(const FeatureMap& t, int64_t n0, int64_t nc, int64_t y, int64_t panel_stride,
                    typename D::acc* buf) {
  using E = typename D::type;
  constexpr int L = lanes<typename D::acc>();
  const auto* base = static_cast<const E*>(t.data);
  const int64_t C = t.channels, W = t.width;
  const bool dense = t.stride_w == 1;
  const int64_t row_bytes = W * static_cast<int64_t>(sizeof(E));
  const E* first[L];
  for (int j = 0; j < L; ++j) first[j] = base + (n0 + (j < nc ? j : 0)) * t.stride_n + y * t.stride_h;
  for (int64_t c = 0; c < C; ++c) {
    const E* rows[L];
    for (int j = 0; j < L; ++j) rows[j] = first[j] + c * t.stride_c;
    if (dense && c + kPrefetchAhead < C) {
      for (int j = 0; j < nc; ++j) {
        const char* ahead = reinterpret_cast<const char*>(rows[j] + kPrefetchAhead * t.stride_c);
        for (int64_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(ahead + off, 0, 0);
      }
    }
    typename D::acc* out = buf + c * L;
    int64_t x = 0;
    if constexpr (vector_pack<D>()) {
      if (dense) {
        for (; x + 8 <= W; x += 8) {
          transpose8<D>(rows, x, out + x * panel_stride, panel_stride);
          transpose8<D>(rows + 8, x, out + x * panel_stride + 8, panel_stride);
        }
      }
    }
    for (; x < W; ++x)
      for (int j = 0; j < L; ++j) out[x * panel_stride + j] = D::load(rows[j][x * t.stride_w]);
  }
}

// One query pixel of a template position's window: where its vector lives and where its result goes.
template <typename T>
struct Pair {
  const T* q;
  int64_t fwd_index;  // flat [B, H, W] index of the query pixel, or -1 when outside the forward window
  int64_t bwd_image;  // b when inside the backward window, else -1
};

template <typename D>
void run(const FeatureMap& q, const FeatureMap& t, int64_t kf, int64_t kb, float* fwd, float* bwd) {
  using T = typename D::acc;
  constexpr int L = lanes<T>();
  const int64_t B = q.count, N = t.count, C = q.channels, H = q.height, W = q.width;
  const int64_t df = kf / 2, db = kb / 2, d = std::max(df, db);
  const int64_t plane = B * H * W;

  Aligned<T> qp = aligned_array<T>(plane * C);
  repack_query<D>(q, qp.get());

#ifdef _OPENMP
  const int threads = omp_get_max_threads();
#else
  const int threads = 1;
#endif
  // Filled here, not by each thread: the team may be smaller than requested (nested or limited OpenMP).
  Aligned<float> fwd_parts = aligned_array<float>(static_cast<int64_t>(threads) * plane);
  std::fill(fwd_parts.get(), fwd_parts.get() + threads * plane, -1.0f);
  const int64_t panel_stride = C * L + L;
  const int64_t span = std::min(2 * d + 1, H) * std::min(2 * d + 1, W);

#pragma omp parallel num_threads(threads)
  {
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
#else
    const int tid = 0;
#endif
    float* fpart = fwd_parts.get() + tid * plane;
    Aligned<T> pack = aligned_array<T>(W * panel_stride);
    std::vector<Pair<T>> pairs(static_cast<size_t>(B * span));
    std::vector<float> bwd_row(static_cast<size_t>(B * W));
    const T* ptrs[kRows];
    T res[kRows];

#pragma omp for schedule(dynamic, 1)
    for (int64_t y2 = 0; y2 < H; ++y2) {
      std::fill(bwd_row.begin(), bwd_row.end(), -1.0f);
      const int64_t ylo = std::max<int64_t>(0, y2 - d), yhi = std::min(H - 1, y2 + d);
      for (int64_t n0 = 0; n0 < N; n0 += L) {
        pack_templates<D>(t, n0, std::min<int64_t>(L, N - n0), y2, panel_stride, pack.get());
        for (int64_t x2 = 0; x2 < W; ++x2) {
          const T* panel = pack.get() + x2 * panel_stride;
          const int64_t xlo = std::max<int64_t>(0, x2 - d), xhi = std::min(W - 1, x2 + d);
          Pair<T>* fill = pairs.data();
          for (int64_t b = 0; b < B; ++b) {
            for (int64_t y = ylo; y <= yhi; ++y) {
              const int64_t dy = y > y2 ? y - y2 : y2 - y;
              const int64_t row = (b * H + y) * W;
              for (int64_t x = xlo; x <= xhi; ++x) {
                const int64_t dist = std::max(dy, x > x2 ? x - x2 : x2 - x);
                *fill++ = {qp.get() + (row + x) * C, dist <= df ? row + x : -1, dist <= db ? b : -1};
              }
            }
          }
          const int64_t count = fill - pairs.data();
          for (int64_t g = 0; g < count; g += kRows) {
            const int64_t rows = std::min<int64_t>(kRows, count - g);
            for (int i = 0; i < kRows; ++i) ptrs[i] = pairs[g + (i < rows ? i : 0)].q;
            dot_max<T>(ptrs, panel, C, res);
            for (int64_t i = 0; i < rows; ++i) {
              // Rounding to float32 is monotone, so it commutes with the max.
              const float v = static_cast<float>(res[i]);
              const Pair<T>& pr = pairs[g + i];
              if (pr.fwd_index >= 0) fpart[pr.fwd_index] = std::max(fpart[pr.fwd_index], v);
              if (pr.bwd_image >= 0) {
                float& o = bwd_row[pr.bwd_image * W + x2];
                o = std::max(o, v);
              }
            }
          }
        }
      }
      for (int64_t b = 0; b < B; ++b) std::copy_n(bwd_row.data() + b * W, W, bwd + (b * H + y2) * W);
    }
  }

#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < plane; ++i) {
    float m = fwd_parts[i];
    for (int k = 1; k < threads; ++k) m = std::max(m, fwd_parts[k * plane + i]);
    fwd[i] = m;
  }
}

void check_map(const FeatureMap& m, const char* name) {
  if (m.data == nullptr) throw std::invalid_argument(std::string("hetmm::window_match_cpu: ") + name + " is null");
  if (m.count <= 0 || m.channels <= 0 || m.height <= 0 || m.width <= 0)
    throw std::invalid_argument(std::string("hetmm::window_match_cpu: ") + name + " is empty, shape [" +
                                std::to_string(m.count) + ", " + std::to_string(m.channels) + ", " +
                                std::to_string(m.height) + ", " + std::to_string(m.width) + "]");
}

}  // namespace

void window_match_cpu(const FeatureMap& query, const FeatureMap& templates, int64_t fwd_window, int64_t bwd_window,
                      float* fwd, float* bwd) {
  check_map(query, "query");
  check_map(templates, "templates");
  if (query.channels != templates.channels || query.height != templates.height || query.width != templates.width)
    throw std::invalid_argument("hetmm::window_match_cpu: query and templates must have the same C, H, W");
  if (query.dtype != templates.dtype)
    throw std::invalid_argument("hetmm::window_match_cpu: query and templates must have the same dtype");
  for (int64_t k : {fwd_window, bwd_window})
    if (k <= 0 || k % 2 == 0)
      throw std::invalid_argument("hetmm::window_match_cpu: windows must be positive odd ints, got " +
                                  std::to_string(k));
  if (fwd == nullptr || bwd == nullptr) throw std::invalid_argument("hetmm::window_match_cpu: null output");
  switch (query.dtype) {
    case FeatureDtype::kFloat32:
      return run<F32>(query, templates, fwd_window, bwd_window, fwd, bwd);
    case FeatureDtype::kFloat16:
      return run<F16>(query, templates, fwd_window, bwd_window, fwd, bwd);
    case FeatureDtype::kBFloat16:
      return run<BF16>(query, templates, fwd_window, bwd_window, fwd, bwd);
    case FeatureDtype::kFloat64:
      return run<F64>(query, templates, fwd_window, bwd_window, fwd, bwd);
  }
  throw std::invalid_argument("hetmm::window_match_cpu: unknown dtype");
}

}  // namespace hetmm
