// Host-side shape checks and group geometry shared by the CPU and CUDA host code.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace wgangp_fast {

// A batch of N samples of D elements, grouped by `pac` consecutive samples into M groups of
// G = pac * D contiguous elements (CTGAN's view(-1, pac * D)).
struct Groups {
  int64_t numel;
  int64_t group_size;  // G
  int64_t num_groups;  // M
};

inline Groups group_geometry(const at::Tensor& t, int64_t pac, const char* name) {
  TORCH_CHECK(t.dim() >= 1, "wgangp_fast: ", name, " must have a batch dimension, got a 0-d tensor");
  const int64_t n = t.size(0);
  TORCH_CHECK(n > 0 && t.numel() > 0, "wgangp_fast: ", name, " must not be empty");
  TORCH_CHECK(pac >= 1 && n % pac == 0, "wgangp_fast: the batch size N=", n,
              " must be a multiple of pac=", pac);
  return Groups{t.numel(), t.numel() / n * pac, n / pac};
}

// The device-independent checks of interpolate's inputs; each backend adds its device check.
inline void check_interpolate_args(const at::Tensor& real, const at::Tensor& fake,
                                   const at::Tensor& alpha) {
  TORCH_CHECK(real.sizes() == fake.sizes(), "wgangp_fast: real and fake must have the same shape");
  TORCH_CHECK(real.scalar_type() == fake.scalar_type(),
              "wgangp_fast: real and fake must have the same dtype");
  TORCH_CHECK(alpha.scalar_type() == at::toOpMathType(real.scalar_type()),
              "wgangp_fast: alpha must be in the accumulation dtype ",
              at::toOpMathType(real.scalar_type()));
}

inline void check_vector(const at::Tensor& v, int64_t m, const char* name) {
  TORCH_CHECK(v.numel() == m, "wgangp_fast: ", name, " must hold M=", m, " values, got ", v.numel());
}

}  // namespace wgangp_fast
