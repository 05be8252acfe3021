// Host side of the CUDA backend: checks the tensors, allocates the outputs and the workspace,
// launches on the current stream of the tensors' device and registers the CUDA implementations
// of the kernel ops declared in csrc/ops.cpp. The kernels themselves (interpolate.cu, penalty.cu)
// see raw pointers only. Like csrc/ops.cpp, this uses the LibTorch stable ABI only: the device
// guard and the current stream come from the C shim (aoti_torch_create_cuda_guard,
// aoti_torch_get_current_cuda_stream), which every torch from 2.10 on exports.
#include <torch/csrc/inductor/aoti_torch/c/shim.h>

#include <memory>

#include "../common/geometry.h"
#include "../common/penalty_math.h"
#include "kernels.cuh"

// The GPU code this library was compiled for (setup.py: e.g. sm80_sm90_ptx90), for the build test.
#ifndef WGANGP_FAST_CUDA_TARGETS
#define WGANGP_FAST_CUDA_TARGETS unknown
#endif
#define WGF_STRINGIFY_(x) #x
#define WGF_STRINGIFY(x) WGF_STRINGIFY_(x)

// Read with ctypes (wgangp_fast.backends.cuda_targets): the library has no Python module.
extern "C" __attribute__((visibility("default"))) const char* wgangp_fast_cuda_targets() {
  return WGF_STRINGIFY(WGANGP_FAST_CUDA_TARGETS);
}

namespace wgangp_fast {
namespace cuda {

namespace {

DType dtype_of(const Tensor& t, const char* name) {
  const ScalarType st = t.scalar_type();
  WGF_CHECK(is_kernel_dtype(st), name, " must be float16, bfloat16, float32 or float64, got ",
            st);
  return st == ScalarType::Half       ? DType::kHalf
         : st == ScalarType::BFloat16 ? DType::kBFloat16
         : st == ScalarType::Float    ? DType::kFloat
                                      : DType::kDouble;
}

void check_cuda(const Tensor& t, const Tensor& like, const char* name) {
  WGF_CHECK(t.is_cuda(), "the CUDA kernels take CUDA tensors, got ", name,
            t.is_cpu() ? " on the CPU" : " on another device");
  WGF_CHECK(t.get_device_index() == like.get_device_index(), name, " is on cuda:",
            static_cast<int64_t>(t.get_device_index()), " but the other inputs are on cuda:",
            static_cast<int64_t>(like.get_device_index()));
}

void check_launch(cudaError_t err, const char* what) {
  WGF_CHECK(err == cudaSuccess, "the CUDA ", what, " kernel failed to launch: ",
            cudaGetErrorString(err));
}

// The current CUDA device set to `t`'s for the guard's lifetime, as c10::cuda::CUDAGuard does.
class DeviceGuard {
 public:
  explicit DeviceGuard(const Tensor& t) {
    CUDAGuardHandle handle = nullptr;
    STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_create_cuda_guard(t.get_device_index(), &handle));
    handle_.reset(handle);
  }

 private:
  struct Delete {
    void operator()(CUDAGuardOpaque* h) const { aoti_torch_delete_cuda_guard(h); }
  };
  std::unique_ptr<CUDAGuardOpaque, Delete> handle_;
};

// torch's current stream on `t`'s device (the one torch.cuda.stream() sets).
cudaStream_t current_stream(const Tensor& t) {
  void* stream = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(
      aoti_torch_get_current_cuda_stream(t.get_device_index(), &stream));
  return static_cast<cudaStream_t>(stream);
}

// A contiguous [M] tensor on `like`'s device, as a GroupVec; keeps the tensor alive in `holder`.
GroupVec group_vec(const std::optional<Tensor>& t, const Tensor& like, int64_t m,
                   const char* name, std::optional<Tensor>& holder) {
  if (!present(t)) return GroupVec{nullptr, DType::kFloat};
  check_vector(*t, m, name);
  check_cuda(*t, like, name);
  holder = flat(*t);
  return GroupVec{holder->const_data_ptr(), dtype_of(*holder, name)};
}

void check_pair(const Tensor& real, const Tensor& fake, const Tensor& alpha) {
  check_interpolate_args(real, fake, alpha);
  check_cuda(real, real, "real");
  check_cuda(fake, real, "fake");
  check_cuda(alpha, real, "alpha");
}

Tensor workspace_for(const ReducePlan& plan, const Tensor& like, ScalarType acc) {
  return alloc({std::max<int64_t>(plan.workspace, 1)}, acc, like);
}

}  // namespace

Tensor interpolate(const Tensor& real_in, const Tensor& fake_in, const Tensor& alpha_in,
                   int64_t pac) {
  check_pair(real_in, fake_in, alpha_in);
  const Groups g = group_geometry(real_in, pac, "real");
  check_vector(alpha_in, g.num_groups, "alpha");
  const DType dt = dtype_of(real_in, "real");
  const DeviceGuard guard(real_in);
  const Tensor real = flat(real_in);
  const Tensor fake = flat(fake_in);
  const Tensor alpha = flat(alpha_in);
  Tensor out = alloc_like(real);
  check_launch(launch_interpolate(dt, real.const_data_ptr(), fake.const_data_ptr(),
                                  alpha.const_data_ptr(), out.mutable_data_ptr(), g.numel,
                                  g.group_size, real.get_device_index(), current_stream(real)),
               "interpolate");
  return out;
}

std::tuple<Tensor, Tensor, Tensor> interpolate_backward(const Tensor& grad_in,
                                                        const Tensor& real_in,
                                                        const Tensor& fake_in,
                                                        const Tensor& alpha_in, int64_t pac) {
  check_pair(real_in, fake_in, alpha_in);
  WGF_CHECK(grad_in.sizes().equals(real_in.sizes()) &&
                grad_in.scalar_type() == real_in.scalar_type(),
            "grad must match real in shape and dtype");
  check_cuda(grad_in, real_in, "grad");
  const Groups g = group_geometry(real_in, pac, "real");
  check_vector(alpha_in, g.num_groups, "alpha");
  const DType dt = dtype_of(real_in, "real");
  const DeviceGuard guard(real_in);
  const Tensor grad = flat(grad_in);
  const Tensor real = flat(real_in);
  const Tensor fake = flat(fake_in);
  const Tensor alpha = flat(alpha_in);
  Tensor d_real = alloc_like(real);
  Tensor d_fake = alloc_like(real);
  Tensor d_alpha = alloc({g.num_groups}, alpha.scalar_type(), alpha);
  const int device = real.get_device_index();
  const ReducePlan plan = plan_interpolate_backward(dt, g.num_groups, g.group_size, device);
  const Tensor ws = workspace_for(plan, real, alpha.scalar_type());
  check_launch(launch_interpolate_backward(dt, grad.const_data_ptr(), real.const_data_ptr(),
                                           fake.const_data_ptr(), alpha.const_data_ptr(),
                                           d_real.mutable_data_ptr(), d_fake.mutable_data_ptr(),
                                           d_alpha.mutable_data_ptr(), ws.mutable_data_ptr(), plan,
                                           current_stream(real)),
               "interpolate_backward");
  return {d_real, d_fake, d_alpha};
}

std::tuple<Tensor, Tensor> penalty_forward(const Tensor& grads_in,
                                           const std::optional<Tensor>& weight_in, int64_t pac,
                                           double target, bool one_sided, double eps,
                                           double input_scale, int64_t reduction, double scale) {
  check_cuda(grads_in, grads_in, "grads");
  const Groups g = check_penalty_args(grads_in, pac, reduction);
  const DType dt = dtype_of(grads_in, "grads");
  const DeviceGuard guard(grads_in);
  const Tensor grads = flat(grads_in);
  std::optional<Tensor> weight_holder;
  const GroupVec weight = group_vec(weight_in, grads, g.num_groups, "weight", weight_holder);
  const ScalarType acc = acc_scalar_type(grads.scalar_type());
  Tensor norms = alloc({g.num_groups}, acc, grads);
  Tensor out = reduction == kNone ? alloc({g.num_groups}, grads.scalar_type(), grads)
                                  : alloc({}, grads.scalar_type(), grads);
  const ReducePlan plan = plan_penalty_forward(dt, g.num_groups, g.group_size,
                                               reduction != kNone, grads.get_device_index());
  const Tensor ws = workspace_for(plan, grads, acc);
  const PenaltyParams params{target, one_sided, eps, input_scale, reduction, scale};
  check_launch(launch_penalty_forward(dt, grads.const_data_ptr(), weight, out.mutable_data_ptr(),
                                      norms.mutable_data_ptr(), ws.mutable_data_ptr(), params,
                                      plan, current_stream(grads)),
               "penalty_forward");
  return {out, norms};
}

Tensor penalty_backward(const Tensor& grad_out_in, const std::optional<Tensor>& grad_norms_in,
                        const Tensor& grads_in, const Tensor& norms_in,
                        const std::optional<Tensor>& weight_in, int64_t pac, double target,
                        bool one_sided, double input_scale, int64_t reduction, double scale) {
  check_cuda(grads_in, grads_in, "grads");
  check_cuda(grad_out_in, grads_in, "grad_out");
  check_cuda(norms_in, grads_in, "norms");
  const Groups g = check_penalty_backward_args(grad_out_in, grads_in, norms_in, pac, reduction);
  const DType dt = dtype_of(grads_in, "grads");
  const DeviceGuard guard(grads_in);
  const Tensor grads = flat(grads_in);
  std::optional<Tensor> grad_out_holder, grad_norms_holder, norms_holder, weight_holder;
  const GroupVec grad_out = group_vec(grad_out_in, grads, grad_out_in.numel(), "grad_out",
                                      grad_out_holder);
  const GroupVec grad_norms =
      group_vec(grad_norms_in, grads, g.num_groups, "grad_norms", grad_norms_holder);
  const GroupVec norms = group_vec(norms_in, grads, g.num_groups, "norms", norms_holder);
  const GroupVec weight = group_vec(weight_in, grads, g.num_groups, "weight", weight_holder);
  Tensor d_grads = alloc_like(grads);
  const PenaltyParams params{target, one_sided, 0.0, input_scale, reduction, scale};
  check_launch(launch_penalty_backward(dt, grad_out, grad_norms, grads.const_data_ptr(), norms,
                                       weight, d_grads.mutable_data_ptr(), g.numel, g.group_size,
                                       g.num_groups, params, grads.get_device_index(),
                                       current_stream(grads)),
               "penalty_backward");
  return d_grads;
}

}  // namespace cuda
}  // namespace wgangp_fast

STABLE_TORCH_LIBRARY_IMPL(wgangp_fast, CUDA, m) {
  m.impl("interpolate_kernel", TORCH_BOX(&wgangp_fast::cuda::interpolate));
  m.impl("interpolate_backward_kernel", TORCH_BOX(&wgangp_fast::cuda::interpolate_backward));
  m.impl("penalty_forward_kernel", TORCH_BOX(&wgangp_fast::cuda::penalty_forward));
  m.impl("penalty_backward_kernel", TORCH_BOX(&wgangp_fast::cuda::penalty_backward));
}
