// Registers the CPU kernels of pwlu_det's operators (their schemas, fake implementations and
// autograd are defined once, in pwlu_det/layers/pwlu_op.py) and the instruction-set switch, and
// makes the shared library importable as the Python module pwlu_det._C.
#include <torch/extension.h>
#include <torch/library.h>

#include "pwlu/pwlu.h"
#include "pwlu/pwlu_kernels.h"

TORCH_LIBRARY_FRAGMENT(pwlu_det, m) {
  m.def("cpu_capability() -> str", &pwlu_det::kernels::cpu_capability);
  m.def("cpu_capabilities() -> str[]", &pwlu_det::kernels::cpu_capabilities);
  m.def("set_cpu_capability(str name) -> ()", &pwlu_det::kernels::set_cpu_capability);
}

TORCH_LIBRARY_IMPL(pwlu_det, CPU, m) {
  m.impl("pwlu_forward", &pwlu_det::pwlu_forward_cpu);
  m.impl("pwlu_backward", &pwlu_det::pwlu_backward_cpu);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pwlu_det C++ operators; use them through torch.ops.pwlu_det";
}
