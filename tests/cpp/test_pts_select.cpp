// Torch-free tests of the CPU pts_select kernel (csrc/pts_select): the Gram product against a sequential sum, the
// selection steps on hand-made matrices with known answers (ties included), the whole op against indices computed
// once by the Python reference (hetmm_fast.reference.pts_select with scikit-learn 1.9.1), layouts, dtypes, threads
// and the non-finite check.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "pts_select/pts_select.h"
#include "test_util.h"

namespace {

std::string show(const std::vector<int64_t>& v) {
  std::string s;
  for (int64_t x : v) s += std::to_string(x) + " ";
  return s;
}

void test_gram_is_a_sequential_sum() {
  // Values with few significant bits: every product and partial sum is exact, so any correct kernel equals the
  // plain loop bit for bit, whatever its tiling (N, C cover the register-tile and channel-block edges).
  hetmm_test::Rng rng(1);
  const int64_t sizes[][2] = {{1, 1}, {5, 3}, {8, 64}, {13, 65}, {14, 7}, {49, 130}, {200, 9}};
  for (const auto& s : sizes) {
    const int64_t N = s[0], C = s[1], ld = hetmm::gram_ld(N);
    HETMM_CHECK(ld >= N && ld % 8 == 0, "gram_ld(", N, ") = ", ld);
    std::vector<double> xt(C * ld, 0.0), G(ld * ld, -7.0);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < N; ++i) xt[c * ld + i] = static_cast<double>(rng.below(33) - 16) / 16.0;
    hetmm::gram_f64(xt.data(), C, N, ld, G.data());
    int wrong = 0;
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double want = 0.0;
        for (int64_t c = 0; c < C; ++c) want += xt[c * ld + i] * xt[c * ld + j];
        wrong += G[i * ld + j] != want;
      }
    HETMM_CHECK(wrong == 0, "N=", N, " C=", C, ": ", wrong, " wrong entries");
  }
}

void test_gram_is_exactly_symmetric() {
  hetmm_test::Rng rng(2);
  const int64_t N = 37, C = 100, ld = hetmm::gram_ld(N);
  std::vector<double> xt(C * ld, 0.0), G(ld * ld);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < N; ++i) xt[c * ld + i] = rng.normal();
  hetmm::gram_f64(xt.data(), C, N, ld, G.data());
  int asym = 0;
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < N; ++j) asym += G[i * ld + j] != G[j * ld + i];
  HETMM_CHECK(asym == 0, asym, " asymmetric entries");
}

// Hand-made similarity matrix (N = 6). Easy normals for labels [1, -1, 0, 1, 0, 0]: cluster 1 first (it appears
// first), members {0, 3} tie at 1.5 -> 0; cluster 0, members {2, 4, 5} with sums 1.5, 2.1, 2.2 -> 5. Greedy:
// dp = G[:, 0] + G[:, 5] = (-, 0, 0.3, 0.6, 0.7, -) -> 1; then dp2 = dp3 = 0.6 tie -> 2.
const double kG[36] = {1,   0.1, 0.0, 0.5, -0.2, 0.4,  0.1, 1,   0.3, 0.0, 0.1, -0.1,
                       0.0, 0.3, 1,   0.2, 0.2,  0.3,  0.5, 0.0, 0.2, 1,   0.6, 0.1,
                       -0.2, 0.1, 0.2, 0.6, 1,   0.9,  0.4, -0.1, 0.3, 0.1, 0.9, 1};

std::vector<int64_t> choose(const std::vector<int64_t>& labels, int64_t K) {
  hetmm::PtsWorkspace ws;
  std::vector<int64_t> out(static_cast<size_t>(2 * K), -5);
  hetmm::pts_choose(kG, 6, 6, labels.data(), K, ws, out.data(), 2);  // stride 2: every other slot
  std::vector<int64_t> picked;
  for (int64_t k = 0; k < K; ++k) picked.push_back(out[2 * k]);
  for (int64_t k = 0; k < K; ++k) HETMM_CHECK(out[2 * k + 1] == -5, "wrote outside its stride");
  return picked;
}

void test_choose_known_answers() {
  auto got = choose({1, -1, 0, 1, 0, 0}, 4);
  HETMM_CHECK(got == std::vector<int64_t>({0, 5, 1, 2}), "two clusters, K=4: ", show(got));
  got = choose({1, -1, 0, 1, 0, 0}, 1);
  HETMM_CHECK(got == std::vector<int64_t>({0}), "stop after K medoids: ", show(got));
  // Two clusters whose members tie -> the smaller index of each, in order of first appearance.
  got = choose({2, 2, 1, 1, 0, 0}, 2);
  HETMM_CHECK(got == std::vector<int64_t>({0, 2}), "tied medoids: ", show(got));
  // No cluster: the global medoid (rows 4 and 5 both sum to 2.6 -> 4), then greedy: 0, then dp1 = dp2 = 0.2 -> 1.
  got = choose({-1, -1, -1, -1, -1, -1}, 3);
  HETMM_CHECK(got == std::vector<int64_t>({4, 0, 1}), "no cluster: ", show(got));
  got = choose({-1, -1, -1, -1, -1, -1}, 6);
  std::vector<int64_t> sorted = got;
  std::sort(sorted.begin(), sorted.end());
  HETMM_CHECK(sorted == std::vector<int64_t>({0, 1, 2, 3, 4, 5}), "K = N must take every index once: ", show(got));
}

// Templates T[N, C, H, W] with values k / 16 (exact in float, all Gram entries exact): three groups, outliers and
// exact duplicates (i and i + 15 coincide unless one is an outlier). The same formula made the Python reference input.
std::vector<float> formula_templates(int64_t N, int64_t C, int64_t H, int64_t W) {
  const int base[3][8] = {{6, -3, 2, 5, -1, 4, 0, 3}, {-5, 4, 6, -2, 3, 0, -4, 1}, {1, 6, -5, 3, 5, -2, 2, -6}};
  std::vector<float> t(N * C * H * W);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < H * W; ++p) {
        int64_t v = base[i % 3][c % 8] + (i * 5 + c * 3 + p * 7) % 5 - 2;
        if (i % 7 == 6) v = (i * 11 + c * 13 + p * 3) % 15 - 7;
        t[(i * C + c) * H * W + p] = static_cast<float>(v) / 16.0f;
      }
  return t;
}

void test_whole_op_matches_reference() {
  const int64_t N = 22, C = 5, H = 2, W = 3, K = 6, P = H * W;
  // hetmm_fast.reference.pts_select.pts_indices on the same input, [K, H * W].
  const std::vector<int64_t> want = {0, 0, 0,  0, 0,  0,  1, 1,  20, 1,  1, 1, 2,  2,  2, 2,  2,  2,
                                     13, 6, 1, 13, 20, 13, 6, 13, 6,  3, 13, 6, 3, 4, 4, 20, 4, 3};
  const auto t = formula_templates(N, C, H, W);
  std::vector<int64_t> got(K * P, -1);
  HETMM_CHECK(hetmm::pts_select_cpu(t.data(), N, C, H, W, C * P, P, W, 1, K, got.data(), 1) == -1, "rejected");
  HETMM_CHECK(got == want, "float32: ", show(got));

  // float64 input with the same values: identical Gram matrices, identical result.
  std::vector<double> t64(t.begin(), t.end());
  std::vector<int64_t> got64(K * P, -1);
  HETMM_CHECK(hetmm::pts_select_cpu(t64.data(), N, C, H, W, C * P, P, W, 1, K, got64.data(), 2) == -1, "rejected");
  HETMM_CHECK(got64 == want, "float64: ", show(got64));

  // Channels-last layout [N, H, W, C] described by strides.
  std::vector<float> cl(t.size());
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < P; ++p) cl[(i * P + p) * C + c] = t[(i * C + c) * P + p];
  std::vector<int64_t> got_cl(K * P, -1);
  HETMM_CHECK(hetmm::pts_select_cpu(cl.data(), N, C, H, W, P * C, 1, W * C, C, K, got_cl.data(), 2) == -1,
              "rejected");
  HETMM_CHECK(got_cl == want, "channels-last: ", show(got_cl));
}

void test_threads_and_groups_do_not_change_results() {
  // 23 x 29 pixels: several pixel groups with a partial last one, a row boundary inside groups.
  hetmm_test::Rng rng(9);
  const int64_t N = 40, C = 24, H = 23, W = 29, K = 9, P = H * W;
  std::vector<float> t(N * C * P);
  std::vector<double> centres(4 * C);
  for (double& v : centres) v = rng.normal();
  for (int64_t i = 0; i < N; ++i)
    for (int64_t p = 0; p < P; ++p) {
      const int64_t g = (i + p) % 4;
      double norm = 0;
      for (int64_t c = 0; c < C; ++c) {
        const double v = centres[g * C + c] + 0.4 * rng.normal();
        t[(i * C + c) * P + p] = static_cast<float>(v);
        norm += v * v;
      }
      for (int64_t c = 0; c < C; ++c) t[(i * C + c) * P + p] /= static_cast<float>(std::sqrt(norm));
    }
  std::vector<int64_t> one(K * P), two(K * P), pixel(K);
  HETMM_CHECK(hetmm::pts_select_cpu(t.data(), N, C, H, W, C * P, P, W, 1, K, one.data(), 1) == -1, "rejected");
  HETMM_CHECK(hetmm::pts_select_cpu(t.data(), N, C, H, W, C * P, P, W, 1, K, two.data(), 2) == -1, "rejected");
  HETMM_CHECK(one == two, "1 and 2 threads differ");
  // Each pixel alone (a 1 x 1 map viewed inside the big one) gives the same choices.
  for (int64_t p : {int64_t(0), int64_t(17), int64_t(P - 1)}) {
    HETMM_CHECK(hetmm::pts_select_cpu(t.data() + p, N, C, 1, 1, C * P, P, 0, 0, K, pixel.data(), 1) == -1, "rej");
    for (int64_t k = 0; k < K; ++k) HETMM_CHECK(pixel[k] == one[k * P + p], "pixel ", p, " choice ", k);
    std::vector<int64_t> sorted(pixel);
    std::sort(sorted.begin(), sorted.end());
    HETMM_CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end(), "repeated choice at ", p);
  }
}

void test_non_finite_pixels_are_reported() {
  const int64_t N = 6, C = 3, H = 4, W = 5, K = 2, P = H * W;
  std::vector<float> t(N * C * P, 0.25f);
  std::vector<int64_t> out(K * P);
  HETMM_CHECK(hetmm::pts_select_cpu(t.data(), N, C, H, W, C * P, P, W, 1, K, out.data(), 2) == -1, "rejected");
  t[(2 * C + 1) * P + 13] = std::numeric_limits<float>::quiet_NaN();
  t[(4 * C + 0) * P + 7] = std::numeric_limits<float>::infinity();
  HETMM_CHECK(hetmm::pts_select_cpu(t.data(), N, C, H, W, C * P, P, W, 1, K, out.data(), 2) == 7,
              "smallest non-finite pixel not reported");
}

}  // namespace

int main() {
  test_gram_is_a_sequential_sum();
  test_gram_is_exactly_symmetric();
  test_choose_known_answers();
  test_whole_op_matches_reference();
  test_threads_and_groups_do_not_change_results();
  test_non_finite_pixels_are_reported();
  return hetmm_test::report("test_pts_select");
}
