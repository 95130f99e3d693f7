// hetmm::window_match_cpu against a naive loop over SPEC §2 (float64), on random and edge shapes, every input
// dtype, strided inputs and 1..3 OpenMP threads (bit-identical results required).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "test_util.h"
#include "window_match/window_match.h"

using hetmm::FeatureDtype;
using hetmm::FeatureMap;
using hetmm_test::Rng;

namespace {

struct Shape {
  int64_t B, N, C, H, W, kf, kb;
};

// Round-to-nearest-even encoders for the test data (the kernel only decodes).
uint16_t float_to_half_bits(float v) {
  const uint16_t sign = std::signbit(v) ? 0x8000 : 0;
  double a = std::fabs(static_cast<double>(v));
  if (a == 0.0) return sign;
  int e = static_cast<int>(std::floor(std::log2(a)));
  e = std::max(e, -14);
  const double quantum = std::ldexp(1.0, e - 10);
  a = std::nearbyint(a / quantum) * quantum;
  if (a == 0.0) return sign;
  if (a < std::ldexp(1.0, -14)) return sign | static_cast<uint16_t>(a / std::ldexp(1.0, -24));
  const int er = static_cast<int>(std::floor(std::log2(a)));
  const int mant = static_cast<int>(a / std::ldexp(1.0, er - 10)) - 1024;
  return sign | static_cast<uint16_t>((er + 15) << 10) | static_cast<uint16_t>(mant);
}

uint16_t float_to_bf16_bits(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// A [count, C, H, W] map of unit vectors stored in one dtype, either contiguous or channels-last with every other
// channel slot unused (a strided view); `values` holds what the kernel should decode, in NCHW order.
struct Map {
  std::vector<float> f32;
  std::vector<double> f64;
  std::vector<uint16_t> u16;
  std::vector<double> values;
  FeatureMap view;
};

Map make_map(int64_t count, int64_t C, int64_t H, int64_t W, FeatureDtype dtype, bool strided, Rng& rng) {
  Map m;
  m.values.resize(static_cast<size_t>(count * C * H * W));
  const int64_t slots = strided ? 2 * C : C;
  const int64_t total = count * slots * H * W;
  if (dtype == FeatureDtype::kFloat32)
    m.f32.assign(static_cast<size_t>(total), 0.0f);
  else if (dtype == FeatureDtype::kFloat64)
    m.f64.assign(static_cast<size_t>(total), 0.0);
  else
    m.u16.assign(static_cast<size_t>(total), 0);
  FeatureMap& v = m.view;
  v.dtype = dtype;
  v.count = count, v.channels = C, v.height = H, v.width = W;
  if (strided) {
    v.stride_n = H * W * slots, v.stride_c = 2, v.stride_h = W * slots, v.stride_w = slots;
  } else {
    v.stride_n = C * H * W, v.stride_c = H * W, v.stride_h = W, v.stride_w = 1;
  }
  std::vector<double> vec(static_cast<size_t>(C));
  for (int64_t n = 0; n < count; ++n)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        double norm = 0.0;
        for (auto& e : vec) {
          e = rng.normal();
          norm += e * e;
        }
        norm = std::sqrt(std::max(norm, 1e-24));
        for (int64_t c = 0; c < C; ++c) {
          const float f = static_cast<float>(vec[c] / norm);
          const int64_t at = n * v.stride_n + c * v.stride_c + y * v.stride_h + x * v.stride_w;
          double stored;
          if (dtype == FeatureDtype::kFloat32) {
            m.f32[at] = f;
            stored = f;
          } else if (dtype == FeatureDtype::kFloat64) {
            m.f64[at] = vec[c] / norm;
            stored = m.f64[at];
          } else if (dtype == FeatureDtype::kFloat16) {
            m.u16[at] = float_to_half_bits(f);
            stored = hetmm::half_bits_to_float(m.u16[at]);
          } else {
            m.u16[at] = float_to_bf16_bits(f);
            stored = hetmm::bfloat16_bits_to_float(m.u16[at]);
          }
          m.values[((n * C + c) * H + y) * W + x] = stored;
        }
      }
  v.data = dtype == FeatureDtype::kFloat32   ? static_cast<const void*>(m.f32.data())
           : dtype == FeatureDtype::kFloat64 ? static_cast<const void*>(m.f64.data())
                                             : static_cast<const void*>(m.u16.data());
  return m;
}

// SPEC §2 by definition, in float64.
void naive(const Shape& s, const std::vector<double>& q, const std::vector<double>& t, std::vector<double>& fwd,
           std::vector<double>& bwd) {
  const int64_t C = s.C, H = s.H, W = s.W;
  auto dot = [&](int64_t b, int64_t y, int64_t x, int64_t n, int64_t y2, int64_t x2) {
    double acc = 0.0;
    for (int64_t c = 0; c < C; ++c) acc += q[((b * C + c) * H + y) * W + x] * t[((n * C + c) * H + y2) * W + x2];
    return acc;
  };
  fwd.assign(static_cast<size_t>(s.B * H * W), -1.0);
  bwd.assign(static_cast<size_t>(s.B * H * W), -1.0);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const int64_t o = (b * H + y) * W + x;
        const int64_t df = s.kf / 2, db = s.kb / 2;
        for (int64_t y2 = std::max<int64_t>(0, y - df); y2 <= std::min(H - 1, y + df); ++y2)
          for (int64_t x2 = std::max<int64_t>(0, x - df); x2 <= std::min(W - 1, x + df); ++x2)
            for (int64_t n = 0; n < s.N; ++n) fwd[o] = std::max(fwd[o], dot(b, y, x, n, y2, x2));
        for (int64_t y2 = std::max<int64_t>(0, y - db); y2 <= std::min(H - 1, y + db); ++y2)
          for (int64_t x2 = std::max<int64_t>(0, x - db); x2 <= std::min(W - 1, x + db); ++x2)
            for (int64_t n = 0; n < s.N; ++n) bwd[o] = std::max(bwd[o], dot(b, y2, x2, n, y, x));
      }
}

void set_threads(int n) {
#ifdef _OPENMP
  omp_set_num_threads(n);
#else
  (void)n;
#endif
}

// Largest |kernel - oracle| accepted: float32 rounding of C products, or the final float32 rounding for float64.
double tolerance(FeatureDtype dtype) { return dtype == FeatureDtype::kFloat64 ? 1.2e-7 : 2e-6; }

void check_shape(const Shape& s, FeatureDtype dtype, bool strided, uint64_t seed) {
  Rng rng(seed);
  const Map q = make_map(s.B, s.C, s.H, s.W, dtype, strided, rng);
  const Map t = make_map(s.N, s.C, s.H, s.W, dtype, strided, rng);
  std::vector<double> ef, eb;
  naive(s, q.values, t.values, ef, eb);
  const size_t plane = static_cast<size_t>(s.B * s.H * s.W);
  std::vector<float> first_f, first_b;
  for (int threads = 1; threads <= 3; ++threads) {
    set_threads(threads);
    std::vector<float> f(plane, 7.0f), b(plane, 7.0f);
    hetmm::window_match_cpu(q.view, t.view, s.kf, s.kb, f.data(), b.data());
    const auto where = hetmm_test::concat("shape B", s.B, " N", s.N, " C", s.C, " H", s.H, " W", s.W, " kf", s.kf,
                                          " kb", s.kb, " dtype ", static_cast<int>(dtype), " strided ", strided,
                                          " threads ", threads);
    if (threads == 1) {
      double worst_f = 0.0, worst_b = 0.0;
      for (size_t i = 0; i < plane; ++i) {
        worst_f = std::max(worst_f, std::fabs(f[i] - ef[i]));
        worst_b = std::max(worst_b, std::fabs(b[i] - eb[i]));
      }
      HETMM_CHECK(worst_f <= tolerance(dtype), where, " forward error ", worst_f);
      HETMM_CHECK(worst_b <= tolerance(dtype), where, " backward error ", worst_b);
      first_f = f, first_b = b;
    } else {
      HETMM_CHECK(std::memcmp(f.data(), first_f.data(), plane * sizeof(float)) == 0, where,
                  " forward differs from 1 thread");
      HETMM_CHECK(std::memcmp(b.data(), first_b.data(), plane * sizeof(float)) == 0, where,
                  " backward differs from 1 thread");
    }
  }
  set_threads(1);
}

void test_shapes() {
  const Shape shapes[] = {
      {1, 1, 1, 1, 1, 1, 1},      // 1x1 map, C = 1, N = 1
      {1, 1, 4, 1, 1, 13, 7},     // windows far larger than a 1x1 map
      {2, 3, 8, 5, 7, 3, 5},      // non-square, B > 1, backward window larger
      {1, 4, 16, 4, 9, 13, 7},    // windows larger than the map
      {3, 2, 5, 6, 3, 1, 3},      // forward window 1, odd C
      {2, 5, 3, 9, 8, 7, 1},      // backward window 1
      {1, 17, 33, 20, 19, 13, 7}, // two template chunks (16 + 1), two x segments, odd C
      {2, 40, 20, 18, 35, 9, 5},  // three chunks, three x segments, non-square
      {4, 16, 12, 3, 40, 5, 5},   // equal windows, exactly one chunk, wide map
  };
  uint64_t seed = 1;
  for (const Shape& s : shapes) check_shape(s, FeatureDtype::kFloat32, false, seed++);
  check_shape({2, 3, 8, 5, 7, 3, 5}, FeatureDtype::kFloat32, true, 100);
  check_shape({1, 18, 9, 17, 6, 7, 3}, FeatureDtype::kFloat32, true, 101);
  for (FeatureDtype dt : {FeatureDtype::kFloat16, FeatureDtype::kBFloat16, FeatureDtype::kFloat64}) {
    check_shape({2, 5, 24, 7, 6, 5, 3}, dt, false, 200);
    check_shape({1, 19, 10, 5, 18, 3, 7}, dt, true, 201);
  }
}

void test_random_shapes() {
  Rng rng(12345);
  for (int trial = 0; trial < 12; ++trial) {
    const int64_t kf = 2 * rng.below(7) + 1, kb = 2 * rng.below(7) + 1;
    const Shape s{1 + rng.below(3), 1 + rng.below(35), 1 + rng.below(40), 1 + rng.below(14), 1 + rng.below(24), kf,
                  kb};
    check_shape(s, trial % 4 == 3 ? FeatureDtype::kFloat64 : FeatureDtype::kFloat32, rng.below(2) == 1, 1000 + trial);
  }
}

void test_values() {
  // Identical query and template: both maps are exactly 1 up to rounding; opposite: the -1 floor.
  Rng rng(7);
  Map q = make_map(1, 8, 3, 4, FeatureDtype::kFloat32, false, rng);
  std::vector<float> f(12), b(12);
  hetmm::window_match_cpu(q.view, q.view, 3, 3, f.data(), b.data());
  for (int i = 0; i < 12; ++i) {
    HETMM_CHECK(std::fabs(f[i] - 1.0f) <= 1e-6f, "self-match forward ", f[i]);
    HETMM_CHECK(std::fabs(b[i] - 1.0f) <= 1e-6f, "self-match backward ", b[i]);
  }
  std::vector<float> one{1.0f, 0.0f}, minus{-1.0f, 0.0f};
  FeatureMap a{one.data(), FeatureDtype::kFloat32, 1, 2, 1, 1, 2, 1, 1, 1};
  FeatureMap m = a;
  m.data = minus.data();
  float fo = 0.0f, bo = 0.0f;
  hetmm::window_match_cpu(a, m, 1, 1, &fo, &bo);
  HETMM_CHECK(fo == -1.0f && bo == -1.0f, "anti-correlated gives ", fo, " ", bo);
}

// Two concurrent calls from an enclosing parallel region (whose nested regions get fewer threads than
// omp_get_max_threads() reports) must give the serial result. Every dot product is -1 here, so a partial map that
// nobody initialised (zeros or garbage) would show.
void test_concurrent_calls() {
#ifdef _OPENMP
  const int64_t B = 2, N = 19, C = 2, H = 7, W = 10;
  std::vector<float> qd(static_cast<size_t>(B * C * H * W), 0.0f), td(static_cast<size_t>(N * C * H * W), 0.0f);
  for (int64_t i = 0; i < B * H * W; ++i) qd[(i / (H * W)) * C * H * W + i % (H * W)] = 1.0f;
  for (int64_t i = 0; i < N * H * W; ++i) td[(i / (H * W)) * C * H * W + i % (H * W)] = -1.0f;
  const FeatureMap q{qd.data(), FeatureDtype::kFloat32, B, C, H, W, C * H * W, H * W, W, 1};
  const FeatureMap t{td.data(), FeatureDtype::kFloat32, N, C, H, W, C * H * W, H * W, W, 1};
  const size_t plane = static_cast<size_t>(B * H * W);
  std::vector<std::vector<float>> fs(2, std::vector<float>(plane)), bs(2, std::vector<float>(plane));
  set_threads(2);
  const int levels = omp_get_max_active_levels();
  omp_set_max_active_levels(1);
#pragma omp parallel num_threads(2)
  {
    const int i = omp_get_thread_num();
    hetmm::window_match_cpu(q, t, 5, 3, fs[i].data(), bs[i].data());
  }
  omp_set_max_active_levels(levels);
  set_threads(1);
  for (int i = 0; i < 2; ++i)
    for (size_t p = 0; p < plane; ++p) {
      HETMM_CHECK(fs[i][p] == -1.0f, "concurrent call ", i, " forward[", p, "] = ", fs[i][p]);
      HETMM_CHECK(bs[i][p] == -1.0f, "concurrent call ", i, " backward[", p, "] = ", bs[i][p]);
    }
#endif
}

void test_half_decoding() {
  // Every binary16 pattern against the textbook formula; bfloat16 against its float32 prefix.
  for (uint32_t h = 0; h < 65536; ++h) {
    const float got = hetmm::half_bits_to_float(static_cast<uint16_t>(h));
    const int e = (h >> 10) & 31, mant = h & 1023;
    const double sign = (h & 0x8000) ? -1.0 : 1.0;
    if (e == 31) {
      HETMM_CHECK(mant ? std::isnan(got) : std::isinf(got) && std::signbit(got) == (sign < 0), "half ", h);
      continue;
    }
    const double want = e == 0 ? sign * std::ldexp(mant, -24) : sign * std::ldexp(1024 + mant, e - 25);
    HETMM_CHECK(static_cast<double>(got) == want && std::signbit(got) == (sign < 0), "half ", h, " -> ", got);
  }
  HETMM_CHECK(hetmm::bfloat16_bits_to_float(0x3f80) == 1.0f, "bf16 1.0");
  HETMM_CHECK(hetmm::bfloat16_bits_to_float(0xc040) == -3.0f, "bf16 -3.0");
}

template <typename F>
bool throws(F f) {
  try {
    f();
  } catch (const std::invalid_argument&) {
    return true;
  }
  return false;
}

void test_errors() {
  std::vector<float> data(2 * 2 * 3 * 3, 0.5f);
  FeatureMap ok{data.data(), FeatureDtype::kFloat32, 2, 2, 3, 3, 18, 9, 3, 1};
  std::vector<float> f(18), b(18);
  HETMM_CHECK(throws([&] { hetmm::window_match_cpu(ok, ok, 2, 3, f.data(), b.data()); }), "even window");
  HETMM_CHECK(throws([&] { hetmm::window_match_cpu(ok, ok, 3, -1, f.data(), b.data()); }), "negative window");
  FeatureMap empty = ok;
  empty.count = 0;
  HETMM_CHECK(throws([&] { hetmm::window_match_cpu(empty, ok, 3, 3, f.data(), b.data()); }), "empty query");
  FeatureMap narrow = ok;
  narrow.width = 2;
  HETMM_CHECK(throws([&] { hetmm::window_match_cpu(ok, narrow, 3, 3, f.data(), b.data()); }), "W mismatch");
  FeatureMap half = ok;
  half.dtype = FeatureDtype::kFloat16;
  HETMM_CHECK(throws([&] { hetmm::window_match_cpu(ok, half, 3, 3, f.data(), b.data()); }), "dtype mismatch");
  HETMM_CHECK(throws([&] { hetmm::window_match_cpu(ok, ok, 3, 3, nullptr, b.data()); }), "null output");
}

}  // namespace

int main() {
  test_half_decoding();
  test_values();
  test_errors();
  test_shapes();
  test_random_shapes();
  test_concurrent_calls();
  return hetmm_test::report("test_window_match");
}
