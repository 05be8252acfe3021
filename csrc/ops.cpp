// The dispatcher: schemas of the wgangp_fast kernel ops and their CPU registrations.
//
// These four ops are the kernel-level contract every compiled backend implements: interpolate and
// its backward, the penalty forward (output and per-group norms) and its backward, with the
// formulas of README's "The ops". The CUDA implementations live in a separate library
// (wgangp_fast/_C_cuda, csrc/cuda) that registers the CUDA dispatch key for the same schemas, so a
// machine without a CUDA toolkit still gets a working CPU build. Everything else (autograd of
// both orders, the argument checks, the backend choice) is Python (wgangp_fast/ops); the kernels
// are pure functions of their inputs.
//
// Both libraries are built on the LibTorch stable ABI (common/stable.h) and hold no Python C API:
// wgangp_fast/backends loads them with torch.ops.load_library, and loading runs the
// registrations below. One build therefore serves every torch from 2.10 on and every Python 3.
#include "common/stable.h"
#include "cpu/kernels.h"

STABLE_TORCH_LIBRARY(wgangp_fast, m) {
  // x[i] = alpha[i // (pac*D)] * real[i] + (1 - alpha[...]) * fake[i]; alpha holds M values in
  // the accumulation dtype (float32, or float64 for float64 inputs).
  m.def("interpolate_kernel(Tensor real, Tensor fake, Tensor alpha, int pac) -> Tensor");
  // Returns (d_real, d_fake, d_alpha); d_alpha is in alpha's dtype.
  m.def(
      "interpolate_backward_kernel(Tensor grad, Tensor real, Tensor fake, Tensor alpha, int pac)"
      " -> (Tensor, Tensor, Tensor)");
  // Returns (out, norms): out is 0-d for reduction 1 (mean) and 2 (sum), [M] for 0 (none);
  // norms is [M] in the accumulation dtype.
  m.def(
      "penalty_forward_kernel(Tensor grads, Tensor? weight, int pac, float target, bool one_sided,"
      " float eps, float input_scale, int reduction, float scale) -> (Tensor, Tensor)");
  // d grads for upstream gradients of out (grad_out) and, optionally, of norms (grad_norms).
  m.def(
      "penalty_backward_kernel(Tensor grad_out, Tensor? grad_norms, Tensor grads, Tensor norms,"
      " Tensor? weight, int pac, float target, bool one_sided, float input_scale, int reduction,"
      " float scale) -> Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(wgangp_fast, CPU, m) {
  m.impl("interpolate_kernel", TORCH_BOX(&wgangp_fast::cpu::interpolate));
  m.impl("interpolate_backward_kernel", TORCH_BOX(&wgangp_fast::cpu::interpolate_backward));
  m.impl("penalty_forward_kernel", TORCH_BOX(&wgangp_fast::cpu::penalty_forward));
  m.impl("penalty_backward_kernel", TORCH_BOX(&wgangp_fast::cpu::penalty_backward));
}
