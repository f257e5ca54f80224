// The CPU backward kernel of two builds, compared bit for bit and timed (see README.md).
//
// Linked from two translation units: the baseline revision's pwlu_kernels.cpp with its namespace
// renamed to pwlu_old (backward_run, one run per call), and the working tree's (backward_runs,
// a chunk's run slices per call). Exit status 1 if any case differs.
#include "pwlu_kernels.h"  // the working tree's
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <random>
#include <stdexcept>
static bool same_bits_or_nans(const double* a, const double* b, size_t n) { for (size_t i = 0; i < n; ++i) if (std::memcmp(a + i, b + i, 8) && !(std::isnan(a[i]) && std::isnan(b[i]))) return false; return true; }
namespace pwlu_old { namespace kernels {
template <typename T> struct Unit { T left_bound, right_bound, inv_width; const T* slope; const T* intercept; int64_t num_intervals; };
struct BinSums { double* sum_g; double* sum_gw; };
template <typename T> void backward_run(const T*, const T*, T*, int64_t, const Unit<T>&, BinSums);
void set_cpu_capability(const std::string&);
}}
namespace K = pwlu_det::kernels; namespace O = pwlu_old::kernels;
int fails = 0;
// Both builds on this instruction set; false (the case skipped) where the CPU lacks it.
bool use(const char* isa) {
  try {
    K::set_cpu_capability(isa);
    O::set_cpu_capability(isa);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}
struct Case { std::vector<float> x, g; int N, C; int64_t L, begin, end; };
// chunk [begin, end) of a (R, C, L) tensor, channel-wise
bool run_both(const char* isa, Case& cs, std::vector<float>& gx1, std::vector<float>& gx2, std::vector<double>& s1, std::vector<double>& s2, bool compare) {
  const int bins = cs.N + 2, C = cs.C;
  std::vector<float> slope(bins), icpt(bins); for (int b = 0; b < bins; ++b) { slope[b] = 0.3f * b - 1; icpt[b] = 0.1f * b; }
  std::vector<K::Unit<float>> ku; std::vector<O::Unit<float>> ou;
  for (int c = 0; c < C; ++c) { float l = -3.f + 0.01f * c; ku.push_back({l, 3.f, cs.N / (3.f - l), slope.data(), icpt.data(), cs.N}); ou.push_back({l, 3.f, cs.N / (3.f - l), slope.data(), icpt.data(), cs.N}); }
  if (!use(isa)) return false;
  std::fill(s1.begin(), s1.end(), 0.0); std::fill(s2.begin(), s2.end(), 0.0);
  std::vector<K::RunSlice<float>> slices;
  int64_t run = cs.begin / cs.L, unit = run % C;
  for (int64_t o = cs.begin; o < cs.end; ++run) {
    const int64_t re = std::min(cs.end, (run + 1) * cs.L);
    double* us1 = s1.data() + unit * 2 * bins; double* us2 = s2.data() + unit * 2 * bins;
    O::backward_run<float>(cs.x.data() + o, cs.g.data() + o, gx1.data() + o, re - o, ou[unit], O::BinSums{us1, us1 + bins});
    slices.push_back({o, re, &ku[unit], K::BinSums{us2, us2 + bins}});
    o = re; if (++unit == C) unit = 0;
  }
  K::backward_runs<float>(cs.x.data(), cs.g.data(), gx2.data(), slices);
  if (compare && (std::memcmp(gx1.data() + cs.begin, gx2.data() + cs.begin, 4 * (cs.end - cs.begin)) || !same_bits_or_nans(s1.data(), s2.data(), s1.size()))) {
    ++fails; printf("DIFF isa=%s N=%d C=%d L=%ld [%ld,%ld)\n", isa, cs.N, C, (long)cs.L, (long)cs.begin, (long)cs.end);
    for (int64_t k = cs.begin; k < cs.end; ++k) if (std::memcmp(&gx1[k], &gx2[k], 4)) { printf("  gx[%ld] x=%.9g g=%g old=%.9g new=%.9g\n", (long)k, cs.x[k], cs.g[k], gx1[k], gx2[k]); break; }
    for (size_t i = 0; i < s1.size(); ++i) if (std::memcmp(&s1[i], &s2[i], 8)) { printf("  sum[%zu] (unit %zu, %s bin %zu) old=%.17g new=%.17g\n", i, i / (2 * bins), (i % (2 * bins)) < (size_t)bins ? "g" : "gw", i % bins, s1[i], s2[i]); }
  }
  return true;
}

Case make(int N, int C, int64_t L, int64_t R, float rho, int seed) {
  Case cs; cs.N = N; cs.C = C; cs.L = L; std::mt19937 rng(seed); std::normal_distribution<float> nd(0, 1);
  const int64_t n = R * C * L; cs.x.resize(n); cs.g.resize(n); float v = 0;
  for (int64_t k = 0; k < n; ++k) { v = rho * v + std::sqrt(1 - rho * rho) * nd(rng); cs.x[k] = 2 * v; cs.g[k] = nd(rng) * std::pow(10.f, (float)(rng() % 16) - 8.f); }
  if (n > 50) { cs.x[3] = NAN; cs.g[17] = INFINITY; cs.x[20] = INFINITY; cs.x[21] = -INFINITY; cs.g[30] = NAN; }
  cs.begin = 0; cs.end = n; return cs;
}
int main() {
  int cases = 0;
  for (const char* isa : {"avx512", "avx2", "scalar"})
    for (int N : {1, 16, 30, 64})
      for (int C : {1, 2, 3, 8, 9, 64})
        for (int64_t L : {1, 7, 49, 64, 196, 255, 256, 300, 1024})
          for (float rho : {0.f, 0.95f}) {
            Case cs = make(N, C, L, 3, rho, cases);
            std::vector<float> gx1(cs.x.size()), gx2(cs.x.size()); std::vector<double> s1(2 * (N + 2) * C), s2(s1.size());
            cases += run_both(isa, cs, gx1, gx2, s1, s2, true);
            const int64_t n = cs.x.size(); cs.begin = n / 3 + 5; cs.end = n - n / 4 - 3;  // chunk mid-run
            if (cs.begin < cs.end) { cases += run_both(isa, cs, gx1, gx2, s1, s2, true); }
          }
  printf("%d cases, %d differ\n", cases, fails);
  struct Shape { const char* name; int C; int64_t L, R; } shapes[] = {{"(128,64,7,7)", 64, 49, 128}, {"(2,512,8,8)", 512, 64, 2}, {"(23,64,14,14)", 64, 196, 23}, {"(2,256,16,16)", 256, 256, 2}, {"(2,64,64,64)", 64, 4096, 2}};
  for (auto& sh : shapes) for (const char* isa : {"avx512", "avx2"}) {
    Case cs = make(16, sh.C, sh.L, sh.R, 0.9f, 1);
    const int bins = 18; std::vector<float> gx(cs.x.size()); std::vector<double> s(2 * bins * sh.C);
    std::vector<float> slope(bins, 0.5f), icpt(bins, 0.f);
    std::vector<K::Unit<float>> ku(sh.C, K::Unit<float>{-3.f, 3.f, 16 / 6.f, slope.data(), icpt.data(), 16});
    std::vector<O::Unit<float>> ou(sh.C, O::Unit<float>{-3.f, 3.f, 16 / 6.f, slope.data(), icpt.data(), 16});
    if (!use(isa)) continue;
    std::vector<K::RunSlice<float>> slices;
    for (int64_t r = 0; r < sh.R * sh.C; ++r) { double* us = s.data() + (r % sh.C) * 2 * bins; slices.push_back({r * sh.L, (r + 1) * sh.L, &ku[r % sh.C], K::BinSums{us, us + bins}}); }
    std::vector<double> ratios;
    double best[2] = {1e9, 1e9};
    for (int rep = 0; rep < 7; ++rep) { double t[2];
      for (int which = 0; which < 2; ++which) {
        auto t0 = std::chrono::steady_clock::now();
        for (int it = 0; it < 20; ++it) {
          if (which == 0) for (int64_t r = 0; r < sh.R * sh.C; ++r) { double* us = s.data() + (r % sh.C) * 2 * bins; O::backward_run<float>(cs.x.data() + r * sh.L, cs.g.data() + r * sh.L, gx.data() + r * sh.L, sh.L, ou[r % sh.C], O::BinSums{us, us + bins}); }
          else K::backward_runs<float>(cs.x.data(), cs.g.data(), gx.data(), slices);
        }
        t[which] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 20;
        best[which] = std::min(best[which], t[which]);
      }
      ratios.push_back(t[1] / t[0]); }
    std::sort(ratios.begin(), ratios.end());
    printf("%-15s %-7s old %.3f ms new %.3f ms (best of 7), new/old median %.2f\n", sh.name, isa, best[0], best[1], ratios[3]);
  }
  return fails != 0;
}
