// Host-side shape checks and group geometry shared by the CPU and CUDA host code.
#pragma once

#include <cstdint>

#include "penalty_math.h"
#include "stable.h"

namespace wgangp_fast {

// A batch of N samples of D elements, grouped by `pac` consecutive samples into M groups of
// G = pac * D contiguous elements (CTGAN's view(-1, pac * D)).
struct Groups {
  int64_t numel;
  int64_t group_size;  // G
  int64_t num_groups;  // M
};

inline Groups group_geometry(const Tensor& t, int64_t pac, const char* name) {
  WGF_CHECK(t.dim() >= 1, name, " must have a batch dimension, got a 0-d tensor");
  const int64_t n = t.size(0);
  const int64_t numel = t.numel();
  WGF_CHECK(n > 0 && numel > 0, name, " must not be empty");
  WGF_CHECK(pac >= 1 && n % pac == 0, "the batch size N=", n, " must be a multiple of pac=", pac);
  return Groups{numel, numel / n * pac, n / pac};
}

// The device-independent checks of interpolate's inputs; each backend adds its device check.
inline void check_interpolate_args(const Tensor& real, const Tensor& fake, const Tensor& alpha) {
  WGF_CHECK(real.sizes().equals(fake.sizes()), "real and fake must have the same shape");
  const ScalarType dtype = real.scalar_type();
  WGF_CHECK(is_kernel_dtype(dtype), "real must be float16, bfloat16, float32 or float64, got ",
            dtype);
  WGF_CHECK(dtype == fake.scalar_type(), "real and fake must have the same dtype");
  WGF_CHECK(alpha.scalar_type() == acc_scalar_type(dtype),
            "alpha must be in the accumulation dtype ", acc_scalar_type(dtype), ", got ",
            alpha.scalar_type());
}

inline void check_vector(const Tensor& v, int64_t m, const char* name) {
  WGF_CHECK(v.numel() == m, name, " must hold M=", m, " values, got ", v.numel());
}

// The device-independent checks of penalty_forward's inputs; returns the group geometry.
inline Groups check_penalty_args(const Tensor& grads, int64_t pac, int64_t reduction) {
  WGF_CHECK(reduction >= kNone && reduction <= kSum, "unknown reduction ", reduction);
  WGF_CHECK(is_kernel_dtype(grads.scalar_type()),
            "grads must be float16, bfloat16, float32 or float64, got ", grads.scalar_type());
  return group_geometry(grads, pac, "grads");
}

// The same for penalty_backward, with the shapes of the forward's norms and of grad_out.
inline Groups check_penalty_backward_args(const Tensor& grad_out, const Tensor& grads,
                                          const Tensor& norms, int64_t pac, int64_t reduction) {
  const Groups g = check_penalty_args(grads, pac, reduction);
  check_vector(norms, g.num_groups, "norms");
  WGF_CHECK(grad_out.numel() == (reduction == kNone ? g.num_groups : 1), "grad_out has ",
            grad_out.numel(), " values for reduction ", reduction);
  return g;
}

}  // namespace wgangp_fast
