// The autograd kernel of pwlu_det::pwlu_forward for CPU tensors, in C++.
//
// pwlu_det/layers/pwlu_op.py registers the op's autograd formula in Python (register_autograd),
// for every device. That formula runs Python twice per call (setting up the context in the
// forward, calling the backward op in the backward), which costs more than the fused kernel on
// the small maps of a detector's heads. This kernel is the same formula: save x and the five
// parameters, and let the backward call pwlu_det::pwlu_backward. It is registered for the
// AutogradCPU key, which the dispatcher prefers to the Autograd alias the Python formula holds,
// so CPU tensors take it and other devices keep the Python one.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

namespace pwlu_det {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor call_forward(
    const at::Tensor& x, const at::Tensor& left_bound, const at::Tensor& right_bound,
    const at::Tensor& heights, const at::Tensor& left_slope, const at::Tensor& right_slope,
    int64_t channel_dim) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pwlu_det::pwlu_forward", "")
                       .typed<at::Tensor(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t)>();
  return op.call(x, left_bound, right_bound, heights, left_slope, right_slope, channel_dim);
}

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Grads call_backward(const at::Tensor& grad_y, const variable_list& saved, int64_t channel_dim) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pwlu_det::pwlu_backward", "")
                       .typed<Grads(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, int64_t)>();
  return op.call(grad_y, saved[0], saved[1], saved[2], saved[3], saved[4], saved[5], channel_dim);
}

class PWLUFunction : public torch::autograd::Function<PWLUFunction> {
 public:
  static at::Tensor forward(
      AutogradContext* ctx, const at::Tensor& x, const at::Tensor& left_bound,
      const at::Tensor& right_bound, const at::Tensor& heights, const at::Tensor& left_slope,
      const at::Tensor& right_slope, int64_t channel_dim) {
    ctx->save_for_backward({x, left_bound, right_bound, heights, left_slope, right_slope});
    ctx->saved_data["channel_dim"] = channel_dim;
    at::AutoDispatchBelowADInplaceOrView guard;  // on to the CPU kernel
    return call_forward(x, left_bound, right_bound, heights, left_slope, right_slope, channel_dim);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto grads = call_backward(
        grad_outputs[0], ctx->get_saved_variables(), ctx->saved_data["channel_dim"].toInt());
    return {std::get<0>(grads), std::get<1>(grads), std::get<2>(grads), std::get<3>(grads),
            std::get<4>(grads), std::get<5>(grads), at::Tensor()};
  }
};

at::Tensor pwlu_forward_autograd(
    const at::Tensor& x, const at::Tensor& left_bound, const at::Tensor& right_bound,
    const at::Tensor& heights, const at::Tensor& left_slope, const at::Tensor& right_slope,
    int64_t channel_dim) {
  return PWLUFunction::apply(
      x, left_bound, right_bound, heights, left_slope, right_slope, channel_dim);
}

}  // namespace

TORCH_LIBRARY_IMPL(pwlu_det, AutogradCPU, m) {
  m.impl("pwlu_forward", &pwlu_forward_autograd);
}

}  // namespace pwlu_det
