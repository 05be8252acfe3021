// Host-side shape checks and group geometry shared by the CPU and CUDA host code.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>

#include "penalty_math.h"

namespace wgangp_fast {

// Integers in error messages go through std::to_string, never through `ostream << int64_t`: an
// extension that carries its own copy of libstdc++'s stream code loses integers formatted through
// it, or crashes there (a CUDA build did, in std::ostream::_M_insert<long>), while strings format
// fine. tests/test_error_messages_native.py builds such an extension (-static-libstdc++) to hold
// these checks to it.
inline std::string decimal(int64_t v) { return std::to_string(v); }

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
  TORCH_CHECK(pac >= 1 && n % pac == 0, "wgangp_fast: the batch size N=", decimal(n),
              " must be a multiple of pac=", decimal(pac));
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
  TORCH_CHECK(v.numel() == m, "wgangp_fast: ", name, " must hold M=", decimal(m), " values, got ",
              decimal(v.numel()));
}

// The device-independent checks of penalty_forward's inputs; returns the group geometry.
inline Groups check_penalty_args(const at::Tensor& grads, int64_t pac, int64_t reduction) {
  TORCH_CHECK(reduction >= kNone && reduction <= kSum, "wgangp_fast: unknown reduction ",
              decimal(reduction));
  return group_geometry(grads, pac, "grads");
}

// The same for penalty_backward, with the shapes of the forward's norms and of grad_out.
inline Groups check_penalty_backward_args(const at::Tensor& grad_out, const at::Tensor& grads,
                                          const at::Tensor& norms, int64_t pac,
                                          int64_t reduction) {
  const Groups g = check_penalty_args(grads, pac, reduction);
  check_vector(norms, g.num_groups, "norms");
  TORCH_CHECK(grad_out.numel() == (reduction == kNone ? g.num_groups : 1),
              "wgangp_fast: grad_out has ", decimal(grad_out.numel()), " values for reduction ",
              decimal(reduction));
  return g;
}

}  // namespace wgangp_fast
