// The per-group arithmetic of gradient_norm_penalty, shared by the CPU and CUDA kernels so that
// both backends evaluate exactly the same formulas (README, "The ops").
// Header-only and free of torch includes: nvcc compiles it in device code.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define WGF_HD __host__ __device__ __forceinline__
#else
#define WGF_HD inline
#endif

namespace wgangp_fast {

// Matches the `reduction` integer of the kernel-op schemas.
enum Reduction : int64_t { kNone = 0, kMean = 1, kSum = 2 };

// u_j = n_j - target, clipped at zero for the one-sided (WGAN-LP) penalty.
template <typename acc_t>
WGF_HD acc_t penalty_excess(acc_t n, acc_t target, bool one_sided) {
  acc_t u = n - target;
  return (one_sided && u < acc_t(0)) ? acc_t(0) : u;
}

// phi_j = w_j * u_j^2, before `scale` and the reduction.
template <typename acc_t>
WGF_HD acc_t group_penalty(acc_t n, acc_t target, bool one_sided, acc_t w) {
  acc_t u = penalty_excess(n, target, one_sided);
  return w * u * u;
}

// The factor c_j with d grads[i] = c_j * grads[i] for every element i of group j.
// g_phi is the upstream gradient of phi_j (scale and reduction factor folded in), g_norm the
// upstream gradient of n_j (zero unless the norms output is used), s2 = input_scale^2.
// Where n_j == 0 the subgradient is 0, as torch.linalg.vector_norm defines it. A NaN norm (a NaN
// among the group's gradients) is not zero and gives a NaN coefficient, so the NaN reaches every
// element of the group, as it does in eager autograd: a test of `!(n > 0)` would hide it as 0.
template <typename acc_t>
WGF_HD acc_t penalty_backward_coef(acc_t g_phi, acc_t g_norm, acc_t n, acc_t target,
                                   bool one_sided, acc_t w, acc_t s2) {
  if (n == acc_t(0)) return acc_t(0);
  acc_t u = penalty_excess(n, target, one_sided);
  return (g_phi * w * acc_t(2) * u + g_norm) * s2 / n;
}

// The reduction's factor r on the upstream gradient of phi_j.
template <typename acc_t>
WGF_HD acc_t reduction_factor(int64_t reduction, int64_t num_groups) {
  return reduction == kMean ? acc_t(1) / acc_t(num_groups) : acc_t(1);
}

}  // namespace wgangp_fast
