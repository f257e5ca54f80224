// PWLU inner loops: a scalar version for any type, and AVX2 / AVX-512 versions for float32
// compiled with function-level `target` attributes and selected at run time by a CPU check
// (never by build flags, so the extension still runs on CPUs without these instructions).
#include "pwlu_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <vector>

namespace pwlu_det {
namespace kernels {
namespace {

// ---------------------------------------------------------------------------------------
// Scalar code: the definition every vector variant must reproduce.

// The bin of x (0: left piece, 1..N: interval i + 1, N + 1: right piece) and its w.
template <typename T>
inline int64_t bin_of(T x, const Unit<T>& unit, T* w) {
  if (x < unit.left_bound) {
    *w = x - unit.left_bound;
    return 0;
  }
  if (x >= unit.right_bound) {
    *w = x - unit.right_bound;
    return unit.num_intervals + 1;
  }
  const T position = (x - unit.left_bound) * unit.inv_width;
  T interval = std::floor(position);
  if (!(interval >= T(0))) interval = T(0);  // also a NaN x: interval 0, and w stays NaN
  if (interval > T(unit.num_intervals - 1)) interval = T(unit.num_intervals - 1);
  *w = position - interval;
  return static_cast<int64_t>(interval) + 1;
}

template <typename T>
void forward_scalar(const T* x, T* y, int64_t n, const Unit<T>& unit) {
  for (int64_t k = 0; k < n; ++k) {
    T w;
    const int64_t bin = bin_of(x[k], unit, &w);
    y[k] = unit.slope[bin] * x[k] + unit.intercept[bin];
  }
}

template <typename T>
void backward_scalar(const T* x, const T* g, T* gx, int64_t n, const Unit<T>& unit, BinSums sums) {
  for (int64_t k = 0; k < n; ++k) {
    T w;
    const int64_t bin = bin_of(x[k], unit, &w);
    gx[k] = g[k] * unit.slope[bin];
    sums.sum_g[bin] += static_cast<double>(g[k]);
    sums.sum_gw[bin] += static_cast<double>(g[k] * w);
  }
}

template <typename T>
void forward_interleaved_scalar(const T* x, T* y, int64_t n, int64_t first_unit,
                                const UnitArrays<T>& all) {
  int64_t unit = first_unit % all.num_units;
  for (int64_t k = 0; k < n; ++k) {
    T w;
    const Unit<T>& u = all.units[unit];
    const int64_t bin = bin_of(x[k], u, &w);
    y[k] = u.slope[bin] * x[k] + u.intercept[bin];
    if (++unit == all.num_units) unit = 0;
  }
}

// Runs at least this long accumulate into several interleaved copies of the bin sums, so
// that consecutive elements in the same bin do not wait on each other's additions: element k
// of the run adds into copy k % kCopies, each copy sums its elements in order, and the copies
// are added into the run's sums one after the other. That order fixes every bit of the sums.
constexpr int64_t kLongRun = 256;
constexpr int kCopies = 4;  // the vector loops' lane-to-copy patterns assume 4

// The copies of one long run (thread-local storage, reused), fed by the vector loops in
// blocks: a loop stages kStage elements (for each, the byte offset of its copy's bin and the
// pair (g, g * w) in double), then add_staged() adds them in element order, one 128-bit
// load-add-store per element. Staging a whole block first matters: read back right away, each
// value would have to be forwarded from a vector store still in the store buffer, and that
// stalled the old element-by-element loop (2.4x slower, the same sums to the bit).
class SplitSums {
 public:
  static constexpr int64_t kStage = 64;

  explicit SplitSums(int64_t bins) : bins_(bins) {
    thread_local std::vector<double> storage;
    storage.assign(static_cast<size_t>(2 * kCopies * bins), 0.0);
    data_ = storage.data();
  }
  // Whether the vector loops' int32 byte offsets reach every copy (not past 2**31 / 64 bins;
  // beyond, a run takes the scalar loop).
  static bool offsets_fit(int64_t bins) {
    return bins <= std::numeric_limits<int32_t>::max() / (2 * kCopies * sizeof(double));
  }
  // The byte offset of copy 1 from copy 0 (lane l's copy is l % kCopies; its bin b adds 16 b).
  int32_t copy_stride() const { return static_cast<int32_t>(2 * bins_ * sizeof(double)); }
  // Where a vector loop stages element e of the block: its offset and its (g, g * w) pair.
  int32_t* offsets() { return offsets_; }
  double* pairs() { return pairs_; }
  // Adds the first `count` staged elements into their copies, in element order.
  void add_staged(int64_t count) {
    char* base = reinterpret_cast<char*>(data_);
#pragma GCC unroll 4
    for (int64_t e = 0; e < count; ++e) {
      double* sum = reinterpret_cast<double*>(base + offsets_[e]);
      _mm_storeu_pd(sum, _mm_add_pd(_mm_loadu_pd(sum), _mm_load_pd(pairs_ + 2 * e)));
    }
  }
  void flush(BinSums sums) const {
    for (int c = 0; c < kCopies; ++c) {
      const double* copy = data_ + 2 * bins_ * c;
      for (int64_t b = 0; b < bins_; ++b) {
        sums.sum_g[b] += copy[2 * b];
        sums.sum_gw[b] += copy[2 * b + 1];
      }
    }
  }

 private:
  int64_t bins_;
  double* data_;  // copy c, bin b: (sum of g, sum of g * w) at data_[2 * (c * bins_ + b)]
  alignas(64) int32_t offsets_[kStage];
  alignas(64) double pairs_[2 * kStage];
};

// Short runs (fewer than kLongRun elements) add into their unit's sums in element order, and
// consecutive runs of one unit continue the same sums: each bin's additions form one chain,
// which stalls on its own latency when neighbouring elements share a bin. Runs of different
// units are independent, so the vector loops stage up to kGroup consecutive short runs of
// distinct units (bins and (g, g * w) pairs), then add them interleaved, element e of each run
// in turn: every chain keeps its order, and kGroup of them overlap.
class ShortRuns {
 public:
  static constexpr int kGroup = 8;

  // The group's thread-local storage (40 KB), empty.
  static ShortRuns& local() {
    thread_local ShortRuns runs;
    return runs;
  }
  // Whether the run with these sums must wait for the staged ones to be added first.
  bool must_flush_before(BinSums sums) const {
    if (count_ == kGroup) return true;
    for (int i = 0; i < count_; ++i) {
      if (sums_[i].sum_g == sums.sum_g) return true;
    }
    return false;
  }
  // Room to stage a run of n (< kLongRun) elements adding into `sums`: its bins and pairs.
  int32_t* stage(int64_t n, BinSums sums, double** pairs) {
    length_[count_] = n;
    sums_[count_] = sums;
    *pairs = pairs_[count_];
    return bins_[count_++];
  }
  // Adds the staged runs into their sums, and empties the group.
  void flush() {
    int64_t common = kLongRun;
    for (int i = 0; i < count_; ++i) common = std::min(common, length_[i]);
    for (int64_t e = 0; e < common; ++e) {
      for (int i = 0; i < count_; ++i) add(i, e);
    }
    for (int i = 0; i < count_; ++i) {
      for (int64_t e = common; e < length_[i]; ++e) add(i, e);
    }
    count_ = 0;
  }

 private:
  ShortRuns() = default;
  inline void add(int i, int64_t e) {
    const int32_t bin = bins_[i][e];
    sums_[i].sum_g[bin] += pairs_[i][2 * e];
    sums_[i].sum_gw[bin] += pairs_[i][2 * e + 1];
  }

  int count_ = 0;
  int64_t length_[kGroup];
  BinSums sums_[kGroup];
  alignas(64) int32_t bins_[kGroup][kLongRun];
  alignas(64) double pairs_[kGroup][2 * kLongRun];
};

// The backward of a chunk's runs in order: long runs by `long_run`, short ones staged by
// `stage_short` and added by ShortRuns; the same sums as backward_scalar / the long loops
// applied run after run.
template <typename LongRun, typename StageShort>
void backward_slices(const float* x, const float* g, float* gx,
                     const std::vector<RunSlice<float>>& slices, LongRun long_run,
                     StageShort stage_short) {
  ShortRuns& group = ShortRuns::local();
  for (const RunSlice<float>& run : slices) {
    const int64_t n = run.end - run.begin;
    if (n >= kLongRun) {
      group.flush();
      long_run(x + run.begin, g + run.begin, gx + run.begin, n, *run.unit, run.sums);
      continue;
    }
    if (group.must_flush_before(run.sums)) group.flush();
    double* pairs;
    int32_t* bins = group.stage(n, run.sums, &pairs);
    stage_short(x + run.begin, g + run.begin, gx + run.begin, n, *run.unit, bins, pairs);
  }
  group.flush();
}

// The scalar backward of each slice in turn (the scalar ISA, and float64).
template <typename T>
void backward_slices_scalar(const T* x, const T* g, T* gx,
                            const std::vector<RunSlice<T>>& slices) {
  for (const RunSlice<T>& run : slices) {
    backward_scalar(x + run.begin, g + run.begin, gx + run.begin, run.end - run.begin,
                    *run.unit, run.sums);
  }
}

// Interleaved units, in blocks: `stage` (a vector loop) computes gx and stages, for up to
// kLanes consecutive channels of one row (elements [k, k + lanes), units [u, u + lanes)), each
// element's pair index (unit * bins + bin) and its (g, g * w) pair in double; then the block's
// elements add into their pairs of sums in element order, as backward_interleaved_scalar adds
// them, one 128-bit load-add-store each. Neighbouring elements belong to different units, so
// the additions do not wait on each other. The staging arrays have kLanes entries of slack: a
// vector stage writes all its lanes.
template <int kLanes, typename Stage>
void backward_interleaved_staged(const float* x, const float* g, float* gx, int64_t n,
                                 int64_t first_unit, const UnitArrays<float>& all, double* sums,
                                 Stage stage) {
  constexpr int64_t kBlock = 64;
  alignas(64) int32_t index[kBlock + kLanes];
  alignas(64) double pairs[2 * (kBlock + kLanes)];
  int64_t u = first_unit % all.num_units;
  for (int64_t k = 0; k < n;) {
    int64_t staged = 0;
    while (staged < kBlock && k + staged < n) {
      const int64_t lanes = std::min<int64_t>({kLanes, n - k - staged, all.num_units - u});
      const int64_t e = k + staged;
      stage(x + e, g + e, gx + e, lanes, u, all, index + staged, pairs + 2 * staged);
      staged += lanes;
      u += lanes;
      if (u == all.num_units) u = 0;
    }
    for (int64_t e = 0; e < staged; ++e) {
      double* sum = sums + 2 * static_cast<int64_t>(index[e]);
      _mm_storeu_pd(sum, _mm_add_pd(_mm_loadu_pd(sum), _mm_loadu_pd(pairs + 2 * e)));
    }
    k += staged;
  }
}

// ---------------------------------------------------------------------------------------
// AVX-512 (16 floats per vector).

// bin_of for 16 elements, each lane with its own bounds (as floats).
__attribute__((target("avx512f"))) inline __m512 bins_avx512(
    __m512 x, __m512 left, __m512 right, __m512 inv_width, int64_t num_intervals, __m512* w) {
  const __m512 position = _mm512_mul_ps(_mm512_sub_ps(x, left), inv_width);
  __m512 interval = _mm512_roundscale_ps(position, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  // max_ps returns its second operand when one is NaN: a NaN x lands in interval 0.
  interval = _mm512_max_ps(interval, _mm512_setzero_ps());
  interval = _mm512_min_ps(interval, _mm512_set1_ps(static_cast<float>(num_intervals - 1)));
  __m512 bin = _mm512_add_ps(interval, _mm512_set1_ps(1.0f));
  *w = _mm512_sub_ps(position, interval);
  const __mmask16 is_left = _mm512_cmp_ps_mask(x, left, _CMP_LT_OQ);
  const __mmask16 is_right = _mm512_cmp_ps_mask(x, right, _CMP_GE_OQ);
  bin = _mm512_mask_mov_ps(bin, is_left, _mm512_setzero_ps());
  *w = _mm512_mask_sub_ps(*w, is_left, x, left);
  bin = _mm512_mask_mov_ps(bin, is_right, _mm512_set1_ps(static_cast<float>(num_intervals + 1)));
  *w = _mm512_mask_sub_ps(*w, is_right, x, right);
  return bin;
}

__attribute__((target("avx512f"))) inline __m512 bins_avx512(
    __m512 x, const Unit<float>& unit, __m512* w) {
  return bins_avx512(x, _mm512_set1_ps(unit.left_bound), _mm512_set1_ps(unit.right_bound),
                     _mm512_set1_ps(unit.inv_width), unit.num_intervals, w);
}

// Table lookups: with at most 32 bins the table lives in two registers and a permute replaces
// the (slower) gather from memory.
struct TableAvx512 {
  bool in_registers;
  __m512 low, high;
  const float* memory;
};

__attribute__((target("avx512f"))) inline TableAvx512 load_table_avx512(
    const float* table, int64_t bins) {
  TableAvx512 t{bins <= 32, _mm512_setzero_ps(), _mm512_setzero_ps(), table};
  if (t.in_registers) {
    t.low = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << std::min<int64_t>(bins, 16)) - 1),
                                  table);
    if (bins > 16) {
      t.high = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << (bins - 16)) - 1), table + 16);
    }
  }
  return t;
}

__attribute__((target("avx512f"))) inline __m512 lookup_avx512(const TableAvx512& t, __m512i bin) {
  if (t.in_registers) return _mm512_permutex2var_ps(t.low, bin, t.high);
  return _mm512_i32gather_ps(bin, t.memory, 4);
}

// The upper 8 floats of a vector.
__attribute__((target("avx512f"))) inline __m256 upper_half_avx512(__m512 v) {
  return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

// The first `lanes` (0..16) lanes.
__attribute__((target("avx512f"))) inline __mmask16 first_lanes(int64_t lanes) {
  return static_cast<__mmask16>((1u << lanes) - 1);
}

__attribute__((target("avx512f"))) inline __m512 forward_vector_avx512(
    __m512 x, const Unit<float>& unit, const TableAvx512& slopes, const TableAvx512& intercepts) {
  __m512 w;
  const __m512i bin = _mm512_cvttps_epi32(bins_avx512(x, unit, &w));
  return _mm512_fmadd_ps(lookup_avx512(slopes, bin), x, lookup_avx512(intercepts, bin));
}

__attribute__((target("avx512f"))) void forward_avx512(
    const float* x, float* y, int64_t n, const Unit<float>& unit) {
  const TableAvx512 slopes = load_table_avx512(unit.slope, unit.num_intervals + 2);
  const TableAvx512 intercepts = load_table_avx512(unit.intercept, unit.num_intervals + 2);
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    const __m512 vx = _mm512_loadu_ps(x + k);
    _mm512_storeu_ps(y + k, forward_vector_avx512(vx, unit, slopes, intercepts));
  }
  if (k < n) {  // the tail, masked: the lanes past n read 0 (a valid bin) and store nothing
    const __mmask16 tail = first_lanes(n - k);
    const __m512 vx = _mm512_maskz_loadu_ps(tail, x + k);
    _mm512_mask_storeu_ps(y + k, tail, forward_vector_avx512(vx, unit, slopes, intercepts));
  }
}

// Interleaved units: up to 16 consecutive channels per vector, stopping where a row of
// channels ends; bounds come from the arrays, (slope, intercept) pairs by gather.
__attribute__((target("avx512f"))) void forward_interleaved_avx512(
    const float* x, float* y, int64_t n, int64_t first_unit, const UnitArrays<float>& all) {
  const int32_t bins = static_cast<int32_t>(all.num_intervals + 2);
  const __m512i lane_offsets = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
      _mm512_set1_epi32(bins));
  const __m512i even =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  int64_t u = first_unit % all.num_units;
  for (int64_t k = 0; k < n;) {
    const int64_t lanes = std::min<int64_t>({16, n - k, all.num_units - u});
    const __mmask16 mask = first_lanes(lanes);
    const __m512 vx = _mm512_maskz_loadu_ps(mask, x + k);
    __m512 w;
    const __m512 bin = bins_avx512(vx, _mm512_maskz_loadu_ps(mask, all.left_bound + u),
                                   _mm512_maskz_loadu_ps(mask, all.right_bound + u),
                                   _mm512_maskz_loadu_ps(mask, all.inv_width + u),
                                   all.num_intervals, &w);
    const __m512i index = _mm512_add_epi32(
        _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(u) * bins), lane_offsets),
        _mm512_cvttps_epi32(bin));
    // Masked gathers of (slope, intercept) pairs, 8 lanes each: lanes past the last channel
    // must not read past the tables.
    const __m512 low = _mm512_castpd_ps(_mm512_mask_i32gather_pd(
        _mm512_setzero_pd(), static_cast<__mmask8>(mask), _mm512_castsi512_si256(index),
        all.pairs, 8));
    const __m512 high = _mm512_castpd_ps(_mm512_mask_i32gather_pd(
        _mm512_setzero_pd(), static_cast<__mmask8>(mask >> 8),
        _mm512_extracti64x4_epi64(index, 1), all.pairs, 8));
    const __m512 slope = _mm512_permutex2var_ps(low, even, high);
    const __m512 intercept = _mm512_permutex2var_ps(low, odd, high);
    _mm512_mask_storeu_ps(y + k, mask, _mm512_fmadd_ps(slope, vx, intercept));
    k += lanes;
    u += lanes;
    if (u == all.num_units) u = 0;
  }
}

// Stores the 16 pairs (g[l], gw[l]) in double, in element order, at pairs[0 .. 32) (any
// alignment).
__attribute__((target("avx512f"))) inline void stage_pairs_avx512(__m512 g, __m512 gw,
                                                                   double* pairs) {
  const __m512i first_pairs =
      _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i last_pairs = _mm512_add_epi32(first_pairs, _mm512_set1_epi32(8));
  const __m512 first = _mm512_permutex2var_ps(g, first_pairs, gw);  // g0 gw0 .. g7 gw7
  const __m512 last = _mm512_permutex2var_ps(g, last_pairs, gw);    // g8 gw8 .. g15 gw15
  _mm512_storeu_pd(pairs, _mm512_cvtps_pd(_mm512_castps512_ps256(first)));
  _mm512_storeu_pd(pairs + 8, _mm512_cvtps_pd(upper_half_avx512(first)));
  _mm512_storeu_pd(pairs + 16, _mm512_cvtps_pd(_mm512_castps512_ps256(last)));
  _mm512_storeu_pd(pairs + 24, _mm512_cvtps_pd(upper_half_avx512(last)));
}

// One vector of backward_interleaved_staged: `lanes` (<= 16) channels u.. of one row.
__attribute__((target("avx512f"))) void stage_interleaved_avx512(
    const float* x, const float* g, float* gx, int64_t lanes, int64_t u,
    const UnitArrays<float>& all, int32_t* index, double* pairs) {
  const __mmask16 mask = first_lanes(lanes);
  const int32_t num_bins = static_cast<int32_t>(all.num_intervals + 2);
  const __m512 vx = _mm512_maskz_loadu_ps(mask, x);
  const __m512 vg = _mm512_maskz_loadu_ps(mask, g);
  __m512 w;
  const __m512i bin = _mm512_cvttps_epi32(bins_avx512(
      vx, _mm512_maskz_loadu_ps(mask, all.left_bound + u),
      _mm512_maskz_loadu_ps(mask, all.right_bound + u),
      _mm512_maskz_loadu_ps(mask, all.inv_width + u), all.num_intervals, &w));
  // The slope of (unit, bin) is pairs[2 * (unit * num_bins + bin)].
  const __m512i unit_offsets = _mm512_mullo_epi32(
      _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(u)),
                       _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)),
      _mm512_set1_epi32(num_bins));
  const __m512i pair = _mm512_add_epi32(unit_offsets, bin);
  const __m512 slope = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask,
                                                _mm512_slli_epi32(pair, 1), all.pairs, 4);
  _mm512_mask_storeu_ps(gx, mask, _mm512_mul_ps(vg, slope));
  _mm512_storeu_si512(index, pair);
  stage_pairs_avx512(vg, _mm512_mul_ps(vg, w), pairs);
}

// A short run (n < kLongRun): gx, and each element's bin and (g, g * w) pair staged for
// ShortRuns. The lanes past n read 0 (a valid bin) and write no gx.
__attribute__((target("avx512f"))) void stage_short_avx512(
    const float* x, const float* g, float* gx, int64_t n, const Unit<float>& unit,
    int32_t* bins, double* pairs) {
  const TableAvx512 slopes = load_table_avx512(unit.slope, unit.num_intervals + 2);
  for (int64_t k = 0; k < n; k += 16) {
    const __mmask16 lanes = first_lanes(std::min<int64_t>(16, n - k));
    const __m512 vx = _mm512_maskz_loadu_ps(lanes, x + k);
    const __m512 vg = _mm512_maskz_loadu_ps(lanes, g + k);
    __m512 w;
    const __m512i bin = _mm512_cvttps_epi32(bins_avx512(vx, unit, &w));
    _mm512_mask_storeu_ps(gx + k, lanes, _mm512_mul_ps(vg, lookup_avx512(slopes, bin)));
    _mm512_store_si512(bins + k, bin);
    stage_pairs_avx512(vg, _mm512_mul_ps(vg, w), pairs + 2 * k);
  }
}

__attribute__((target("avx512f"))) void backward_avx512(
    const float* x, const float* g, float* gx, int64_t n, const Unit<float>& unit,
    BinSums sums) {
  const int64_t bins = unit.num_intervals + 2;
  if (n < kLongRun || !SplitSums::offsets_fit(bins)) {
    return backward_scalar(x, g, gx, n, unit, sums);
  }
  const TableAvx512 slopes = load_table_avx512(unit.slope, bins);
  SplitSums split(bins);
  // Byte offset of lane l's copy (l % kCopies).
  const __m512i lane_copy = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3),
      _mm512_set1_epi32(split.copy_stride()));
  const int64_t full = n / 16 * 16;
  for (int64_t start = 0; start < full; start += SplitSums::kStage) {
    const int64_t count = std::min(SplitSums::kStage, full - start);
    for (int64_t v = 0; v < count; v += 16) {
      const __m512 vx = _mm512_loadu_ps(x + start + v);
      const __m512 vg = _mm512_loadu_ps(g + start + v);
      __m512 w;
      const __m512i bin = _mm512_cvttps_epi32(bins_avx512(vx, unit, &w));
      _mm512_storeu_ps(gx + start + v, _mm512_mul_ps(vg, lookup_avx512(slopes, bin)));
      _mm512_store_si512(split.offsets() + v,
                         _mm512_add_epi32(_mm512_slli_epi32(bin, 4), lane_copy));
      stage_pairs_avx512(vg, _mm512_mul_ps(vg, w), split.pairs() + 2 * v);
    }
    split.add_staged(count);
  }
  split.flush(sums);
  backward_scalar(x + full, g + full, gx + full, n - full, unit, sums);
}

// ---------------------------------------------------------------------------------------
// AVX2 (8 floats per vector).

// bin_of for 8 elements, each lane with its own bounds (as floats).
__attribute__((target("avx2,fma"))) inline __m256 bins_avx2(
    __m256 x, __m256 left, __m256 right, __m256 inv_width, int64_t num_intervals, __m256* w) {
  const __m256 position = _mm256_mul_ps(_mm256_sub_ps(x, left), inv_width);
  __m256 interval = _mm256_floor_ps(position);
  interval = _mm256_max_ps(interval, _mm256_setzero_ps());  // NaN -> 0, as above
  interval = _mm256_min_ps(interval, _mm256_set1_ps(static_cast<float>(num_intervals - 1)));
  __m256 bin = _mm256_add_ps(interval, _mm256_set1_ps(1.0f));
  *w = _mm256_sub_ps(position, interval);
  const __m256 is_left = _mm256_cmp_ps(x, left, _CMP_LT_OQ);
  const __m256 is_right = _mm256_cmp_ps(x, right, _CMP_GE_OQ);
  bin = _mm256_blendv_ps(bin, _mm256_setzero_ps(), is_left);
  *w = _mm256_blendv_ps(*w, _mm256_sub_ps(x, left), is_left);
  bin = _mm256_blendv_ps(bin, _mm256_set1_ps(static_cast<float>(num_intervals + 1)), is_right);
  *w = _mm256_blendv_ps(*w, _mm256_sub_ps(x, right), is_right);
  return bin;
}

__attribute__((target("avx2,fma"))) inline __m256 bins_avx2(
    __m256 x, const Unit<float>& unit, __m256* w) {
  return bins_avx2(x, _mm256_set1_ps(unit.left_bound), _mm256_set1_ps(unit.right_bound),
                   _mm256_set1_ps(unit.inv_width), unit.num_intervals, w);
}

// All ones in the first `lanes` (0..8) lanes, for maskload / maskstore.
__attribute__((target("avx2,fma"))) inline __m256i first_lanes_avx2(int64_t lanes) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(lanes)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

__attribute__((target("avx2,fma"))) inline __m256 forward_vector_avx2(
    __m256 x, const Unit<float>& unit) {
  __m256 w;
  const __m256i bin = _mm256_cvttps_epi32(bins_avx2(x, unit, &w));
  const __m256 slope = _mm256_i32gather_ps(unit.slope, bin, 4);
  const __m256 intercept = _mm256_i32gather_ps(unit.intercept, bin, 4);
  return _mm256_fmadd_ps(slope, x, intercept);
}

__attribute__((target("avx2,fma"))) void forward_avx2(
    const float* x, float* y, int64_t n, const Unit<float>& unit) {
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    _mm256_storeu_ps(y + k, forward_vector_avx2(_mm256_loadu_ps(x + k), unit));
  }
  if (k < n) {  // the tail, masked as in forward_avx512
    const __m256i tail = first_lanes_avx2(n - k);
    const __m256 vx = _mm256_maskload_ps(x + k, tail);
    _mm256_maskstore_ps(y + k, tail, forward_vector_avx2(vx, unit));
  }
}

// As forward_interleaved_avx512, 8 channels per vector.
__attribute__((target("avx2,fma"))) void forward_interleaved_avx2(
    const float* x, float* y, int64_t n, int64_t first_unit, const UnitArrays<float>& all) {
  const int32_t bins = static_cast<int32_t>(all.num_intervals + 2);
  const __m256i lane_offsets = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                  _mm256_set1_epi32(bins));
  int64_t u = first_unit % all.num_units;
  for (int64_t k = 0; k < n;) {
    const int64_t lanes = std::min<int64_t>({8, n - k, all.num_units - u});
    const __m256i mask = first_lanes_avx2(lanes);
    const __m256 vx = _mm256_maskload_ps(x + k, mask);
    __m256 w;
    const __m256 bin = bins_avx2(vx, _mm256_maskload_ps(all.left_bound + u, mask),
                                 _mm256_maskload_ps(all.right_bound + u, mask),
                                 _mm256_maskload_ps(all.inv_width + u, mask), all.num_intervals,
                                 &w);
    const __m256i index = _mm256_add_epi32(
        _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(u) * bins), lane_offsets),
        _mm256_cvttps_epi32(bin));
    // (slope, intercept) pairs of lanes 0-3 and 4-7, then slopes and intercepts apart.
    const __m256 low = _mm256_castpd_ps(_mm256_mask_i32gather_pd(
        _mm256_setzero_pd(), reinterpret_cast<const double*>(all.pairs),
        _mm256_castsi256_si128(index),
        _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(mask))), 8));
    const __m256 high = _mm256_castpd_ps(_mm256_mask_i32gather_pd(
        _mm256_setzero_pd(), reinterpret_cast<const double*>(all.pairs),
        _mm256_extracti128_si256(index, 1),
        _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(mask, 1))), 8));
    const __m256 slope = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(low, high, _MM_SHUFFLE(2, 0, 2, 0))),
        _MM_SHUFFLE(3, 1, 2, 0)));
    const __m256 intercept = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(low, high, _MM_SHUFFLE(3, 1, 3, 1))),
        _MM_SHUFFLE(3, 1, 2, 0)));
    _mm256_maskstore_ps(y + k, mask, _mm256_fmadd_ps(slope, vx, intercept));
    k += lanes;
    u += lanes;
    if (u == all.num_units) u = 0;
  }
}

// Stores the 8 pairs (g[l], gw[l]) in double, in element order, at pairs[0 .. 16) (any
// alignment).
__attribute__((target("avx2,fma"))) inline void stage_pairs_avx2(__m256 g, __m256 gw,
                                                                 double* pairs) {
  const __m256 low = _mm256_unpacklo_ps(g, gw);   // g0 gw0 g1 gw1 | g4 gw4 g5 gw5
  const __m256 high = _mm256_unpackhi_ps(g, gw);  // g2 gw2 g3 gw3 | g6 gw6 g7 gw7
  _mm256_storeu_pd(pairs, _mm256_cvtps_pd(_mm256_castps256_ps128(low)));
  _mm256_storeu_pd(pairs + 4, _mm256_cvtps_pd(_mm256_castps256_ps128(high)));
  _mm256_storeu_pd(pairs + 8, _mm256_cvtps_pd(_mm256_extractf128_ps(low, 1)));
  _mm256_storeu_pd(pairs + 12, _mm256_cvtps_pd(_mm256_extractf128_ps(high, 1)));
}

// As stage_interleaved_avx512, up to 8 channels.
__attribute__((target("avx2,fma"))) void stage_interleaved_avx2(
    const float* x, const float* g, float* gx, int64_t lanes, int64_t u,
    const UnitArrays<float>& all, int32_t* index, double* pairs) {
  const __m256i mask = first_lanes_avx2(lanes);
  const int32_t num_bins = static_cast<int32_t>(all.num_intervals + 2);
  const __m256 vx = _mm256_maskload_ps(x, mask);
  const __m256 vg = _mm256_maskload_ps(g, mask);
  __m256 w;
  const __m256i bin = _mm256_cvttps_epi32(bins_avx2(
      vx, _mm256_maskload_ps(all.left_bound + u, mask),
      _mm256_maskload_ps(all.right_bound + u, mask), _mm256_maskload_ps(all.inv_width + u, mask),
      all.num_intervals, &w));
  const __m256i unit_offsets = _mm256_mullo_epi32(
      _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(u)),
                       _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)),
      _mm256_set1_epi32(num_bins));
  const __m256i pair = _mm256_add_epi32(unit_offsets, bin);
  const __m256 slope = _mm256_mask_i32gather_ps(
      _mm256_setzero_ps(), all.pairs, _mm256_slli_epi32(pair, 1), _mm256_castsi256_ps(mask), 4);
  _mm256_maskstore_ps(gx, mask, _mm256_mul_ps(vg, slope));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(index), pair);
  stage_pairs_avx2(vg, _mm256_mul_ps(vg, w), pairs);
}

// As stage_short_avx512, 8 elements per vector.
__attribute__((target("avx2,fma"))) void stage_short_avx2(
    const float* x, const float* g, float* gx, int64_t n, const Unit<float>& unit,
    int32_t* bins, double* pairs) {
  for (int64_t k = 0; k < n; k += 8) {
    const __m256i lanes = first_lanes_avx2(std::min<int64_t>(8, n - k));
    const __m256 vx = _mm256_maskload_ps(x + k, lanes);
    const __m256 vg = _mm256_maskload_ps(g + k, lanes);
    __m256 w;
    const __m256i bin = _mm256_cvttps_epi32(bins_avx2(vx, unit, &w));
    const __m256 slope = _mm256_i32gather_ps(unit.slope, bin, 4);
    _mm256_maskstore_ps(gx + k, lanes, _mm256_mul_ps(vg, slope));
    _mm256_store_si256(reinterpret_cast<__m256i*>(bins + k), bin);
    stage_pairs_avx2(vg, _mm256_mul_ps(vg, w), pairs + 2 * k);
  }
}

__attribute__((target("avx2,fma"))) void backward_avx2(
    const float* x, const float* g, float* gx, int64_t n, const Unit<float>& unit,
    BinSums sums) {
  const int64_t bins = unit.num_intervals + 2;
  if (n < kLongRun || !SplitSums::offsets_fit(bins)) {
    return backward_scalar(x, g, gx, n, unit, sums);
  }
  SplitSums split(bins);
  const __m256i lane_copy = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3),
                                               _mm256_set1_epi32(split.copy_stride()));
  const int64_t full = n / 8 * 8;
  for (int64_t start = 0; start < full; start += SplitSums::kStage) {
    const int64_t count = std::min(SplitSums::kStage, full - start);
    for (int64_t v = 0; v < count; v += 8) {
      const __m256 vx = _mm256_loadu_ps(x + start + v);
      const __m256 vg = _mm256_loadu_ps(g + start + v);
      __m256 w;
      const __m256i bin = _mm256_cvttps_epi32(bins_avx2(vx, unit, &w));
      const __m256 slope = _mm256_i32gather_ps(unit.slope, bin, 4);
      _mm256_storeu_ps(gx + start + v, _mm256_mul_ps(vg, slope));
      _mm256_store_si256(reinterpret_cast<__m256i*>(split.offsets() + v),
                         _mm256_add_epi32(_mm256_slli_epi32(bin, 4), lane_copy));
      stage_pairs_avx2(vg, _mm256_mul_ps(vg, w), split.pairs() + 2 * v);
    }
    split.add_staged(count);
  }
  split.flush(sums);
  backward_scalar(x + full, g + full, gx + full, n - full, unit, sums);
}

// ---------------------------------------------------------------------------------------
// Run-time selection.

enum class Isa { kScalar, kAvx2, kAvx512 };  // ordered: a larger value needs more of the CPU

constexpr Isa kAllIsas[] = {Isa::kAvx512, Isa::kAvx2, Isa::kScalar};  // best first
constexpr const char* kCapabilityVariable = "PWLU_DET_CPU_CAPABILITY";

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "scalar";
  }
}

bool parse_isa(const std::string& name, Isa* isa) {
  for (Isa candidate : kAllIsas) {
    if (name == isa_name(candidate)) {
      *isa = candidate;
      return true;
    }
  }
  return false;
}

bool hardware_supports(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f");
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default:
      return true;
  }
}

std::string hardware_isas() {
  std::string names;
  for (Isa isa : kAllIsas) {
    if (!hardware_supports(isa)) continue;
    names += (names.empty() ? "" : ", ") + std::string(isa_name(isa));
  }
  return names;
}

// The cap set by PWLU_DET_CPU_CAPABILITY (as ATEN_CPU_CAPABILITY does for ATen): the best ISA
// the dispatch may choose. Unset or empty: no cap. An unknown value, or one this CPU lacks,
// throws on every use, so a mistyped variable is never silently ignored.
Isa read_isa_cap() {
  const char* value = std::getenv(kCapabilityVariable);
  if (value == nullptr || *value == '\0') return Isa::kAvx512;
  Isa isa;
  if (!parse_isa(value, &isa)) {
    throw std::invalid_argument(std::string("pwlu_det: ") + kCapabilityVariable + "='" + value +
                                "' is not a CPU capability; use avx512, avx2 or scalar, or unset it");
  }
  if (!hardware_supports(isa)) {
    throw std::invalid_argument(std::string("pwlu_det: ") + kCapabilityVariable + "=" + value +
                                ", but this CPU does not support " + value + " (it has: " +
                                hardware_isas() + ")");
  }
  return isa;
}

Isa isa_cap() {
  static const Isa cap = read_isa_cap();
  return cap;
}

// Why the dispatch may not use `isa` here; empty when it may.
std::string unusable_reason(Isa isa) {
  if (!hardware_supports(isa)) {
    return std::string("this CPU does not support ") + isa_name(isa) + " (it has: " +
           hardware_isas() + ")";
  }
  if (isa > isa_cap()) {
    return std::string(kCapabilityVariable) + "=" + isa_name(isa_cap()) + " caps it below " +
           isa_name(isa);
  }
  return "";
}

Isa best_isa() {
  for (Isa isa : kAllIsas) {
    if (unusable_reason(isa).empty()) return isa;
  }
  return Isa::kScalar;
}

Isa& active_isa() {
  static Isa isa = best_isa();
  return isa;
}

}  // namespace

template <>
void forward_run<float>(const float* x, float* y, int64_t n, const Unit<float>& unit) {
  switch (active_isa()) {
    case Isa::kAvx512:
      return forward_avx512(x, y, n, unit);
    case Isa::kAvx2:
      return forward_avx2(x, y, n, unit);
    default:
      return forward_scalar(x, y, n, unit);
  }
}

template <>
void forward_run<double>(const double* x, double* y, int64_t n, const Unit<double>& unit) {
  forward_scalar(x, y, n, unit);
}

template <>
void backward_runs<float>(const float* x, const float* g, float* gx,
                          const std::vector<RunSlice<float>>& slices) {
  switch (active_isa()) {
    case Isa::kAvx512:
      return backward_slices(x, g, gx, slices, backward_avx512, stage_short_avx512);
    case Isa::kAvx2:
      return backward_slices(x, g, gx, slices, backward_avx2, stage_short_avx2);
    default:
      return backward_slices_scalar(x, g, gx, slices);
  }
}

template <>
void backward_runs<double>(const double* x, const double* g, double* gx,
                           const std::vector<RunSlice<double>>& slices) {
  backward_slices_scalar(x, g, gx, slices);
}

template <>
void forward_interleaved<float>(const float* x, float* y, int64_t n, int64_t first_unit,
                                const UnitArrays<float>& all) {
  switch (active_isa()) {
    case Isa::kAvx512:
      return forward_interleaved_avx512(x, y, n, first_unit, all);
    case Isa::kAvx2:
      return forward_interleaved_avx2(x, y, n, first_unit, all);
    default:
      return forward_interleaved_scalar(x, y, n, first_unit, all);
  }
}

template <>
void forward_interleaved<double>(const double* x, double* y, int64_t n, int64_t first_unit,
                                 const UnitArrays<double>& all) {
  forward_interleaved_scalar(x, y, n, first_unit, all);
}

// The definition the staged vector loops reproduce (also the scalar ISA's and float64's loop).
template <typename T>
void backward_interleaved_scalar(const T* x, const T* g, T* gx, int64_t n, int64_t first_unit,
                                 const UnitArrays<T>& all, double* sums) {
  const int64_t bins = all.num_intervals + 2;
  int64_t unit = first_unit % all.num_units;
  for (int64_t k = 0; k < n; ++k) {
    T w;
    const Unit<T>& u = all.units[unit];
    const int64_t bin = bin_of(x[k], u, &w);
    gx[k] = g[k] * u.slope[bin];
    double* sum = sums + 2 * (unit * bins + bin);
    sum[0] += static_cast<double>(g[k]);
    sum[1] += static_cast<double>(g[k] * w);
    if (++unit == all.num_units) unit = 0;
  }
}

template <>
void backward_interleaved<float>(const float* x, const float* g, float* gx, int64_t n,
                                 int64_t first_unit, const UnitArrays<float>& all,
                                 double* sums) {
  switch (active_isa()) {
    case Isa::kAvx512:
      return backward_interleaved_staged<16>(x, g, gx, n, first_unit, all, sums,
                                             stage_interleaved_avx512);
    case Isa::kAvx2:
      return backward_interleaved_staged<8>(x, g, gx, n, first_unit, all, sums,
                                            stage_interleaved_avx2);
    default:
      return backward_interleaved_scalar(x, g, gx, n, first_unit, all, sums);
  }
}

template <>
void backward_interleaved<double>(const double* x, const double* g, double* gx, int64_t n,
                                  int64_t first_unit, const UnitArrays<double>& all,
                                  double* sums) {
  backward_interleaved_scalar(x, g, gx, n, first_unit, all, sums);
}

std::string cpu_capability() { return isa_name(active_isa()); }

std::vector<std::string> cpu_capabilities() {
  std::vector<std::string> names;
  for (Isa isa : kAllIsas) {
    if (unusable_reason(isa).empty()) names.emplace_back(isa_name(isa));
  }
  return names;
}

void set_cpu_capability(const std::string& name) {
  Isa isa;
  if (name == "best") {
    isa = best_isa();
  } else if (!parse_isa(name, &isa)) {
    throw std::invalid_argument(
        "pwlu_det: unknown CPU capability '" + name + "' (avx512, avx2, scalar or best)");
  }
  const std::string reason = unusable_reason(isa);
  if (!reason.empty()) {
    throw std::invalid_argument("pwlu_det: cannot use " + name + ": " + reason);
  }
  active_isa() = isa;
}

}  // namespace kernels
}  // namespace pwlu_det
