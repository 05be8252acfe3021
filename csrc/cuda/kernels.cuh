// Launchers of the CUDA kernels of wgangp_fast, on raw device pointers. No torch headers: the
// kernels (interpolate.cu, penalty.cu) compile without them, and the host code (ops_cuda.cpp)
// turns tensors into these arguments.
//
// Notation: numel elements of N samples of D elements each, in M = N / pac groups of
// G = pac * D contiguous elements. "acc" is the accumulation dtype: float32, or float64 for float64 inputs. Every launcher returns the
// first CUDA error its launches raised (cudaSuccess if none).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace wgangp_fast {
namespace cuda {

enum class DType : int32_t { kHalf = 0, kBFloat16 = 1, kFloat = 2, kDouble = 3 };

// M per-group values on the device, contiguous, in any of the four dtypes; ptr == nullptr means
// the optional argument is absent.
struct GroupVec {
  const void* ptr;
  DType dtype;
};

// The scalar arguments of gradient_norm_penalty (reduction: 0 none, 1 mean, 2 sum).
struct PenaltyParams {
  double target;
  bool one_sided;
  double eps;
  double input_scale;
  int64_t reduction;
  double scale;
};

// How a per-group reduction (penalty forward, interpolate backward) is spread over the GPU.
// Made by plan_* below, which the host calls first to size the workspace, then handed back to
// the launcher unchanged. Given the device, it depends only on (dtype, M, G): the summation order
// and therefore the result are the same on every call.
struct ReducePlan {
  int64_t num_groups;        // M
  int64_t group_size;        // G
  int32_t worker;            // threads that reduce one group (or chunk): 8, 32 or 256 (the block)
  int32_t grid;              // blocks launched; they stride over the tasks
  int32_t finish_lanes;      // split plans: threads that add up one group's chunk sums
  int64_t chunks_per_group;  // > 1: each group is split into chunks reduced by separate blocks
  int64_t chunk;             // elements per chunk (when chunks_per_group > 1)
  int64_t groups_per_task;   // consecutive groups per task (when chunks_per_group == 1)
  int64_t tasks;             // units of work: (group, chunk) pairs, or runs of groups
  int64_t workspace;         // acc elements of device workspace the launcher needs (0: none)
};

ReducePlan plan_interpolate_backward(DType dtype, int64_t num_groups, int64_t group_size,
                                     int device);

// need_total: the reduction is mean or sum, so the M penalties are summed too.
ReducePlan plan_penalty_forward(DType dtype, int64_t num_groups, int64_t group_size,
                                bool need_total, int device);

// out[i] = alpha[i / G] * real[i] + (1 - alpha[i / G]) * fake[i].
cudaError_t launch_interpolate(DType dtype,
                               const void* real,   // [numel], dtype
                               const void* fake,   // [numel], dtype
                               const void* alpha,  // [M], acc
                               void* out,          // [numel], dtype
                               int64_t numel, int64_t group_size, int device,
                               cudaStream_t stream);

// d_real = alpha * grad, d_fake = (1 - alpha) * grad, d_alpha[j] = sum over group j of
// (real - fake) * grad.
cudaError_t launch_interpolate_backward(DType dtype,
                                        const void* grad,   // [numel], dtype
                                        const void* real,   // [numel], dtype
                                        const void* fake,   // [numel], dtype
                                        const void* alpha,  // [M], acc
                                        void* d_real,       // [numel], dtype
                                        void* d_fake,       // [numel], dtype
                                        void* d_alpha,      // [M], acc
                                        void* workspace,    // [plan.workspace], acc
                                        const ReducePlan& plan, cudaStream_t stream);

// norms[j] = sqrt(sum over group j of (input_scale * grads)^2 + eps); out = scale * phi ([M],
// reduction none) or scale * mean/sum of phi ([] ), phi_j = weight_j * u_j^2.
cudaError_t launch_penalty_forward(DType dtype,
                                   const void* grads,  // [numel], dtype
                                   GroupVec weight,    // [M] or absent
                                   void* out,          // [M] or [], dtype
                                   void* norms,        // [M], acc
                                   void* workspace,    // [plan.workspace], acc
                                   const PenaltyParams& params, const ReducePlan& plan,
                                   cudaStream_t stream);

// d_grads[i] = c_j * grads[i] over group j, c_j = penalty_backward_coef(...) evaluated on the
// device from grad_out, grad_norms, norms and weight (no host synchronisation).
cudaError_t launch_penalty_backward(DType dtype,
                                    GroupVec grad_out,    // [M] (reduction none) or [1]
                                    GroupVec grad_norms,  // [M] or absent
                                    const void* grads,    // [numel], dtype
                                    GroupVec norms,       // [M]
                                    GroupVec weight,      // [M] or absent
                                    void* d_grads,        // [numel], dtype
                                    int64_t numel, int64_t group_size, int64_t num_groups,
                                    const PenaltyParams& params, int device, cudaStream_t stream);

}  // namespace cuda
}  // namespace wgangp_fast
