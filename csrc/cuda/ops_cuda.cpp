// Host side of the CUDA backend: checks the tensors, allocates the outputs and the workspace,
// launches on the current stream of the tensors' device and registers the CUDA implementations
// of the kernel ops declared in csrc/ops.cpp. The kernels themselves (interpolate.cu, penalty.cu)
// see raw pointers only.
#include <Python.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/geometry.h"
#include "../common/penalty_math.h"
#include "kernels.cuh"

// The GPU code this module was compiled for (setup.py: e.g. sm80_sm90_ptx90), for the build test.
#ifndef WGANGP_FAST_CUDA_TARGETS
#define WGANGP_FAST_CUDA_TARGETS unknown
#endif
#define WGF_STRINGIFY_(x) #x
#define WGF_STRINGIFY(x) WGF_STRINGIFY_(x)

extern "C" {
// Importing wgangp_fast._C_cuda runs the static registrations below (after wgangp_fast._C has
// defined the schemas); the module holds only the list of compiled GPU targets.
PyObject* PyInit__C_cuda(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C_cuda", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module != nullptr &&
      PyModule_AddStringConstant(module, "cuda_targets",
                                 WGF_STRINGIFY(WGANGP_FAST_CUDA_TARGETS)) != 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}

namespace wgangp_fast {
namespace cuda {

namespace {

DType dtype_of(const at::Tensor& t, const char* name) {
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kHalf || st == at::kBFloat16 || st == at::kFloat || st == at::kDouble,
              "wgangp_fast: ", name, " must be float16, bfloat16, float32 or float64, got ", st);
  return st == at::kHalf       ? DType::kHalf
         : st == at::kBFloat16 ? DType::kBFloat16
         : st == at::kFloat    ? DType::kFloat
                               : DType::kDouble;
}

void check_cuda(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.is_cuda(), "wgangp_fast: the CUDA kernels take CUDA tensors, got ", name, " on ",
              t.device());
  TORCH_CHECK(t.device() == like.device(), "wgangp_fast: ", name, " is on ", t.device(),
              " but the other inputs are on ", like.device());
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "wgangp_fast: the CUDA ", what, " kernel failed to launch: ",
              cudaGetErrorString(err));
}

cudaStream_t current_stream(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

// A contiguous [M] tensor on `like`'s device, as a GroupVec; keeps the tensor alive in `holder`.
GroupVec group_vec(const std::optional<at::Tensor>& t, const at::Tensor& like, int64_t m,
                   const char* name, at::Tensor& holder) {
  if (!t.has_value() || !t->defined()) return GroupVec{nullptr, DType::kFloat};
  check_vector(*t, m, name);
  check_cuda(*t, like, name);
  holder = t->contiguous();
  return GroupVec{holder.const_data_ptr(), dtype_of(holder, name)};
}

void check_pair(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& alpha) {
  check_interpolate_args(real, fake, alpha);
  check_cuda(real, real, "real");
  check_cuda(fake, real, "fake");
  check_cuda(alpha, real, "alpha");
}

at::Tensor workspace_for(const ReducePlan& plan, const at::Tensor& like, at::ScalarType acc) {
  return at::empty({std::max<int64_t>(plan.workspace, 1)}, like.options().dtype(acc));
}

}  // namespace

at::Tensor interpolate(const at::Tensor& real_in, const at::Tensor& fake_in,
                       const at::Tensor& alpha_in, int64_t pac) {
  check_pair(real_in, fake_in, alpha_in);
  const Groups g = group_geometry(real_in, pac, "real");
  check_vector(alpha_in, g.num_groups, "alpha");
  const DType dt = dtype_of(real_in, "real");
  const c10::cuda::CUDAGuard guard(real_in.device());
  const at::Tensor real = real_in.contiguous();
  const at::Tensor fake = fake_in.contiguous();
  const at::Tensor alpha = alpha_in.contiguous();
  at::Tensor out = at::empty_like(real, at::MemoryFormat::Contiguous);
  check_launch(launch_interpolate(dt, real.const_data_ptr(), fake.const_data_ptr(),
                                  alpha.const_data_ptr(), out.mutable_data_ptr(), g.numel,
                                  g.group_size, real.device().index(), current_stream(real)),
               "interpolate");
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> interpolate_backward(const at::Tensor& grad_in,
                                                                    const at::Tensor& real_in,
                                                                    const at::Tensor& fake_in,
                                                                    const at::Tensor& alpha_in,
                                                                    int64_t pac) {
  check_pair(real_in, fake_in, alpha_in);
  TORCH_CHECK(grad_in.sizes() == real_in.sizes() && grad_in.scalar_type() == real_in.scalar_type(),
              "wgangp_fast: grad must match real in shape and dtype");
  check_cuda(grad_in, real_in, "grad");
  const Groups g = group_geometry(real_in, pac, "real");
  check_vector(alpha_in, g.num_groups, "alpha");
  const DType dt = dtype_of(real_in, "real");
  const c10::cuda::CUDAGuard guard(real_in.device());
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor real = real_in.contiguous();
  const at::Tensor fake = fake_in.contiguous();
  const at::Tensor alpha = alpha_in.contiguous();
  at::Tensor d_real = at::empty_like(real, at::MemoryFormat::Contiguous);
  at::Tensor d_fake = at::empty_like(real, at::MemoryFormat::Contiguous);
  at::Tensor d_alpha = at::empty({g.num_groups}, alpha.options());
  const int device = real.device().index();
  const ReducePlan plan = plan_interpolate_backward(dt, g.num_groups, g.group_size, device);
  const at::Tensor ws = workspace_for(plan, real, alpha.scalar_type());
  check_launch(launch_interpolate_backward(dt, grad.const_data_ptr(), real.const_data_ptr(),
                                           fake.const_data_ptr(), alpha.const_data_ptr(),
                                           d_real.mutable_data_ptr(), d_fake.mutable_data_ptr(),
                                           d_alpha.mutable_data_ptr(), ws.mutable_data_ptr(), plan,
                                           current_stream(real)),
               "interpolate_backward");
  return {d_real, d_fake, d_alpha};
}

std::tuple<at::Tensor, at::Tensor> penalty_forward(const at::Tensor& grads_in,
                                                   const std::optional<at::Tensor>& weight_in,
                                                   int64_t pac, double target, bool one_sided,
                                                   double eps, double input_scale,
                                                   int64_t reduction, double scale) {
  check_cuda(grads_in, grads_in, "grads");
  const Groups g = check_penalty_args(grads_in, pac, reduction);
  const DType dt = dtype_of(grads_in, "grads");
  const c10::cuda::CUDAGuard guard(grads_in.device());
  const at::Tensor grads = grads_in.contiguous();
  at::Tensor weight_holder;
  const GroupVec weight = group_vec(weight_in, grads, g.num_groups, "weight", weight_holder);
  const auto acc = at::toOpMathType(grads.scalar_type());
  at::Tensor norms = at::empty({g.num_groups}, grads.options().dtype(acc));
  at::Tensor out = reduction == kNone ? at::empty({g.num_groups}, grads.options())
                                      : at::empty({}, grads.options());
  const ReducePlan plan = plan_penalty_forward(dt, g.num_groups, g.group_size,
                                               reduction != kNone, grads.device().index());
  const at::Tensor ws = workspace_for(plan, grads, acc);
  const PenaltyParams params{target, one_sided, eps, input_scale, reduction, scale};
  check_launch(launch_penalty_forward(dt, grads.const_data_ptr(), weight, out.mutable_data_ptr(),
                                      norms.mutable_data_ptr(), ws.mutable_data_ptr(), params,
                                      plan, current_stream(grads)),
               "penalty_forward");
  return {out, norms};
}

at::Tensor penalty_backward(const at::Tensor& grad_out_in,
                            const std::optional<at::Tensor>& grad_norms_in,
                            const at::Tensor& grads_in, const at::Tensor& norms_in,
                            const std::optional<at::Tensor>& weight_in, int64_t pac,
                            double target, bool one_sided, double input_scale, int64_t reduction,
                            double scale) {
  check_cuda(grads_in, grads_in, "grads");
  check_cuda(grad_out_in, grads_in, "grad_out");
  check_cuda(norms_in, grads_in, "norms");
  const Groups g = check_penalty_backward_args(grad_out_in, grads_in, norms_in, pac, reduction);
  const DType dt = dtype_of(grads_in, "grads");
  const c10::cuda::CUDAGuard guard(grads_in.device());
  const at::Tensor grads = grads_in.contiguous();
  at::Tensor grad_out_holder, grad_norms_holder, norms_holder, weight_holder;
  const GroupVec grad_out = group_vec(grad_out_in, grads, grad_out_in.numel(), "grad_out",
                                      grad_out_holder);
  const GroupVec grad_norms =
      group_vec(grad_norms_in, grads, g.num_groups, "grad_norms", grad_norms_holder);
  const GroupVec norms = group_vec(norms_in, grads, g.num_groups, "norms", norms_holder);
  const GroupVec weight = group_vec(weight_in, grads, g.num_groups, "weight", weight_holder);
  at::Tensor d_grads = at::empty_like(grads, at::MemoryFormat::Contiguous);
  const PenaltyParams params{target, one_sided, 0.0, input_scale, reduction, scale};
  check_launch(launch_penalty_backward(dt, grad_out, grad_norms, grads.const_data_ptr(), norms,
                                       weight, d_grads.mutable_data_ptr(), g.numel, g.group_size,
                                       g.num_groups, params, grads.device().index(),
                                       current_stream(grads)),
               "penalty_backward");
  return d_grads;
}

}  // namespace cuda
}  // namespace wgangp_fast

TORCH_LIBRARY_IMPL(wgangp_fast, CUDA, m) {
  m.impl("interpolate_kernel", &wgangp_fast::cuda::interpolate);
  m.impl("interpolate_backward_kernel", &wgangp_fast::cuda::interpolate_backward);
  m.impl("penalty_forward_kernel", &wgangp_fast::cuda::penalty_forward);
  m.impl("penalty_backward_kernel", &wgangp_fast::cuda::penalty_backward);
}
