// The CUDA window_match kernels (csrc/window_match/window_match_cuda.cu and the naive baseline), compiled as C++
// and run by the emulator of cuda_emulation.h, against SPEC §2 computed in float64 on the values the kernel sees
// (inputs rounded to fp16 / bf16 / TF32), and the exact float32 path bit-for-bit against window_match_cpu (when
// built with hardware FMA, like the CPU engine's fast path).
// Covers every precision path, the launch configurations (tile sizes), both cp.async completion timings, odd
// shapes, windows 1..15, N > 64 (two template chunks), C not a multiple of the channel chunk, B > 32, and query
// tiles split among blocks (automatic and forced, including more blocks than a tile has units).
// With --race, a short list for the ThreadSanitizer build (race_mode).
#define HETMM_CUDA_EMULATION 1

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "test_util.h"
#include "window_match/window_match_cuda.cu"
#include "window_match/window_match_naive_cuda.cu"

using hetmm::WindowMatchCudaPath;
using hetmm_test::Rng;

namespace {

struct Shape {
  int64_t B, N, C, H, W, kf, kb;
};

// 16-byte aligned scratch of `bytes` bytes.
struct Buffer {
  std::unique_ptr<hetmm_emu::Copy[]> storage;  // 16-byte elements
  void* data = nullptr;
  size_t bytes = 0;
  explicit Buffer(size_t n_bytes) : storage(new hetmm_emu::Copy[(n_bytes + 15) / 16 + 1]), bytes(n_bytes) {
    data = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(storage.get()) + 15) & ~uintptr_t(15));
    std::memset(data, 0, n_bytes);
    hetmm_emu::poison_outside(storage.get(), alloc_bytes(), data, n_bytes);  // AddressSanitizer builds: exact bounds
  }
  ~Buffer() {
    if (storage) hetmm_emu::unpoison(storage.get(), alloc_bytes());
  }
  Buffer(Buffer&&) = default;
  Buffer& operator=(Buffer&&) = delete;
  size_t alloc_bytes() const { return ((bytes + 15) / 16 + 1) * sizeof(hetmm_emu::Copy); }
};

uint16_t to_half_bits(double v) {  // round to nearest even (test data are small and finite)
  const uint16_t sign = std::signbit(v) ? 0x8000 : 0;
  double a = std::fabs(v);
  if (a == 0.0) return sign;
  int e = std::max(static_cast<int>(std::floor(std::log2(a))), -14);
  const double quantum = std::ldexp(1.0, e - 10);
  a = std::nearbyint(a / quantum) * quantum;
  if (a < std::ldexp(1.0, -14)) return sign | static_cast<uint16_t>(std::lround(a / std::ldexp(1.0, -24)));
  e = static_cast<int>(std::floor(std::log2(a)));
  const int mant = static_cast<int>(std::lround(a / std::ldexp(1.0, e - 10))) - 1024;
  return sign | static_cast<uint16_t>((e + 15) << 10) | static_cast<uint16_t>(mant);
}
uint16_t to_bf16_bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  b += 0x7fffu + ((b >> 16) & 1u);
  return static_cast<uint16_t>(b >> 16);
}
float rna_tf32(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  b = (b + 0x1000u) & 0xffffe000u;
  std::memcpy(&v, &b, 4);
  return v;
}

// Random unit vectors over C, [M, C, H, W] float64.
std::vector<double> unit_features(int64_t M, int64_t C, int64_t H, int64_t W, Rng& rng) {
  std::vector<double> x(static_cast<size_t>(M * C * H * W));
  for (auto& v : x) v = rng.normal();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t p = 0; p < H * W; ++p) {
      double n = 0;
      for (int64_t c = 0; c < C; ++c) n += x[(m * C + c) * H * W + p] * x[(m * C + c) * H * W + p];
      n = std::sqrt(n);
      for (int64_t c = 0; c < C; ++c) x[(m * C + c) * H * W + p] /= n;
    }
  return x;
}

// The value the kernel computes with, for an input given in float64.
double quantize(double v, WindowMatchCudaPath path) {
  switch (path) {
    case WindowMatchCudaPath::kFloat16:
      return hetmm_emu::half_to_float(to_half_bits(v));
    case WindowMatchCudaPath::kBFloat16:
      return hetmm_emu::bf16_to_float(to_bf16_bits(static_cast<float>(v)));
    case WindowMatchCudaPath::kTF32:
      return rna_tf32(static_cast<float>(v));
    case WindowMatchCudaPath::kExactFloat32:
      return static_cast<float>(v);
    case WindowMatchCudaPath::kExactFloat64:
      return v;
  }
  return v;
}

// [M, C, H, W] -> packed [H*W][M][Cp] in the path's element type (the input dtype, before any TF32 rounding).
Buffer pack(const std::vector<double>& x, int64_t M, int64_t C, int64_t H, int64_t W, int64_t Cp,
            WindowMatchCudaPath path) {
  const int64_t e = hetmm::window_match_cuda_element_bytes(path);
  Buffer buf(static_cast<size_t>(H * W * M * Cp * e));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < H * W; ++p) {
        const double v = x[(m * C + c) * H * W + p];
        const int64_t i = (p * M + m) * Cp + c;
        switch (path) {
          case WindowMatchCudaPath::kFloat16:
            static_cast<uint16_t*>(buf.data)[i] = to_half_bits(v);
            break;
          case WindowMatchCudaPath::kBFloat16:
            static_cast<uint16_t*>(buf.data)[i] = to_bf16_bits(static_cast<float>(v));
            break;
          case WindowMatchCudaPath::kTF32:
          case WindowMatchCudaPath::kExactFloat32:
            static_cast<float*>(buf.data)[i] = static_cast<float>(v);
            break;
          case WindowMatchCudaPath::kExactFloat64:
            static_cast<double*>(buf.data)[i] = v;
            break;
        }
      }
  return buf;
}

// SPEC §2 by definition in float64.
void brute(const std::vector<double>& q, const std::vector<double>& t, const Shape& s, std::vector<double>& fwd,
           std::vector<double>& bwd) {
  const int64_t HW = s.H * s.W;
  fwd.assign(static_cast<size_t>(s.B * HW), -1.0);
  bwd.assign(static_cast<size_t>(s.B * HW), -1.0);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t y = 0; y < s.H; ++y)
      for (int64_t x = 0; x < s.W; ++x)
        for (int dir = 0; dir < 2; ++dir) {
          const int64_t d = (dir == 0 ? s.kf : s.kb) / 2;
          double best = -1.0;
          for (int64_t y2 = std::max<int64_t>(0, y - d); y2 <= std::min(s.H - 1, y + d); ++y2)
            for (int64_t x2 = std::max<int64_t>(0, x - d); x2 <= std::min(s.W - 1, x + d); ++x2)
              for (int64_t n = 0; n < s.N; ++n) {
                const int64_t pq = dir == 0 ? y * s.W + x : y2 * s.W + x2;
                const int64_t pt = dir == 0 ? y2 * s.W + x2 : y * s.W + x;
                double dot = 0;
                for (int64_t c = 0; c < s.C; ++c) dot += q[(b * s.C + c) * HW + pq] * t[(n * s.C + c) * HW + pt];
                best = std::max(best, dot);
              }
          (dir == 0 ? fwd : bwd)[static_cast<size_t>(b * HW + y * s.W + x)] = best;
        }
}

const char* path_name(WindowMatchCudaPath p) {
  switch (p) {
    case WindowMatchCudaPath::kFloat16:
      return "fp16";
    case WindowMatchCudaPath::kBFloat16:
      return "bf16";
    case WindowMatchCudaPath::kTF32:
      return "tf32";
    case WindowMatchCudaPath::kExactFloat32:
      return "exact32";
    case WindowMatchCudaPath::kExactFloat64:
      return "exact64";
  }
  return "?";
}

void check_fused(const Shape& s, WindowMatchCudaPath path, const hetmm::CudaDeviceLimits& lim, uint64_t seed,
                 int max_warps = 0, int splits = 0) {
  Rng rng(seed);
  const auto q = unit_features(s.B, s.C, s.H, s.W, rng);
  const auto t = unit_features(s.N, s.C, s.H, s.W, rng);
  const int64_t Cp = hetmm::window_match_cuda_padded_channels(path, s.C);
  Buffer qp = pack(q, s.B, s.C, s.H, s.W, Cp, path), tp = pack(t, s.N, s.C, s.H, s.W, Cp, path);
  if (path == WindowMatchCudaPath::kTF32)  // as the torch wrapper does (the emulated mma refuses unrounded tf32)
    for (Buffer* b : {&qp, &tp})
      HETMM_CHECK(hetmm::window_match_cuda_round_tf32(static_cast<float*>(b->data), static_cast<int64_t>(b->bytes / 4),
                                                      nullptr) == cudaSuccess,
                  "round_tf32 launch failed");
  std::vector<float> fwd(static_cast<size_t>(s.B * s.H * s.W), 7.0f), bwd(fwd.size(), 7.0f);
  hetmm::WindowMatchCudaProblem pr;
  pr.query = qp.data;
  pr.templates = tp.data;
  pr.B = s.B;
  pr.N = s.N;
  pr.C_padded = Cp;
  pr.H = s.H;
  pr.W = s.W;
  pr.fwd_window = s.kf;
  pr.bwd_window = s.kb;
  pr.fwd = fwd.data();
  pr.bwd = bwd.data();
  pr.max_warps = max_warps;
  pr.splits = splits;
  const cudaError_t err = hetmm::window_match_cuda(pr, path, lim, nullptr);
  HETMM_CHECK(err == cudaSuccess, path_name(path), " launch failed");
  if (splits > 1 || (splits == 0 && lim.sm_count > 1)) {  // tiles (may be) split: the bits of one block per tile
    std::vector<float> fwd1(fwd.size(), 7.0f), bwd1(fwd.size(), 7.0f);
    hetmm::WindowMatchCudaProblem one = pr;
    one.splits = 1;
    one.fwd = fwd1.data();
    one.bwd = bwd1.data();
    HETMM_CHECK(hetmm::window_match_cuda(one, path, lim, nullptr) == cudaSuccess, path_name(path), " launch failed");
    HETMM_CHECK(std::memcmp(fwd1.data(), fwd.data(), 4 * fwd.size()) == 0 &&
                    std::memcmp(bwd1.data(), bwd.data(), 4 * bwd.size()) == 0,
                path_name(path), " splits=", splits, " differs from one block per tile for B=", s.B, " N=", s.N,
                " C=", s.C, " H=", s.H, " W=", s.W, " kf=", s.kf, " kb=", s.kb);
  }

  std::vector<double> qq(q), tq(t), ef, eb;
  for (auto& v : qq) v = quantize(v, path);
  for (auto& v : tq) v = quantize(v, path);
  brute(qq, tq, s, ef, eb);
  const double tol = path == WindowMatchCudaPath::kExactFloat64 ? 1e-12 : 2e-5;
  // float64 results are rounded to float32 like the kernel's outputs.
  const bool f64 = path == WindowMatchCudaPath::kExactFloat64;
  double worst = 0;
  for (size_t i = 0; i < fwd.size(); ++i) {
    worst = std::max(worst, std::fabs(fwd[i] - (f64 ? static_cast<float>(ef[i]) : ef[i])));
    worst = std::max(worst, std::fabs(bwd[i] - (f64 ? static_cast<float>(eb[i]) : eb[i])));
  }
  HETMM_CHECK(worst <= tol, path_name(path), " B=", s.B, " N=", s.N, " C=", s.C, " H=", s.H, " W=", s.W, " kf=", s.kf,
              " kb=", s.kb, " sm=", lim.sm_count, " smem=", lim.max_smem_per_block, " max_warps=", max_warps,
              " splits=", splits, ": max error ", worst);

#ifdef __FMA__
  // The CPU engine built with hardware FMA computes the same FMA chain: identical bits.
  if (path == WindowMatchCudaPath::kExactFloat32) {
    std::vector<float> qf(q.begin(), q.end()), tf(t.begin(), t.end());
    const int64_t HW = s.H * s.W;
    hetmm::FeatureMap qm{qf.data(), hetmm::FeatureDtype::kFloat32, s.B, s.C, s.H, s.W, s.C * HW, HW, s.W, 1};
    hetmm::FeatureMap tm{tf.data(), hetmm::FeatureDtype::kFloat32, s.N, s.C, s.H, s.W, s.C * HW, HW, s.W, 1};
    std::vector<float> cf(fwd.size()), cbk(fwd.size());
    hetmm::window_match_cpu(qm, tm, s.kf, s.kb, cf.data(), cbk.data());
    HETMM_CHECK(std::memcmp(cf.data(), fwd.data(), 4 * fwd.size()) == 0 &&
                    std::memcmp(cbk.data(), bwd.data(), 4 * bwd.size()) == 0,
                "exact32 differs from window_match_cpu for B=", s.B, " N=", s.N, " C=", s.C, " H=", s.H, " W=", s.W,
                " splits=", splits);
  }
#endif
}

void check_naive(const Shape& s, hetmm::FeatureDtype dtype, uint64_t seed) {
  Rng rng(seed);
  const auto q = unit_features(s.B, s.C, s.H, s.W, rng);
  const auto t = unit_features(s.N, s.C, s.H, s.W, rng);
  const bool half = dtype == hetmm::FeatureDtype::kFloat16;
  std::vector<float> qf(q.size()), tf(t.size());
  std::vector<uint16_t> qh(q.size()), th(t.size());
  std::vector<double> qq(q.size()), tq(t.size());
  for (size_t i = 0; i < q.size(); ++i) {
    qf[i] = static_cast<float>(q[i]);
    qh[i] = to_half_bits(q[i]);
    qq[i] = half ? hetmm_emu::half_to_float(qh[i]) : qf[i];
  }
  for (size_t i = 0; i < t.size(); ++i) {
    tf[i] = static_cast<float>(t[i]);
    th[i] = to_half_bits(t[i]);
    tq[i] = half ? hetmm_emu::half_to_float(th[i]) : tf[i];
  }
  const size_t n_out = static_cast<size_t>(s.B * s.H * s.W);
  std::vector<float> sf(n_out * static_cast<size_t>(s.N)), sb(sf.size()), fwd(n_out), bwd(n_out);
  const cudaError_t err = hetmm::window_match_naive_cuda(
      half ? static_cast<const void*>(qh.data()) : qf.data(), half ? static_cast<const void*>(th.data()) : tf.data(),
      dtype, s.B, s.N, s.C, s.H, s.W, s.kf, s.kb, sf.data(), sb.data(), fwd.data(), bwd.data(), nullptr);
  HETMM_CHECK(err == cudaSuccess, "naive launch failed");
  std::vector<double> ef, eb;
  brute(qq, tq, s, ef, eb);
  double worst = 0;
  for (size_t i = 0; i < n_out; ++i) worst = std::max({worst, std::fabs(fwd[i] - ef[i]), std::fabs(bwd[i] - eb[i])});
  HETMM_CHECK(worst <= 2e-5, "naive B=", s.B, " N=", s.N, " C=", s.C, ": max error ", worst);
}

}  // namespace

// Race mode (argument --race; the ThreadSanitizer build runs it): few, small launches that still reach every
// synchronisation of the fused kernel: several warps sharing the block's query columns and the cp.async stage ring,
// the ring wrapping around (more stages than its depth, two template chunks), several channel chunks, both cp.async
// completion timings, the backward atomic max of several blocks into one map, and the TF32 rounding kernel. Under
// ThreadSanitizer every lane switch of a shuffle or mma is a fiber switch, so the 16/32-bit tensor-core paths get
// the smallest shapes that still wrap the ring.
int race_mode() {
  hetmm::CudaDeviceLimits big;
  big.sm_count = 1;
  big.max_smem_per_block = 227 * 1024;
  uint64_t seed = 1000;
  struct Case {
    WindowMatchCudaPath path;
    Shape shape;
    int max_warps, splits;
  };
  const Case cases[] = {
      {WindowMatchCudaPath::kExactFloat32, {3, 70, 40, 6, 8, 3, 5}, 4, 0},
      {WindowMatchCudaPath::kExactFloat64, {2, 66, 20, 3, 4, 3, 1}, 2, 0},
      {WindowMatchCudaPath::kFloat16, {2, 70, 70, 4, 5, 3, 1}, 2, 0},
      {WindowMatchCudaPath::kFloat16, {4, 3, 8, 5, 5, 3, 3}, 4, 0},
      {WindowMatchCudaPath::kBFloat16, {2, 3, 8, 4, 5, 1, 3}, 2, 0},
      {WindowMatchCudaPath::kTF32, {2, 3, 40, 4, 5, 3, 3}, 2, 0},
      {WindowMatchCudaPath::kExactFloat32, {2, 3, 20, 4, 5, 3, 5}, 1, 3},  // forward maxima by atomics too
      {WindowMatchCudaPath::kFloat16, {2, 3, 8, 4, 5, 5, 3}, 2, 2},
  };
  for (hetmm_emu::CopyTiming timing : {hetmm_emu::CopyTiming::kAtIssue, hetmm_emu::CopyTiming::kAtWait}) {
    hetmm_emu::set_copy_timing(timing);
    for (const Case& c : cases) check_fused(c.shape, c.path, big, seed++, c.max_warps, c.splits);
  }
  return hetmm_test::report("test_window_match_cuda_emulated --race");
}

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--race") == 0) return race_mode();
  if (argc > 1) {
    std::fprintf(stderr, "usage: %s [--race]\n", argv[0]);
    return 2;
  }
  const WindowMatchCudaPath paths[] = {WindowMatchCudaPath::kFloat16, WindowMatchCudaPath::kBFloat16,
                                       WindowMatchCudaPath::kTF32, WindowMatchCudaPath::kExactFloat32,
                                       WindowMatchCudaPath::kExactFloat64};
  const Shape shapes[] = {
      {1, 1, 4, 1, 1, 1, 1},   {2, 3, 8, 5, 7, 3, 5},    {1, 4, 16, 4, 9, 13, 7},  {3, 2, 5, 6, 3, 1, 3},
      {2, 5, 3, 9, 8, 7, 1},   {40, 70, 70, 3, 4, 3, 3}, {1, 2, 8, 10, 12, 15, 11},
  };
  hetmm::CudaDeviceLimits big;  // the largest tile that fits
  big.sm_count = 1;
  big.max_smem_per_block = 227 * 1024;
  hetmm::CudaDeviceLimits many = big;  // "too few blocks": the smallest tile, each tile split across up to 64 blocks
  many.sm_count = 1 << 30;
  uint64_t seed = 1;
  for (const Shape& s : shapes)
    for (WindowMatchCudaPath path : paths) {
      check_fused(s, path, big, seed++);
      check_fused(s, path, many, seed++);
      check_fused(s, path, many, seed++, 0, 1);  // the smallest tile, not split
    }
  // Forced splits that do not divide the units, and more splits than units (empty blocks).
  for (int splits : {2, 3, 7, 1000})
    for (WindowMatchCudaPath path : paths) check_fused({3, 70, 20, 5, 6, 5, 3}, path, big, seed++, 0, splits);
  // Every window 1..15 in both directions (and mixed), middle-sized tile, cp.async data landing only at the wait.
  hetmm_emu::set_copy_timing(hetmm_emu::CopyTiming::kAtWait);
  hetmm::CudaDeviceLimits mid = big;
  mid.max_smem_per_block = 50 * 1024;  // two warps per block for the 16/32-bit paths
  for (int64_t k = 1; k <= 15; k += 2)
    for (WindowMatchCudaPath path : paths) check_fused({2, 3, 6, 7, 9, k, 16 - k}, path, mid, seed++);
  hetmm_emu::set_copy_timing(hetmm_emu::CopyTiming::kAtIssue);
  // The benchmarks' tile-size cap (max_warps) with room for the largest tile: 1 and 2 warps per block.
  for (int warps : {1, 2})
    for (WindowMatchCudaPath path : paths) check_fused({5, 3, 40, 6, 7, 5, 3}, path, big, seed++, warps);

  // Channel limits are consistent with what the launcher accepts.
  for (WindowMatchCudaPath path : paths) {
    const int64_t cmax = hetmm::window_match_cuda_max_channels(path, 100 * 1024);
    HETMM_CHECK(cmax > 0, path_name(path), " max channels");
    hetmm::WindowMatchCudaProblem pr;
    float dummy = 0;
    pr.query = pr.templates = &dummy;
    pr.fwd = pr.bwd = &dummy;
    pr.B = pr.N = pr.H = pr.W = 1;
    pr.C_padded = hetmm::window_match_cuda_padded_channels(path, cmax + 1);
    hetmm::CudaDeviceLimits lim;
    lim.max_smem_per_block = 100 * 1024;
    HETMM_CHECK(hetmm::window_match_cuda(pr, path, lim, nullptr) == cudaErrorInvalidValue, path_name(path),
                " accepted C above the limit");
  }

  {  // max_warps other than 0, 1, 2, 4 is refused
    hetmm::WindowMatchCudaProblem pr;
    float dummy = 0;
    pr.query = pr.templates = &dummy;
    pr.fwd = pr.bwd = &dummy;
    pr.B = pr.N = pr.H = pr.W = 1;
    pr.C_padded = 64;
    for (int bad : {-1, 3, 8}) {
      pr.max_warps = bad;
      HETMM_CHECK(hetmm::window_match_cuda(pr, WindowMatchCudaPath::kFloat16, big, nullptr) == cudaErrorInvalidValue,
                  "max_warps=", bad, " accepted");
    }
    pr.max_warps = 0;
    for (int bad : {-1, hetmm::kWindowMatchCudaMaxSplits + 1}) {
      pr.splits = bad;
      HETMM_CHECK(hetmm::window_match_cuda(pr, WindowMatchCudaPath::kFloat16, big, nullptr) == cudaErrorInvalidValue,
                  "splits=", bad, " accepted");
    }
  }

  {  // TF32 rounding kernel: cvt.rna on random values, ties, the largest finite float, infinities and NaN
    std::vector<float> v = {1.0f, -1.0f, 0.0f, -0.0f, 1.0f + 0x1p-11f, -(1.0f + 0x1p-11f), 1.0f + 0x1p-12f,
                            3.4028235e38f, -3.4028235e38f, 1e-40f, std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity()};
    Rng rng(7);
    for (int i = 0; i < 1000; ++i) v.push_back(static_cast<float>(rng.normal()));
    std::vector<float> got = v;
    got.push_back(std::numeric_limits<float>::quiet_NaN());
    HETMM_CHECK(hetmm::window_match_cuda_round_tf32(got.data(), static_cast<int64_t>(got.size()), nullptr) ==
                    cudaSuccess,
                "round_tf32 launch failed");
    for (size_t i = 0; i < v.size(); ++i)
      HETMM_CHECK(got[i] == rna_tf32(v[i]) || (std::isinf(v[i]) && got[i] == v[i]),
                  "round_tf32(", v[i], ") = ", got[i], ", expected ", rna_tf32(v[i]));
    HETMM_CHECK(std::isnan(got.back()), "round_tf32(NaN) is not NaN");
    HETMM_CHECK(hetmm::window_match_cuda_round_tf32(nullptr, 3, nullptr) == cudaErrorInvalidValue,
                "round_tf32 accepted a null pointer");
  }

  check_naive({2, 3, 8, 5, 7, 3, 5}, hetmm::FeatureDtype::kFloat32, 100);
  check_naive({1, 2, 16, 4, 9, 13, 1}, hetmm::FeatureDtype::kFloat16, 101);
  return hetmm_test::report("test_window_match_cuda_emulated");
}
