// Inner loops of the PWLU CPU kernel over a run of elements that share one unit.
//
// Plain C++ with no PyTorch headers, so that the vectorized variants (compiled with GCC
// `target` attributes and chosen at run time) cannot leak wider instructions into code shared
// with the rest of the extension.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pwlu_det {
namespace kernels {

// One unit's parameters in the inference form: bin 0 is the left piece, bins 1..N the
// intervals, bin N+1 the right piece; f(x) = slope[bin] * x + intercept[bin].
template <typename T>
struct Unit {
  T left_bound;
  T right_bound;
  T inv_width;  // N / (B_R - B_L): the interval position is (x - B_L) * inv_width
  const T* slope;      // N + 2 entries
  const T* intercept;  // N + 2 entries
  int64_t num_intervals;
};

// Per-bin sums of a unit that the backward needs (N + 2 bins each):
// sum_g[b] = sum of g, sum_gw[b] = sum of g * w, with w = u inside an interval,
// x - B_L in the left bin and x - B_R in the right bin.
struct BinSums {
  double* sum_g;
  double* sum_gw;
};

// y[k] = f(x[k]) for k < n.
template <typename T>
void forward_run(const T* x, T* y, int64_t n, const Unit<T>& unit);

// Elements [begin, end) of a chunk that share one unit, and where that unit's sums go.
template <typename T>
struct RunSlice {
  int64_t begin;
  int64_t end;
  const Unit<T>* unit;
  BinSums sums;
};

// For each slice in order: gx[k] = g[k] * f'(x[k]) over it, and its per-bin sums added into
// its `sums` (the order of the additions is fixed: docs/decisions.md).
template <typename T>
void backward_runs(const T* x, const T* g, T* gx, const std::vector<RunSlice<T>>& slices);

// All units of a channel-wise op: units[u] as above, and the same values as arrays for vector
// loads (structure of arrays): unit u's bounds are left_bound[u], right_bound[u], inv_width[u],
// and the slope of its bin b is pairs[2 * (u * (num_intervals + 2) + b)], followed by the
// intercept (one 64-bit gather fetches both).
template <typename T>
struct UnitArrays {
  const Unit<T>* units;
  int64_t num_units;
  int64_t num_intervals;
  const T* left_bound;
  const T* right_bound;
  const T* inv_width;
  const T* pairs;
};

// Interleaved units (a channel dimension with stride 1, e.g. (N, C) inputs of linear layers or
// channels_last): element k uses unit (first_unit + k) % num_units. Vector loops for float32
// (16 or 8 consecutive channels at a time); num_units * (num_intervals + 2) must fit in int32.
template <typename T>
void forward_interleaved(const T* x, T* y, int64_t n, int64_t first_unit,
                         const UnitArrays<T>& all);

// As forward_interleaved, adding each element's g and g * w into its unit's bin, in element
// order: sums is (num_units, num_intervals + 2, 2), the pair of unit u's bin b at
// sums[2 * (u * (num_intervals + 2) + b)]. Vector loops for float32, as forward_interleaved.
template <typename T>
void backward_interleaved(const T* x, const T* g, T* gx, int64_t n, int64_t first_unit,
                          const UnitArrays<T>& all, double* sums);

// The instruction set the float32 loops use: "avx512", "avx2" or "scalar".
std::string cpu_capability();
// The instruction sets the dispatch may use here, best first: those this CPU has, at or below
// the cap PWLU_DET_CPU_CAPABILITY sets (throws if that variable is unknown or unsupported).
std::vector<std::string> cpu_capabilities();
// Force an instruction set, or "best" (for tests and benchmarks); throws std::invalid_argument
// if the name is unknown, the CPU lacks it, or PWLU_DET_CPU_CAPABILITY caps it.
void set_cpu_capability(const std::string& name);

}  // namespace kernels
}  // namespace pwlu_det
