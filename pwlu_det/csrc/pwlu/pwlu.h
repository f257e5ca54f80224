// PWLU CPU operators (registered as torch.ops.pwlu_det.pwlu_forward / pwlu_backward).
//
// Parameters come in the canonical form: left_bound, right_bound, left_slope, right_slope of
// shape (P,) and heights of shape (P, N + 1), with P == 1 (layer-wise) or P == C ==
// x.size(channel_dim) (channel-wise). Compute type: float64 for float64 inputs, else float32.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace pwlu_det {

at::Tensor pwlu_forward_cpu(
    const at::Tensor& x, const at::Tensor& left_bound, const at::Tensor& right_bound,
    const at::Tensor& heights, const at::Tensor& left_slope, const at::Tensor& right_slope,
    int64_t channel_dim);

// Returns (grad_x, grad_left_bound, grad_right_bound, grad_heights, grad_left_slope,
// grad_right_slope); one pass over x and grad_y.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
pwlu_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& left_bound,
    const at::Tensor& right_bound, const at::Tensor& heights, const at::Tensor& left_slope,
    const at::Tensor& right_slope, int64_t channel_dim);

}  // namespace pwlu_det
