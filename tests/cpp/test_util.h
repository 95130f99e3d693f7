// Minimal helpers shared by the torch-free C++ kernel tests (tests/cpp/test_*.cpp, run by ctest).
//
//   HETMM_CHECK(cond, message...)   records a failure (file:line + message) and continues
//   hetmm_test::failures()          number of failures so far; main() returns hetmm_test::report("name")
//   hetmm_test::Rng                 seeded random numbers (uniform, normal) independent of the platform's <random>
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>

namespace hetmm_test {

inline int& failures() {
  static int count = 0;
  return count;
}

template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

inline void fail(const char* file, int line, const std::string& what) {
  ++failures();
  if (failures() <= 20) std::fprintf(stderr, "%s:%d: FAILED %s\n", file, line, what.c_str());
}

inline int report(const char* name) {
  if (failures() == 0) {
    std::printf("%s: all checks passed\n", name);
    return 0;
  }
  std::fprintf(stderr, "%s: %d check(s) failed\n", name, failures());
  return 1;
}

// splitmix64: tiny, seedable and identical on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  double normal() {  // Box-Muller
    const double u = 1.0 - uniform(), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }

 private:
  uint64_t state_;
};

}  // namespace hetmm_test

#define HETMM_CHECK(cond, ...)                                                                  \
  do {                                                                                          \
    if (!(cond)) ::hetmm_test::fail(__FILE__, __LINE__, ::hetmm_test::concat(#cond, ": ", __VA_ARGS__)); \
  } while (0)
