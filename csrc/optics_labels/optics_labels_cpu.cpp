// CPU kernels of optics_labels (semantics: optics_labels.h).
//
// Work split: one OpenMP thread per problem (dynamic schedule over problems); a problem is sequential.
// Per problem of size N: one pass over the N x N matrix to validate and round it (N^2 reads and writes, a multiply,
// a round and a divide per value), N row scans for the core distances (k-selection), then the OPTICS loop: N
// expansions, each one pass over a row of R fused with the argmin that picks the next point (N^2 compares total),
// and the xi extraction on the N + 1 point reachability plot (O(N) + O(N) per candidate cluster).
// The per-element rules and the xi extraction are optics_labels_core.h, which the CUDA engine runs too; this file
// holds the sequential ordering loop and its AVX2 paths.
// Memory: a per-thread workspace of N^2 + O(N) values, reused across problems.
#include "optics_labels.h"

#include <algorithm>
#include <cmath>
#include <limits>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HETMM_OPTICS_X86 1
#include <immintrin.h>
#endif

namespace hetmm {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kMax = std::numeric_limits<double>::max();

#ifdef HETMM_OPTICS_X86
bool cpu_has_avx2() {
    static const bool ok = __builtin_cpu_supports("avx2");
    return ok;
}
#endif

// Insert v into the sorted b[0..m) if it is smaller than b[m - 1] (dropping the largest).
inline void insert_smaller(double* b, int64_t m, double v) {
    if (!(v < b[m - 1])) return;
    int64_t t = m - 1;
    while (t > 0 && b[t - 1] > v) {
        b[t] = b[t - 1];
        --t;
    }
    b[t] = v;
}

constexpr int64_t kSmallK = 64;  // up to this m the m smallest are kept sorted; beyond, nth_element

double kth_smallest_generic(const double* row, int64_t n, int64_t m, double* b) {
    for (int64_t j = m; j < n; ++j) insert_smaller(b, m, row[j]);
    return b[m - 1];
}

#ifdef HETMM_OPTICS_X86
// Same, but four values at a time are compared against the current m-th smallest; most blocks have no candidate.
__attribute__((target("avx2"))) double kth_smallest_avx2(const double* row, int64_t n, int64_t m, double* b) {
    int64_t j = m;
    for (; j + 4 <= n; j += 4) {
        const __m256d v = _mm256_loadu_pd(row + j);
        const int below = _mm256_movemask_pd(_mm256_cmp_pd(v, _mm256_broadcast_sd(b + m - 1), _CMP_LT_OQ));
        if (below) {
            for (int64_t k = 0; k < 4; ++k) insert_smaller(b, m, row[j + k]);
        }
    }
    for (; j < n; ++j) insert_smaller(b, m, row[j]);
    return b[m - 1];
}
#endif

#ifdef HETMM_OPTICS_X86
// m-th smallest of rows r0 .. r0 + 3 at once for a symmetric R: element j of those rows is R[j, r0 .. r0 + 3], one
// contiguous load. Each lane keeps its M smallest values sorted through a min/max insertion network.
template <int M>
__attribute__((target("avx2"))) void kth_four_rows_avx2(const double* R, int64_t ld, int64_t n, int64_t r0,
                                                        double* out) {
    __m256d b[M];
    for (int k = 0; k < M; ++k) b[k] = _mm256_set1_pd(kInf);
    for (int64_t j = 0; j < n; ++j) {
        __m256d v = _mm256_loadu_pd(R + j * ld + r0);
        for (int k = 0; k < M; ++k) {
            const __m256d lo = _mm256_min_pd(b[k], v);
            v = _mm256_max_pd(b[k], v);
            b[k] = lo;
        }
    }
    _mm256_storeu_pd(out, b[M - 1]);
}

// core[i] for every row of a symmetric R whose rows can be read 4 at a time (ld >= N rounded up to 4); false when m
// is too large for the register network (the caller then uses kth_smallest).
bool kth_symmetric_avx2(const double* R, int64_t ld, int64_t n, int64_t m, double* core) {
    if (m > 8 || ld < (n + 3) / 4 * 4) return false;
    alignas(32) double four[4];
    for (int64_t r0 = 0; r0 < n; r0 += 4) {
        switch (m) {
            case 1: kth_four_rows_avx2<1>(R, ld, n, r0, four); break;
            case 2: kth_four_rows_avx2<2>(R, ld, n, r0, four); break;
            case 3: kth_four_rows_avx2<3>(R, ld, n, r0, four); break;
            case 4: kth_four_rows_avx2<4>(R, ld, n, r0, four); break;
            case 5: kth_four_rows_avx2<5>(R, ld, n, r0, four); break;
            case 6: kth_four_rows_avx2<6>(R, ld, n, r0, four); break;
            case 7: kth_four_rows_avx2<7>(R, ld, n, r0, four); break;
            default: kth_four_rows_avx2<8>(R, ld, n, r0, four); break;
        }
        for (int64_t l = 0; l < 4 && r0 + l < n; ++l) core[r0 + l] = four[l];
    }
    return true;
}
#endif

// m-th smallest (1-based) value of row[0..n); buf holds at least max(n, kSmallK) values.
double kth_smallest(const double* row, int64_t n, int64_t m, std::vector<double>& buf) {
    if (m <= kSmallK) {
        double* b = buf.data();
        std::copy(row, row + m, b);
        std::sort(b, b + m);
#ifdef HETMM_OPTICS_X86
        if (cpu_has_avx2()) return kth_smallest_avx2(row, n, m, b);
#endif
        return kth_smallest_generic(row, n, m, b);
    }
    std::copy(row, row + n, buf.begin());
    std::nth_element(buf.begin(), buf.begin() + (m - 1), buf.begin() + n);
    return buf[m - 1];
}


// Smallest index among the smallest unprocessed work values below +inf (processed points hold NaN and are
// skipped); -1 when every unprocessed value is +inf.
int64_t argmin_unprocessed(const double* work, int64_t n) {
    double best = kInf;
    int64_t next = -1;
    for (int64_t j = 0; j < n; ++j) {
        if (work[j] < best) {
            best = work[j];
            next = j;
        }
    }
    return next;
}

// One OPTICS expansion of `point` (row = R[point, :], c = round15(core[point])): every unprocessed j with
// max(row[j], c) < work[j] gets that value and `point` as predecessor. Returns the next point to process: the
// smallest index among the smallest remaining values, -1 if all are +inf. Processed points hold NaN in `work`, which
// fails every comparison. R holds no -0.0, so max() needs no care about the sign of zero.
// The scalar loop for j in [j0, n), continuing from the running minimum (best, next) of the indices before j0.
int64_t expand_scalar(const double* row, double c, int64_t point, int64_t j0, int64_t n, double* work, int64_t* pred,
                      double best, int64_t next) {
    for (int64_t j = j0; j < n; ++j) {
        const double cand = optics_candidate(row[j], c);
        if (cand < work[j]) {
            work[j] = cand;
            pred[j] = point;
        }
        if (work[j] < best) {
            best = work[j];
            next = j;
        }
    }
    return next;
}

int64_t expand_generic(const double* row, double c, int64_t point, int64_t n, double* work, int64_t* pred) {
    return expand_scalar(row, c, point, 0, n, work, pred, kInf, -1);
}

#ifdef HETMM_OPTICS_X86
// expand_scalar four points at a time: optics_candidate is the max_pd of (c, row) (no NaN in R), the update and the
// per-lane argmin keep its strict <.
__attribute__((target("avx2"))) int64_t expand_avx2(const double* row, double c, int64_t point, int64_t n,
                                                     double* work, int64_t* pred) {
    const __m256d vc = _mm256_set1_pd(c);
    const __m256d vpoint = _mm256_castsi256_pd(_mm256_set1_epi64x(point));
    __m256d vbest = _mm256_set1_pd(kInf);
    __m256i vidx = _mm256_set1_epi64x(-1), cur = _mm256_setr_epi64x(0, 1, 2, 3);
    const __m256i four = _mm256_set1_epi64x(4);
    int64_t j = 0;
    for (; j + 4 <= n; j += 4, cur = _mm256_add_epi64(cur, four)) {
        const __m256d cand = _mm256_max_pd(vc, _mm256_loadu_pd(row + j));
        __m256d w = _mm256_loadu_pd(work + j);
        const __m256d better = _mm256_cmp_pd(cand, w, _CMP_LT_OQ);  // false where w is NaN (processed)
        w = _mm256_blendv_pd(w, cand, better);
        _mm256_storeu_pd(work + j, w);
        __m256i* pj = reinterpret_cast<__m256i*>(pred + j);
        const __m256d old = _mm256_castsi256_pd(_mm256_loadu_si256(pj));
        _mm256_storeu_si256(pj, _mm256_castpd_si256(_mm256_blendv_pd(old, vpoint, better)));
        // Per lane: the first index holding the lane's smallest value (strict <, so NaN never wins).
        const __m256d smaller = _mm256_cmp_pd(w, vbest, _CMP_LT_OQ);
        vbest = _mm256_blendv_pd(vbest, w, smaller);
        vidx = _mm256_castpd_si256(
            _mm256_blendv_pd(_mm256_castsi256_pd(vidx), _mm256_castsi256_pd(cur), smaller));
    }
    alignas(32) double lanes[4];
    alignas(32) int64_t lane_idx[4];
    _mm256_store_pd(lanes, vbest);
    _mm256_store_si256(reinterpret_cast<__m256i*>(lane_idx), vidx);
    double best = kInf;
    int64_t next = -1;
    for (int k = 0; k < 4; ++k) {
        if (lane_idx[k] < 0) continue;
        if (lanes[k] < best || (lanes[k] == best && lane_idx[k] < next)) {
            best = lanes[k];
            next = lane_idx[k];
        }
    }
    return expand_scalar(row, c, point, j, n, work, pred, best, next);
}

#endif


// dst = round15(src) + 0.0 (the addition turns -0.0 into +0.0); true when some src value is negative, NaN or inf.
bool round_matrix_generic(const double* src, double* dst, int64_t n) {
    int64_t invalid = 0;
    for (int64_t k = 0; k < n; ++k) {
        const double v = src[k];
        invalid |= !((v >= 0.0) & (v <= kMax));
        dst[k] = round15(v) + 0.0;
    }
    return invalid != 0;
}

#ifdef HETMM_OPTICS_X86
__attribute__((target("avx2"))) bool round_matrix_avx2(const double* src, double* dst, int64_t n) {
    const __m256d zero = _mm256_setzero_pd(), vmax = _mm256_set1_pd(kMax), scale = _mm256_set1_pd(1e15);
    __m256d invalid = zero;
    int64_t k = 0;
    for (; k + 4 <= n; k += 4) {
        const __m256d v = _mm256_loadu_pd(src + k);
        invalid = _mm256_or_pd(invalid, _mm256_cmp_pd(v, zero, _CMP_NGE_UQ));
        invalid = _mm256_or_pd(invalid, _mm256_cmp_pd(v, vmax, _CMP_NLE_UQ));
        const __m256d r = _mm256_div_pd(_mm256_round_pd(_mm256_mul_pd(v, scale), _MM_FROUND_CUR_DIRECTION), scale);
        _mm256_storeu_pd(dst + k, _mm256_add_pd(r, zero));
    }
    return (_mm256_movemask_pd(invalid) != 0) | round_matrix_generic(src + k, dst + k, n - k);
}
#endif

bool round_matrix(const double* src, double* dst, int64_t n) {
#ifdef HETMM_OPTICS_X86
    if (cpu_has_avx2()) return round_matrix_avx2(src, dst, n);
#endif
    return round_matrix_generic(src, dst, n);
}

int64_t expand(const double* row, double c, int64_t point, int64_t n, double* work, int64_t* pred) {
#ifdef HETMM_OPTICS_X86
    if (cpu_has_avx2()) return expand_avx2(row, c, point, n, work, pred);
#endif
    return expand_generic(row, c, point, n, work, pred);
}

}  // namespace

void OpticsWorkspace::resize(int64_t n) {
    size_t un = static_cast<size_t>(n);
    core.resize(un);
    rcore.resize(un);
    work.resize(un);
    reach.resize(un);
    plot.resize(un + 1);
    kbuf.resize(std::max<size_t>(un, kSmallK));
    order.resize(un);
    pred.resize(un);
    pred_plot.resize(un);
    pos.resize(un);
    pos_label.resize(un);
    flags.resize(un);
    sda_start.resize(un);
    sda_end.resize(un);
    sda_mib.resize(un);
    u_clusters.resize(2 * un);
}

OpticsXiScratch<int64_t> OpticsWorkspace::xi_scratch() {
    return {plot.data(),      pred_plot.data(), pos.data(),        flags.data(),     sda_start.data(),
            sda_end.data(),   sda_mib.data(),   u_clusters.data(), pos_label.data()};
}

void optics_xi_rounded(const double* R, int64_t ld, int64_t N, int64_t min_samples, double xi, OpticsWorkspace& ws,
                       int64_t* labels, bool symmetric) {
    ws.resize(N);
    double* core = ws.core.data();
    double* rcore = ws.rcore.data();
    double* work = ws.work.data();  // reachability of unprocessed points, NaN once processed
    double* reach = ws.reach.data();
    int64_t* order = ws.order.data();
    int64_t* pred = ws.pred.data();

    bool have_core = false;
#ifdef HETMM_OPTICS_X86
    if (symmetric && cpu_has_avx2()) have_core = kth_symmetric_avx2(R, ld, N, min_samples, core);
#endif
    for (int64_t i = 0; i < N; ++i) {
        if (!have_core) core[i] = kth_smallest(R + i * ld, N, min_samples, ws.kbuf);
        // scikit-learn rounds max(d, core) where core is already rounded: round15 again, it is not idempotent for
        // large values.
        rcore[i] = round15(core[i]);
        work[i] = kInf;
        pred[i] = -1;
    }

    // OPTICS ordering. Expanding a point updates its row and finds the next point in one pass.
    const double nan = std::numeric_limits<double>::quiet_NaN();
    int64_t first_unprocessed = 0;
    int64_t point = 0;  // everything is +inf at the start: the smallest index
    for (int64_t step = 0; step < N; ++step) {
        order[step] = point;
        reach[point] = work[point];
        work[point] = nan;
        while (first_unprocessed < N && std::isnan(work[first_unprocessed])) ++first_unprocessed;
        int64_t next = core[point] != kInf ? expand(R + point * ld, rcore[point], point, N, work, pred)
                                           : argmin_unprocessed(work, N);
        point = next >= 0 ? next : first_unprocessed;  // all remaining at +inf: smallest index
    }

    optics_xi_labels(order, reach, pred, N, min_samples, xi, ws.xi_scratch(), labels);
}

int64_t optics_labels_cpu(const double* dist, int64_t P, int64_t N, int64_t min_samples, double xi, int64_t* labels,
                          int num_threads) {
    int64_t first_bad = -1;
    const int64_t nn = N * N;
#ifdef _OPENMP
    if (num_threads <= 0) num_threads = omp_get_max_threads();
#pragma omp parallel num_threads(static_cast<int>(std::min<int64_t>(num_threads, std::max<int64_t>(P, 1))))
#endif
    {
        OpticsWorkspace ws;
        ws.resize(N);
        std::vector<double> rounded(static_cast<size_t>(nn));
        int64_t my_bad = -1;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t p = 0; p < P; ++p) {
            const double* d = dist + p * nn;
            double* r = rounded.data();
            // Validate and round in one pass; -0.0 becomes +0.0 (see optics_labels.h).
            const bool invalid = round_matrix(d, r, nn);
            if (invalid) {
                int64_t k = 0;
                while (d[k] >= 0.0 && d[k] <= kMax) ++k;
                if (my_bad < 0 || p * nn + k < my_bad) my_bad = p * nn + k;
                std::fill(labels + p * N, labels + (p + 1) * N, int64_t(-1));
                continue;
            }
            optics_xi_rounded(r, N, N, min_samples, xi, ws, labels + p * N);
        }
#ifdef _OPENMP
#pragma omp critical(hetmm_optics_first_bad)
#endif
        if (my_bad >= 0 && (first_bad < 0 || my_bad < first_bad)) first_bad = my_bad;
    }
    return first_bad;
}

}  // namespace hetmm
