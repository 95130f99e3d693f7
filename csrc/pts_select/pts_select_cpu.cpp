// CPU kernels of pts_select (semantics: pts_select.h).
//
// Work split: OpenMP threads take groups of consecutive pixels (dynamic schedule). A group is as many whole cache
// lines of an input row (template i, channel c) as a 32 MiB packing budget allows, at most 64 pixels (64 for
// C = 256 and C = 512, 32 for C = 1024 at N = 200, float). The thread packs its group once, reading every input
// line exactly once, into per-pixel buffers [c][i] (i contiguous, input dtype; float through 8 x 8 register
// transposes), then runs the whole pipeline per pixel: Gram matrix, rounded distances, OPTICS, selection. Wide
// groups matter: the input rows are far apart in memory (a page or more), so the packing is bound by DRAM latency
// and page walks per visited row, and a visit reads `group` pixels; the next templates' rows are prefetched one
// block ahead.
// The selection after OPTICS runs the rules of pts_select_core.h, shared with the CUDA engine, in sequential loops.
// Buffers are per thread and allocated once: group * C * ld values of packed features (<= 32 MiB), a 64 x ld double
// block, 2 ld^2 doubles (G, R) and O(N) for the rest.
// Gram: channels in blocks of 64, converted to a double block (64 x ld, stays in L2); register tiles of 8 (i) x 6 (j)
// outputs = 12 AVX2 accumulators, 12 FMAs per channel against 2 vector loads and 6 broadcasts; only tiles on or
// above the diagonal are computed and the lower triangle is mirrored: ~N^2 C / 2 FMAs per pixel.
// Bytes per pixel: N C input values read once, written and read once packed; G and R (ld^2 doubles each) in L2/L3.
#include "pts_select.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef __linux__
#include <sys/mman.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HETMM_PTS_X86 1
#include <immintrin.h>

#include "../common/avx2_transpose.h"
#endif

namespace hetmm {

namespace {

constexpr int64_t kMR = 8;   // i extent of a register tile (2 vectors of 4 doubles)
constexpr int64_t kNR = 6;   // j extent of a register tile (broadcasts)
constexpr int64_t kKC = 64;  // channels per cache block of the Gram product
constexpr int64_t kPackBlock = 16;  // channels per block of the packing transpose (its destination lines stay in L1)
constexpr int64_t kLineBytes = 64;
constexpr int64_t kMaxGroup = 64;                  // pixels packed together
constexpr int64_t kPackBudget = int64_t(32) << 20;  // bytes of packed features per thread

// One multiply-add step of the Gram accumulation. The AVX2 kernel uses FMA; this fallback does too when the
// hardware has it, so both paths give the same bits (for float inputs the product is exact either way).
inline double mul_add(double a, double b, double acc) {
#ifdef FP_FAST_FMA
    return std::fma(a, b, acc);
#else
    return a * b + acc;
#endif
}

// Accumulate the channel block blk[c*ld + i] (c < nc) into the tiles on or above the diagonal of G
// (G[j*ld + i], i >= j); first: start from zero instead of G.
void gram_tiles_generic(const double* blk, int64_t nc, int64_t N, int64_t ld, double* G, bool first) {
    for (int64_t j0 = 0; j0 < N; j0 += kNR) {
        for (int64_t i0 = j0 / kMR * kMR; i0 < N; i0 += kMR) {
            double acc[kNR][kMR];
            for (int64_t s = 0; s < kNR; ++s)
                for (int64_t r = 0; r < kMR; ++r) acc[s][r] = first ? 0.0 : G[(j0 + s) * ld + i0 + r];
            for (int64_t c = 0; c < nc; ++c) {
                const double* a = blk + c * ld;
                for (int64_t s = 0; s < kNR; ++s)
                    for (int64_t r = 0; r < kMR; ++r) acc[s][r] = mul_add(a[i0 + r], a[j0 + s], acc[s][r]);
            }
            for (int64_t s = 0; s < kNR; ++s)
                for (int64_t r = 0; r < kMR; ++r) G[(j0 + s) * ld + i0 + r] = acc[s][r];
        }
    }
}

#ifdef HETMM_PTS_X86
__attribute__((target("avx2,fma"))) void gram_tiles_avx2(const double* blk, int64_t nc, int64_t N, int64_t ld,
                                                          double* G, bool first) {
    for (int64_t j0 = 0; j0 < N; j0 += kNR) {
        for (int64_t i0 = j0 / kMR * kMR; i0 < N; i0 += kMR) {
            double* g = G + j0 * ld + i0;
            __m256d a0, a1, b0, b1, c0v, c1v, d0, d1, e0, e1, f0, f1;
            if (first) {
                a0 = a1 = b0 = b1 = c0v = c1v = d0 = d1 = e0 = e1 = f0 = f1 = _mm256_setzero_pd();
            } else {
                a0 = _mm256_loadu_pd(g), a1 = _mm256_loadu_pd(g + 4);
                b0 = _mm256_loadu_pd(g + ld), b1 = _mm256_loadu_pd(g + ld + 4);
                c0v = _mm256_loadu_pd(g + 2 * ld), c1v = _mm256_loadu_pd(g + 2 * ld + 4);
                d0 = _mm256_loadu_pd(g + 3 * ld), d1 = _mm256_loadu_pd(g + 3 * ld + 4);
                e0 = _mm256_loadu_pd(g + 4 * ld), e1 = _mm256_loadu_pd(g + 4 * ld + 4);
                f0 = _mm256_loadu_pd(g + 5 * ld), f1 = _mm256_loadu_pd(g + 5 * ld + 4);
            }
            const double* a = blk;
            for (int64_t c = 0; c < nc; ++c, a += ld) {
                const __m256d x0 = _mm256_loadu_pd(a + i0), x1 = _mm256_loadu_pd(a + i0 + 4);
                __m256d y = _mm256_broadcast_sd(a + j0);
                a0 = _mm256_fmadd_pd(x0, y, a0), a1 = _mm256_fmadd_pd(x1, y, a1);
                y = _mm256_broadcast_sd(a + j0 + 1);
                b0 = _mm256_fmadd_pd(x0, y, b0), b1 = _mm256_fmadd_pd(x1, y, b1);
                y = _mm256_broadcast_sd(a + j0 + 2);
                c0v = _mm256_fmadd_pd(x0, y, c0v), c1v = _mm256_fmadd_pd(x1, y, c1v);
                y = _mm256_broadcast_sd(a + j0 + 3);
                d0 = _mm256_fmadd_pd(x0, y, d0), d1 = _mm256_fmadd_pd(x1, y, d1);
                y = _mm256_broadcast_sd(a + j0 + 4);
                e0 = _mm256_fmadd_pd(x0, y, e0), e1 = _mm256_fmadd_pd(x1, y, e1);
                y = _mm256_broadcast_sd(a + j0 + 5);
                f0 = _mm256_fmadd_pd(x0, y, f0), f1 = _mm256_fmadd_pd(x1, y, f1);
            }
            _mm256_storeu_pd(g, a0), _mm256_storeu_pd(g + 4, a1);
            _mm256_storeu_pd(g + ld, b0), _mm256_storeu_pd(g + ld + 4, b1);
            _mm256_storeu_pd(g + 2 * ld, c0v), _mm256_storeu_pd(g + 2 * ld + 4, c1v);
            _mm256_storeu_pd(g + 3 * ld, d0), _mm256_storeu_pd(g + 3 * ld + 4, d1);
            _mm256_storeu_pd(g + 4 * ld, e0), _mm256_storeu_pd(g + 4 * ld + 4, e1);
            _mm256_storeu_pd(g + 5 * ld, f0), _mm256_storeu_pd(g + 5 * ld + 4, f1);
        }
    }
}

bool cpu_has_avx2_fma() {
    static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return ok;
}
#endif

void gram_tiles(const double* blk, int64_t nc, int64_t N, int64_t ld, double* G, bool first) {
#ifdef HETMM_PTS_X86
    if (cpu_has_avx2_fma()) {
        gram_tiles_avx2(blk, nc, N, ld, G, first);
        return;
    }
#endif
    gram_tiles_generic(blk, nc, N, ld, G, first);
}

// The tiles on or above the diagonal: G[j*ld + i] for every i >= j (and some i < j next to the diagonal), from
// packed features xt[c*ld + i]. Float features are converted block by block into `scratch` (kKC * ld doubles).
void gram_upper(const double* xt, int64_t C, int64_t N, int64_t ld, double* G, double*) {
    for (int64_t c0 = 0; c0 < C; c0 += kKC)
        gram_tiles(xt + c0 * ld, std::min(kKC, C - c0), N, ld, G, c0 == 0);
}

void gram_upper(const float* xt, int64_t C, int64_t N, int64_t ld, double* G, double* scratch) {
    for (int64_t c0 = 0; c0 < C; c0 += kKC) {
        const int64_t nc = std::min(kKC, C - c0);
        const float* src = xt + c0 * ld;
        for (int64_t k = 0; k < nc * ld; ++k) scratch[k] = static_cast<double>(src[k]);
        gram_tiles(scratch, nc, N, ld, G, c0 == 0);
    }
}

// r[i] = round15(gram_distance(g[i])), the rounded distance scikit-learn works with (see optics_labels.h); true when
// some g[i] is not finite.
bool round_distances_generic(const double* g, double* r, int64_t n) {
    int64_t nonfinite = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double v = g[i];
        nonfinite |= !(std::fabs(v) <= std::numeric_limits<double>::max());
        r[i] = round15(gram_distance(v));
    }
    return nonfinite != 0;
}

#ifdef HETMM_PTS_X86
__attribute__((target("avx2"))) bool round_distances_avx2(const double* g, double* r, int64_t n) {
    const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0), scale = _mm256_set1_pd(1e15);
    const __m256d vmax = _mm256_set1_pd(std::numeric_limits<double>::max());
    const __m256d abs_mask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));
    __m256d nonfinite = zero;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m256d v = _mm256_loadu_pd(g + i);
        nonfinite = _mm256_or_pd(nonfinite, _mm256_cmp_pd(_mm256_and_pd(v, abs_mask), vmax, _CMP_NLE_UQ));
        const __m256d d = _mm256_max_pd(_mm256_sub_pd(one, v), zero);  // gram_distance: d > 0 ? d : +0
        _mm256_storeu_pd(r + i,
                         _mm256_div_pd(_mm256_round_pd(_mm256_mul_pd(d, scale), _MM_FROUND_CUR_DIRECTION), scale));
    }
    return (_mm256_movemask_pd(nonfinite) != 0) | round_distances_generic(g + i, r + i, n - i);
}
#endif

bool round_distances(const double* g, double* r, int64_t n) {
#ifdef HETMM_PTS_X86
    if (cpu_has_avx2_fma()) return round_distances_avx2(g, r, n);
#endif
    return round_distances_generic(g, r, n);
}

// A[i * ld + j] = A[j * ld + i] for j < i < N, in 4 x 4 blocks (the blocks may reach into the padding up to N
// rounded up to 4 <= ld, whose values nobody reads).
void mirror_generic(double* A, int64_t N, int64_t ld) {
    for (int64_t jb = 0; jb < N; jb += kMR) {
        const int64_t je = std::min(N, jb + kMR);
        for (int64_t ib = jb; ib < N; ib += kMR) {
            const int64_t ie = std::min(N, ib + kMR);
            for (int64_t i = ib; i < ie; ++i)
                for (int64_t j = jb; j < std::min(je, i); ++j) A[i * ld + j] = A[j * ld + i];
        }
    }
}

#ifdef HETMM_PTS_X86
__attribute__((target("avx2"))) void mirror_avx2(double* A, int64_t N, int64_t ld) {
    const int64_t n4 = (N + 3) / 4 * 4;
    for (int64_t bj = 0; bj < n4; bj += 4) {
        for (int64_t j = bj; j < bj + 4; ++j)
            for (int64_t i = j + 1; i < bj + 4; ++i) A[i * ld + j] = A[j * ld + i];
        for (int64_t bi = bj + 4; bi < n4; bi += 4) {
            const double* s = A + bj * ld + bi;
            const __m256d r0 = _mm256_loadu_pd(s), r1 = _mm256_loadu_pd(s + ld);
            const __m256d r2 = _mm256_loadu_pd(s + 2 * ld), r3 = _mm256_loadu_pd(s + 3 * ld);
            const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
            const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
            double* d = A + bi * ld + bj;
            _mm256_storeu_pd(d, _mm256_permute2f128_pd(t0, t2, 0x20));
            _mm256_storeu_pd(d + ld, _mm256_permute2f128_pd(t1, t3, 0x20));
            _mm256_storeu_pd(d + 2 * ld, _mm256_permute2f128_pd(t0, t2, 0x31));
            _mm256_storeu_pd(d + 3 * ld, _mm256_permute2f128_pd(t1, t3, 0x31));
        }
    }
}
#endif

void mirror(double* A, int64_t N, int64_t ld) {
#ifdef HETMM_PTS_X86
    if (cpu_has_avx2_fma() && (N + 3) / 4 * 4 <= ld) {
        mirror_avx2(A, N, ld);
        return;
    }
#endif
    mirror_generic(A, N, ld);
}

// Round the computed upper triangle (row j, columns i >= j) into R, then mirror G and R into the lower triangle.
// False when G has a non-finite value.
bool finish_gram(double* G, double* R, int64_t N, int64_t ld) {
    bool nonfinite = false;
    for (int64_t j = 0; j < N; ++j) nonfinite |= round_distances(G + j * ld + j, R + j * ld + j, N - j);
    mirror(G, N, ld);
    mirror(R, N, ld);
    return !nonfinite;
}

// 64-byte aligned, zero-initialised double buffer.
struct AlignedDoubles {
    struct Free {
        void operator()(double* p) const { ::operator delete[](p, std::align_val_t(64)); }
    };
    std::unique_ptr<double[], Free> ptr;
    explicit AlignedDoubles(int64_t n)
        : ptr(static_cast<double*>(::operator new[](sizeof(double) * static_cast<size_t>(std::max<int64_t>(n, 1)),
                                                    std::align_val_t(64)))) {
        std::memset(ptr.get(), 0, sizeof(double) * static_cast<size_t>(std::max<int64_t>(n, 1)));
    }
    double* get() const { return ptr.get(); }
};

// Pack the group's pixels as xt[q * pixel_stride + c * ld + i] = x[i * sN + c * sC + offset[q]], channels in blocks
// so that the block's destination lines stay in L1 while i advances; each (template, channel) row of the input is
// visited once and the same channel of the next template is prefetched (the rows are far apart in memory: no
// hardware prefetcher or page walk would start early).
template <typename T>
void pack_group_scalar(const T* x, int64_t N, int64_t C, int64_t sN, int64_t sC, const int64_t* offset, int64_t ng,
                       bool contiguous, int64_t ld, int64_t pixel_stride, T* xt, int64_t i_begin = 0) {
    for (int64_t c0 = 0; c0 < C; c0 += kPackBlock) {
        const int64_t c1 = std::min(C, c0 + kPackBlock);
        for (int64_t i = i_begin; i < N; ++i) {
            for (int64_t c = c0; c < c1; ++c) {
                const T* src = x + i * sN + c * sC;
                if (contiguous && i + 1 < N) {
                    const char* ahead = reinterpret_cast<const char*>(src + sN + offset[0]);
                    for (int64_t b = 0; b < ng * static_cast<int64_t>(sizeof(T)); b += kLineBytes)
                        __builtin_prefetch(ahead + b);
                }
                T* dst = xt + c * ld + i;
                if (contiguous) {
                    src += offset[0];
                    for (int64_t q = 0; q < ng; ++q) dst[q * pixel_stride] = src[q];
                } else {
                    for (int64_t q = 0; q < ng; ++q) dst[q * pixel_stride] = src[offset[q]];
                }
            }
        }
    }
}

#ifdef HETMM_PTS_X86
// Contiguous float pixels, 8 templates x 8 pixels at a time: 8 row loads, an in-register 8 x 8 transpose and 8
// stores of 8 consecutive templates, instead of 64 scalar stores. Fewer instructions per input row visited means
// more rows in flight, which is what this DRAM-latency-bound loop needs. Templates beyond a multiple of 8 and
// pixels beyond a multiple of 8 go through the scalar code.
__attribute__((target("avx2"))) void pack_group_float_avx2(const float* base, int64_t N, int64_t C, int64_t sN,
                                                           int64_t sC, int64_t ng, int64_t ld, int64_t pixel_stride,
                                                           float* xt) {
    const int64_t n8 = N / 8 * 8, q8 = ng / 8 * 8;
    const int64_t run_bytes = ng * static_cast<int64_t>(sizeof(float));
    for (int64_t c0 = 0; c0 < C; c0 += kPackBlock) {
        const int64_t c1 = std::min(C, c0 + kPackBlock);
        for (int64_t i0 = 0; i0 < n8; i0 += 8) {
            for (int64_t c = c0; c < c1; ++c) {
                const float* src = base + i0 * sN + c * sC;
                if (i0 + 8 < N) {
                    for (int64_t r = 0; r < 8 && i0 + 8 + r < N; ++r) {
                        const char* ahead = reinterpret_cast<const char*>(src + (8 + r) * sN);
                        for (int64_t b = 0; b < run_bytes; b += kLineBytes) __builtin_prefetch(ahead + b);
                    }
                }
                float* dst = xt + c * ld + i0;
                for (int64_t q0 = 0; q0 < q8; q0 += 8) {
                    __m256 r[8];
                    for (int64_t k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + k * sN + q0);
                    store_transposed8x8(r, dst + q0 * pixel_stride, pixel_stride);
                }
                for (int64_t q = q8; q < ng; ++q)
                    for (int64_t r = 0; r < 8; ++r) dst[q * pixel_stride + r] = src[r * sN + q];
            }
        }
    }
}
#endif

template <typename T>
void pack_group(const T* x, int64_t N, int64_t C, int64_t sN, int64_t sC, const int64_t* offset, int64_t ng,
                bool contiguous, int64_t ld, int64_t pixel_stride, T* xt) {
#ifdef HETMM_PTS_X86
    if constexpr (std::is_same_v<T, float>) {
        if (contiguous && cpu_has_avx2_fma()) {
            pack_group_float_avx2(x + offset[0], N, C, sN, sC, ng, ld, pixel_stride, xt);
            if (N % 8) pack_group_scalar(x, N, C, sN, sC, offset, ng, contiguous, ld, pixel_stride, xt, N / 8 * 8);
            return;
        }
    }
#endif
    pack_group_scalar(x, N, C, sN, sC, offset, ng, contiguous, ld, pixel_stride, xt);
}

// Zeroed buffer of n values of T, 2 MiB aligned and (Linux) backed by huge pages when the kernel allows it: the
// packing writes to many rows of it at once.
template <typename T>
struct PackBuffer {
    struct Free {
        void operator()(T* p) const { std::free(p); }
    };
    std::unique_ptr<T, Free> ptr;
    explicit PackBuffer(int64_t n) {
        constexpr size_t huge = size_t(2) << 20;
        const size_t bytes = (sizeof(T) * static_cast<size_t>(std::max<int64_t>(n, 1)) + huge - 1) / huge * huge;
        ptr.reset(static_cast<T*>(std::aligned_alloc(huge, bytes)));
        if (!ptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        madvise(ptr.get(), bytes, MADV_HUGEPAGE);  // advisory; failure only costs speed
#endif
        std::memset(ptr.get(), 0, bytes);
    }
    T* get() const { return ptr.get(); }
};

// out (nullable): the K choices, [K, P]; labels_out (nullable): the OPTICS labels of step 2, [N, P].
template <typename T>
int64_t pts_select_impl(const T* x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC, int64_t sH,
                        int64_t sW, int64_t K, int64_t* out, int64_t* labels_out, int num_threads) {
    const int64_t P = H * W;
    const int64_t ld = gram_ld(N);
    const int64_t min_samples = pts_min_samples(N, K);
#ifdef _OPENMP
    if (num_threads <= 0) num_threads = omp_get_max_threads();
#else
    num_threads = 1;
#endif
    // Pixels packed together: as many as the budget allows, in whole cache lines of the input. Each visit of an
    // input row (template i, channel c) reads `group` consecutive pixels; the input rows lie on different pages
    // (4 KiB or more apart in practice), so wide groups are what keeps page walks and DRAM latency per byte low.
    const int64_t line = kLineBytes / static_cast<int64_t>(sizeof(T));
    const int64_t pixel_bytes = C * ld * static_cast<int64_t>(sizeof(T));
    int64_t group = std::clamp<int64_t>(kPackBudget / std::max<int64_t>(pixel_bytes, 1), line, kMaxGroup);
    const int64_t per_thread = (P + num_threads - 1) / num_threads;
    group = std::max(line, std::min(group, (per_thread + line - 1) / line * line) / line * line);
    const int64_t n_groups = (P + group - 1) / group;
    // One extra cache line per pixel buffer so that the `group` write streams of the packing do not share cache sets
    // (C * ld * sizeof(T) is often a multiple of 4 KiB).
    const int64_t pixel_stride = C * ld + kLineBytes / static_cast<int64_t>(sizeof(T));
    int64_t first_bad = -1;

#ifdef _OPENMP
#pragma omp parallel num_threads(static_cast<int>(std::min<int64_t>(num_threads, n_groups)))
#endif
    {
        PackBuffer<T> packed(group * pixel_stride);  // zeroed: padding columns N..ld stay 0
        AlignedDoubles scratch(kKC * ld);
        AlignedDoubles gram(ld * ld);
        AlignedDoubles rounded(ld * ld);
        std::vector<int64_t> labels(static_cast<size_t>(N));
        std::vector<int64_t> offset(static_cast<size_t>(group));
        OpticsWorkspace optics_ws;
        optics_ws.resize(N);
        PtsWorkspace pts_ws;
        pts_ws.resize(N);
        int64_t my_bad = -1;

#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t t = 0; t < n_groups; ++t) {
            const int64_t p0 = t * group;
            const int64_t ng = std::min(group, P - p0);
            bool contiguous = sW == 1;
            for (int64_t q = 0; q < ng; ++q) {
                offset[q] = (p0 + q) / W * sH + (p0 + q) % W * sW;
                contiguous &= offset[q] == offset[0] + q;
            }
            T* xt = packed.get();
            pack_group(x, N, C, sN, sC, offset.data(), ng, contiguous, ld, pixel_stride, xt);
            for (int64_t q = 0; q < ng; ++q) {
                const int64_t p = p0 + q;
                gram_upper(xt + q * pixel_stride, C, N, ld, gram.get(), scratch.get());
                if (!finish_gram(gram.get(), rounded.get(), N, ld)) {
                    if (my_bad < 0 || p < my_bad) my_bad = p;
                    continue;
                }
                optics_xi_rounded(rounded.get(), ld, N, min_samples, 0.05, optics_ws, labels.data(), true);
                if (labels_out != nullptr)
                    for (int64_t i = 0; i < N; ++i) labels_out[i * P + p] = labels[static_cast<size_t>(i)];
                if (out != nullptr) pts_choose(gram.get(), ld, N, labels.data(), K, pts_ws, out + p, P);
            }
        }
#ifdef _OPENMP
#pragma omp critical(hetmm_pts_first_bad)
#endif
        if (my_bad >= 0 && (first_bad < 0 || my_bad < first_bad)) first_bad = my_bad;
    }
    return first_bad;
}

constexpr int64_t kGatherBufferBytes = int64_t(256) << 10;  // per thread: the N input rows of one task

// Tasks are (channel c, block of consecutive pixels). A task first copies the block's N input rows (template n,
// channel c) into a private buffer whose rows are `block` + 16 values apart, then fills its K output rows from there.
// Gathering straight from the input would pick among N rows whose distance is a large power of two (C * H * W values)
// for every pixel: they all fall into the same cache sets and on different pages, and every element misses (3x
// slower, measured on the category shape).
template <typename U>
void gather_sheets_impl(const U* x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC, int64_t sH,
                        int64_t sW, const int64_t* idx, int64_t K, U* out, int num_threads) {
    const int64_t P = H * W;
    const bool rows_contiguous = sW == 1 && sH == W;
    const int64_t per_row = kGatherBufferBytes / (N * static_cast<int64_t>(sizeof(U)));
    const int64_t block = std::min(std::clamp<int64_t>(per_row / 16 * 16, 16, 1024), P);
    const int64_t row_stride = block + 16;
    const int64_t n_blocks = (P + block - 1) / block;
    const int64_t tasks = C * n_blocks;
#ifdef _OPENMP
    if (num_threads <= 0) num_threads = omp_get_max_threads();
    const int threads = static_cast<int>(std::clamp<int64_t>(tasks, 1, num_threads));
#pragma omp parallel num_threads(threads)
#endif
    {
        std::vector<U> buffer(static_cast<size_t>(N * row_stride));
        U* buf = buffer.data();
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t task = 0; task < tasks; ++task) {
            const int64_t c = task / n_blocks;
            const int64_t p0 = task % n_blocks * block, np = std::min(P, p0 + block) - p0;
            const U* xc = x + c * sC;
            for (int64_t n = 0; n < N; ++n) {
                U* dst = buf + n * row_stride;
                if (rows_contiguous) {
                    std::memcpy(dst, xc + n * sN + p0, sizeof(U) * static_cast<size_t>(np));
                } else {
                    for (int64_t q = 0; q < np; ++q)
                        dst[q] = xc[n * sN + (p0 + q) / W * sH + (p0 + q) % W * sW];
                }
            }
            for (int64_t k = 0; k < K; ++k) {
                const int64_t* ik = idx + k * P + p0;
                U* o = out + (k * C + c) * P + p0;
                for (int64_t q = 0; q < np; ++q) o[q] = buf[ik[q] * row_stride + q];
            }
        }
    }
}

}  // namespace

void gather_sheets_cpu(const void* x, int64_t elem_bytes, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN,
                       int64_t sC, int64_t sH, int64_t sW, const int64_t* idx, int64_t K, void* out,
                       int num_threads) {
    switch (elem_bytes) {
        case 2:
            gather_sheets_impl(static_cast<const uint16_t*>(x), N, C, H, W, sN, sC, sH, sW, idx, K,
                               static_cast<uint16_t*>(out), num_threads);
            break;
        case 4:
            gather_sheets_impl(static_cast<const uint32_t*>(x), N, C, H, W, sN, sC, sH, sW, idx, K,
                               static_cast<uint32_t*>(out), num_threads);
            break;
        case 8:
            gather_sheets_impl(static_cast<const uint64_t*>(x), N, C, H, W, sN, sC, sH, sW, idx, K,
                               static_cast<uint64_t*>(out), num_threads);
            break;
        default:
            break;  // the caller only passes 2, 4 or 8
    }
}

int64_t gram_ld(int64_t n) {
    const int64_t rows = (n + kNR - 1) / kNR * kNR;
    return (rows + kMR - 1) / kMR * kMR;
}

void gram_f64(const double* xt, int64_t C, int64_t N, int64_t ld, double* G) {
    gram_upper(xt, C, N, ld, G, nullptr);
    for (int64_t j = 0; j < N; ++j)
        for (int64_t i = 0; i < j; ++i) G[j * ld + i] = G[i * ld + j];
}

void PtsWorkspace::resize(int64_t n) {
    const size_t un = static_cast<size_t>(n);
    dp.resize(un);
    rank_of_label.resize(un);
    cursor.resize(un);
    start.resize(un + 1);
    members.resize(un);
    taken.resize(un);
}

void pts_choose(const double* G, int64_t ld, int64_t N, const int64_t* labels, int64_t K, PtsWorkspace& ws,
                int64_t* chosen, int64_t stride) {
    ws.resize(N);
    int64_t* start = ws.start.data();
    int64_t* members = ws.members.data();
    double* dp = ws.dp.data();
    uint8_t* taken = ws.taken.data();
    const int64_t n_clusters =
        pts_bucket_clusters(labels, N, ws.rank_of_label.data(), ws.cursor.data(), start, members);

    int64_t n_chosen = 0;
    std::fill(taken, taken + N, uint8_t(0));
    auto take = [&](int64_t j) {
        chosen[n_chosen * stride] = j;
        ++n_chosen;
        taken[j] = 1;
    };

    // Easy normals: the prototype of each cluster.
    for (int64_t r = 0; r < n_clusters && n_chosen < K; ++r) {
        const int64_t* m = members + start[r];
        const int64_t size = start[r + 1] - start[r];
        int64_t best_j = -1;
        double best = 0.0;
        for (int64_t a = 0; a < size; ++a) {
            const double s = pts_cluster_similarity(G + m[a] * ld, m, size);
            if (best_j < 0 || better<true>(s, m[a], best, best_j)) {
                best = s;
                best_j = m[a];
            }
        }
        take(best_j);
    }
    if (n_clusters == 0) {
        int64_t best_j = -1;
        double best = 0.0;
        for (int64_t j = 0; j < N; ++j) {
            const double s = pts_total_similarity(G + j * ld, N);
            if (best_j < 0 || better<true>(s, j, best, best_j)) {
                best = s;
                best_j = j;
            }
        }
        take(best_j);
    }

    // Hard normals. Chosen indices hold +inf in dp (inf + finite stays inf), so the argmin needs no test for them;
    // the other entries are exactly pts_chosen_similarity.
    const double inf = std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < N; ++i) dp[i] = taken[i] ? inf : pts_chosen_similarity(G, ld, chosen, stride, n_chosen, i);
    while (n_chosen < K) {
        int64_t best_i = 0;
        double best = dp[0];
        for (int64_t i = 1; i < N; ++i) {
            if (better<false>(dp[i], i, best, best_i)) {
                best = dp[i];
                best_i = i;
            }
        }
        take(best_i);
        const double* row = G + best_i * ld;
        for (int64_t i = 0; i < N; ++i) dp[i] += row[i];
        dp[best_i] = inf;
    }
}

int64_t pts_select_cpu(const float* x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC,
                       int64_t sH, int64_t sW, int64_t K, int64_t* out, int num_threads) {
    return pts_select_impl(x, N, C, H, W, sN, sC, sH, sW, K, out, nullptr, num_threads);
}

int64_t pts_select_cpu(const double* x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC,
                       int64_t sH, int64_t sW, int64_t K, int64_t* out, int num_threads) {
    return pts_select_impl(x, N, C, H, W, sN, sC, sH, sW, K, out, nullptr, num_threads);
}

int64_t pts_labels_cpu(const float* x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC,
                       int64_t sH, int64_t sW, int64_t K, int64_t* labels, int num_threads) {
    return pts_select_impl(x, N, C, H, W, sN, sC, sH, sW, K, nullptr, labels, num_threads);
}

int64_t pts_labels_cpu(const double* x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC,
                       int64_t sH, int64_t sW, int64_t K, int64_t* labels, int num_threads) {
    return pts_select_impl(x, N, C, H, W, sN, sC, sH, sW, K, nullptr, labels, num_threads);
}

}  // namespace hetmm
