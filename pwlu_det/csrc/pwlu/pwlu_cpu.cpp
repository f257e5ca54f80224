// PWLU on CPU tensors: argument checks, memory layout, threading and the closed-form
// parameter gradients. The per-element loops live in pwlu_kernels.cpp.
//
// Layout: x is used in its own memory order when it is dense and non-overlapping
// (contiguous, channels_last, any permutation); other views are copied to contiguous first.
// In a dense tensor, the element at memory offset o belongs to channel (o / inner) % C with
// inner = x.stride(channel_dim), so memory splits into runs of `inner` elements of one unit.
#include "pwlu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "pwlu_kernels.h"

namespace pwlu_det {
namespace {

constexpr int64_t kGrainSize = 1 << 15;  // elements per chunk at the least

at::ScalarType compute_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void check_inputs(
    const at::Tensor& x, const at::Tensor& left_bound, const at::Tensor& right_bound,
    const at::Tensor& heights, const at::Tensor& left_slope, const at::Tensor& right_slope,
    int64_t channel_dim) {
  TORCH_CHECK(x.device().is_cpu(), "pwlu_forward (cpp): x must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.is_floating_point(), "pwlu_forward (cpp): x must be floating point, got ",
              x.scalar_type());
  TORCH_CHECK(heights.dim() == 2 && heights.size(1) >= 2,
              "pwlu_forward (cpp): heights must be (P, N + 1) with N >= 1, got ", heights.sizes());
  const int64_t units = heights.size(0);
  const at::Tensor* vectors[] = {&left_bound, &right_bound, &left_slope, &right_slope};
  const char* names[] = {"left_bound", "right_bound", "left_slope", "right_slope"};
  for (int k = 0; k < 4; ++k) {
    TORCH_CHECK(vectors[k]->dim() == 1 && vectors[k]->size(0) == units, "pwlu_forward (cpp): ",
                names[k], " must have shape (", units, ",), got ", vectors[k]->sizes());
    TORCH_CHECK(vectors[k]->device().is_cpu() && vectors[k]->is_floating_point(),
                "pwlu_forward (cpp): ", names[k], " must be a floating-point CPU tensor");
  }
  TORCH_CHECK(heights.device().is_cpu() && heights.is_floating_point(),
              "pwlu_forward (cpp): heights must be a floating-point CPU tensor");
  if (units > 1) {
    TORCH_CHECK(channel_dim >= 0 && channel_dim < x.dim(), "pwlu_forward (cpp): channel_dim ",
                channel_dim, " is out of range for x of shape ", x.sizes());
    TORCH_CHECK(x.size(channel_dim) == units, "pwlu_forward (cpp): ", units,
                " parameter sets for ", x.size(channel_dim), " channels in dim ", channel_dim);
  }
}

// Per-unit inference tables in the compute type T (built in double precision), and for x
// with interleaved channels the same values as arrays for the vector loops (UnitArrays).
template <typename T>
struct UnitTables {
  // The parameters in double precision, bounds rounded to T as the kernels compare with them:
  // left_bound, right_bound, left_slope, right_slope (units each), then the heights (units,
  // N + 1). The closed-form parameter gradients read them.
  std::vector<double> params;
  std::vector<T> slope;      // (units, N + 2)
  std::vector<T> intercept;  // (units, N + 2)
  std::vector<kernels::Unit<T>> units;
  std::vector<T> left_bound, right_bound, inv_width;  // (units,), interleaved only
  std::vector<T> pairs;  // (units, N + 2, 2): slope and intercept side by side, interleaved only

  kernels::UnitArrays<T> arrays() const {
    return {units.data(), static_cast<int64_t>(units.size()), units[0].num_intervals,
            left_bound.data(), right_bound.data(), inv_width.data(), pairs.data()};
  }
};

// Copies the values of a parameter tensor to `out` as doubles (float and double parameters are
// read in place).
void read_doubles(const at::Tensor& t, double* out) {
  const bool direct = t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble;
  const at::Tensor c = direct ? t.contiguous() : t.to(at::kDouble).contiguous();
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "pwlu_tables", [&] {
    std::copy_n(c.const_data_ptr<scalar_t>(), c.numel(), out);
  });
}

// Builds the tables into storage of the calling thread, reused by its next call (the reference
// stays valid until then).
template <typename T>
const UnitTables<T>& make_tables(
    const at::Tensor& left_bound, const at::Tensor& right_bound, const at::Tensor& heights,
    const at::Tensor& left_slope, const at::Tensor& right_slope, bool interleaved) {
  const int64_t units = heights.size(0);
  const int64_t n = heights.size(1) - 1;
  const int64_t bins = n + 2;
  TORCH_CHECK(units * bins <= INT32_MAX, "pwlu: too many parameters (", units, " units of ",
              n, " intervals)");
  thread_local UnitTables<T> tables;
  std::vector<double>& params = tables.params;
  params.resize(units * (n + 5));
  double* bl = params.data();
  double* br = bl + units;
  double* kl = br + units;
  double* kr = kl + units;
  double* y = kr + units;
  read_doubles(left_bound, bl);
  read_doubles(right_bound, br);
  read_doubles(left_slope, kl);
  read_doubles(right_slope, kr);
  read_doubles(heights, y);
  tables.slope.resize(units * bins);
  tables.intercept.resize(units * bins);
  tables.units.resize(units);
  for (int64_t p = 0; p < units; ++p) {
    // The bounds as the compute type sees them (the reference compares against these).
    const T left = static_cast<T>(bl[p]);
    const T right = static_cast<T>(br[p]);
    bl[p] = left;  // as the kernels see them
    br[p] = right;
    TORCH_CHECK_VALUE(right > left, "pwlu: right_bound must exceed left_bound, unit ", p,
                " has left_bound=", left, ", right_bound=", right);
    const double* h = y + p * (n + 1);
    const double b_l = left, b_r = right;
    const double width = (b_r - b_l) / static_cast<double>(n);
    T* slope = tables.slope.data() + p * bins;
    T* intercept = tables.intercept.data() + p * bins;
    slope[0] = static_cast<T>(kl[p]);
    intercept[0] = static_cast<T>(h[0] - kl[p] * b_l);
    for (int32_t i = 0; i < static_cast<int32_t>(n); ++i) {  // an int32 i lets this vectorize
      const double k = (h[i + 1] - h[i]) / width;
      slope[i + 1] = static_cast<T>(k);
      intercept[i + 1] = static_cast<T>(h[i] - k * (b_l + static_cast<double>(i) * width));
    }
    slope[n + 1] = static_cast<T>(kr[p]);
    intercept[n + 1] = static_cast<T>(h[n] - kr[p] * b_r);
    tables.units[p] = kernels::Unit<T>{
        left, right, static_cast<T>(n) / (right - left), slope, intercept, n};
  }
  if (interleaved) {
    tables.left_bound.resize(units);
    tables.right_bound.resize(units);
    tables.inv_width.resize(units);
    for (int64_t p = 0; p < units; ++p) {
      tables.left_bound[p] = tables.units[p].left_bound;
      tables.right_bound[p] = tables.units[p].right_bound;
      tables.inv_width[p] = tables.units[p].inv_width;
    }
    tables.pairs.resize(2 * units * bins);
    for (int64_t e = 0; e < units * bins; ++e) {
      tables.pairs[2 * e] = tables.slope[e];
      tables.pairs[2 * e + 1] = tables.intercept[e];
    }
  }
  return tables;
}

// Memory of a dense x as runs of one unit each: calls fn(begin, end, unit) over [begin, end)
// of the chunk, in order.
struct Runs {
  int64_t inner;
  int64_t units;
  // Channels interleaved (channel stride 1): one loop over the chunk, no runs.
  bool interleaved() const { return inner == 1 && units > 1; }
  template <typename Fn>
  void for_each(int64_t begin, int64_t end, const Fn& fn) const {
    int64_t run = begin / inner, unit = run % units;
    for (int64_t o = begin; o < end; ++run) {
      const int64_t run_end = std::min(end, (run + 1) * inner);
      fn(o, run_end, unit);
      o = run_end;
      if (++unit == units) unit = 0;
    }
  }
};

Runs runs_of(const at::Tensor& x_dense, int64_t units, int64_t channel_dim) {
  if (units == 1) return Runs{std::max<int64_t>(x_dense.numel(), 1), 1};
  return Runs{std::max<int64_t>(x_dense.stride(channel_dim), 1), units};
}

at::Tensor dense(const at::Tensor& t) {
  return t.is_non_overlapping_and_dense() ? t : t.contiguous();
}

int64_t num_chunks(int64_t numel) {
  const int64_t by_size = (numel + kGrainSize - 1) / kGrainSize;
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), by_size));
}

template <typename T>
void forward_impl(const at::Tensor& x, at::Tensor& y, const UnitTables<T>& tables, Runs runs) {
  const T* xp = x.data_ptr<T>();
  T* yp = y.data_ptr<T>();
  const int64_t numel = x.numel();
  const int64_t chunks = num_chunks(numel);
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      const int64_t begin = numel * c / chunks, end = numel * (c + 1) / chunks;
      if (runs.interleaved()) {
        kernels::forward_interleaved<T>(xp + begin, yp + begin, end - begin, begin,
                                        tables.arrays());
        continue;
      }
      runs.for_each(begin, end, [&](int64_t b, int64_t e, int64_t unit) {
        kernels::forward_run<T>(xp + b, yp + b, e - b, tables.units[unit]);
      });
    }
  });
}

// Fills grad_x and `sums` with the per-bin sums, (units, 2, N + 2) in double, reduced over
// chunks in a fixed order (the result does not depend on thread scheduling).
template <typename T>
void backward_impl(const at::Tensor& g, const at::Tensor& x, at::Tensor& gx,
                   const UnitTables<T>& tables, Runs runs, int64_t bins,
                   std::vector<double>& sums) {
  const T* xp = x.data_ptr<T>();
  const T* gp = g.data_ptr<T>();
  T* gxp = gx.data_ptr<T>();
  const int64_t numel = x.numel();
  const int64_t units = runs.units;
  const int64_t per_chunk = units * 2 * bins;
  const int64_t chunks = num_chunks(numel);
  thread_local std::vector<double> partial;
  partial.assign(chunks * per_chunk, 0.0);
  double* pp = partial.data();
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      double* chunk_sums = pp + c * per_chunk;
      const int64_t begin = numel * c / chunks, end = numel * (c + 1) / chunks;
      if (runs.interleaved()) {
        // The kernel's sums are (unit, bin) pairs; copied (not added: the same bits) into the
        // chunk's (unit, sum_g bins, sum_gw bins) layout.
        thread_local std::vector<double> pair_sums;
        pair_sums.assign(per_chunk, 0.0);
        kernels::backward_interleaved<T>(xp + begin, gp + begin, gxp + begin, end - begin, begin,
                                         tables.arrays(), pair_sums.data());
        for (int64_t u = 0; u < units; ++u) {
          for (int64_t b = 0; b < bins; ++b) {
            chunk_sums[u * 2 * bins + b] = pair_sums[2 * (u * bins + b)];
            chunk_sums[u * 2 * bins + bins + b] = pair_sums[2 * (u * bins + b) + 1];
          }
        }
        continue;
      }
      thread_local std::vector<kernels::RunSlice<T>> slices;
      slices.clear();
      runs.for_each(begin, end, [&](int64_t b, int64_t e, int64_t unit) {
        double* unit_sums = chunk_sums + unit * 2 * bins;
        slices.push_back({b, e, &tables.units[unit], {unit_sums, unit_sums + bins}});
      });
      kernels::backward_runs<T>(xp, gp, gxp, slices);
    }
  });
  sums.assign(per_chunk, 0.0);
  for (int64_t c = 0; c < chunks; ++c) {
    for (int64_t k = 0; k < per_chunk; ++k) sums[k] += pp[c * per_chunk + k];
  }
}

// Closed-form parameter gradients from the per-bin sums (see docs/pwlu_math.md): in interval i,
// t = (i + u) / N, so sum(g * t) = (i * S0 + S1) / N. `params` as in UnitTables; writes
// (units) left bound, right bound, left slope and right slope gradients, then (units, N + 1)
// height gradients, into `out`.
void parameter_gradients(const std::vector<double>& params, const std::vector<double>& sums,
                         int64_t units, int64_t n, std::vector<double>& out) {
  const int64_t bins = n + 2;
  const double* bl = params.data();
  const double* br = bl + units;
  const double* kl = br + units;
  const double* kr = kl + units;
  const double* heights = kr + units;
  out.assign(units * (n + 5), 0.0);
  double* g_bl = out.data();
  double* g_br = g_bl + units;
  double* g_kl = g_br + units;
  double* g_kr = g_kl + units;
  double* g_y = g_kr + units;
  for (int64_t p = 0; p < units; ++p) {
    const double* s0 = sums.data() + p * 2 * bins;
    const double* s1 = s0 + bins;
    const double* h = heights + p * (n + 1);
    double* gy = g_y + p * (n + 1);
    const double scale = static_cast<double>(n) / (br[p] - bl[p]);
    double gl = -kl[p] * s0[0], gr = -kr[p] * s0[n + 1];
    gy[0] += s0[0];
    gy[n] += s0[n + 1];
    for (int64_t i = 0; i < n; ++i) {
      const double k = (h[i + 1] - h[i]) * scale;
      const double g_t = (static_cast<double>(i) * s0[i + 1] + s1[i + 1]) / n;
      gy[i] += s0[i + 1] - s1[i + 1];
      gy[i + 1] += s1[i + 1];
      gl -= k * (s0[i + 1] - g_t);
      gr -= k * g_t;
    }
    g_bl[p] = gl;
    g_br[p] = gr;
    g_kl[p] = s1[0];
    g_kr[p] = s1[n + 1];
  }
}

// A tensor like `like` (its dtype, `sizes`) holding values[0 .. numel).
at::Tensor tensor_of(const double* values, const at::Tensor& like, at::IntArrayRef sizes) {
  at::Tensor out = at::empty(sizes, like.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "pwlu_grad", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    for (int64_t k = 0; k < out.numel(); ++k) o[k] = static_cast<scalar_t>(values[k]);
  });
  return out;
}

}  // namespace

at::Tensor pwlu_forward_cpu(
    const at::Tensor& x, const at::Tensor& left_bound, const at::Tensor& right_bound,
    const at::Tensor& heights, const at::Tensor& left_slope, const at::Tensor& right_slope,
    int64_t channel_dim) {
  check_inputs(x, left_bound, right_bound, heights, left_slope, right_slope, channel_dim);
  if (x.numel() == 0) return at::empty_like(x);
  const auto type = compute_type(x);
  const at::Tensor xc = dense(x.to(type));
  at::Tensor y = at::empty_like(xc);
  const Runs runs = runs_of(xc, heights.size(0), channel_dim);
  AT_DISPATCH_FLOATING_TYPES(type, "pwlu_forward_cpu", [&] {
    const auto& tables =
        make_tables<scalar_t>(left_bound, right_bound, heights, left_slope, right_slope,
                              runs.interleaved());
    forward_impl<scalar_t>(xc, y, tables, runs);
  });
  return y.to(x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
pwlu_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& left_bound,
    const at::Tensor& right_bound, const at::Tensor& heights, const at::Tensor& left_slope,
    const at::Tensor& right_slope, int64_t channel_dim) {
  check_inputs(x, left_bound, right_bound, heights, left_slope, right_slope, channel_dim);
  TORCH_CHECK(grad_y.sizes() == x.sizes(), "pwlu_backward (cpp): grad_y ", grad_y.sizes(),
              " does not match x ", x.sizes());
  const int64_t units = heights.size(0);
  const int64_t n = heights.size(1) - 1;
  const int64_t bins = n + 2;
  const auto type = compute_type(x);
  const at::Tensor xc = dense(x.to(type));
  at::Tensor g = grad_y.to(type);
  if (g.strides() != xc.strides()) g = at::empty_like(xc).copy_(g);
  at::Tensor gx = at::empty_like(xc);
  // Per thread, reused: the per-bin sums and the parameter gradients, in double.
  thread_local std::vector<double> sums, grads;
  AT_DISPATCH_FLOATING_TYPES(type, "pwlu_backward_cpu", [&] {
    const Runs runs = runs_of(xc, units, channel_dim);
    const auto& tables = make_tables<scalar_t>(left_bound, right_bound, heights, left_slope,
                                               right_slope, runs.interleaved() && x.numel() > 0);
    if (x.numel() > 0) {
      backward_impl<scalar_t>(g, xc, gx, tables, runs, bins, sums);
    } else {
      sums.assign(units * 2 * bins, 0.0);
    }
    parameter_gradients(tables.params, sums, units, n, grads);
  });
  const double* out = grads.data();
  return {gx.to(x.scalar_type()),
          tensor_of(out, left_bound, left_bound.sizes()),
          tensor_of(out + units, right_bound, right_bound.sizes()),
          tensor_of(out + 4 * units, heights, heights.sizes()),
          tensor_of(out + 2 * units, left_slope, left_slope.sizes()),
          tensor_of(out + 3 * units, right_slope, right_slope.sizes())};
}

}  // namespace pwlu_det
