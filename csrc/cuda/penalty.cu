// CUDA kernels of gradient_norm_penalty: per-group norms and penalty (forward, a deterministic
// group reduction) and the per-group rescaling of the gradients (backward, elementwise). One read
// of `grads` forward; one read and one write back. The per-group formulas are those of
// csrc/common/penalty_math.h, shared with the CPU kernels.
#include "../common/penalty_math.h"
#include "device.cuh"
#include "kernels.cuh"
#include "launch.cuh"
#include "reduce.cuh"

namespace wgangp_fast {
namespace cuda {

namespace {

// The penalty forward as an Op of the group reduction (reduce.cuh): the term is
// (input_scale * grads[i])^2; finishing group j writes norms[j] (and out[j] for reduction none)
// and returns phi_j for the mean/sum.
template <typename T>
struct PenaltyForwardOp {
  using scalar_t = T;
  using acc_t = acc_type<T>;
  static constexpr int kVec = cuda::kVec<T>;
  static constexpr int kLoads = kUnroll;
  struct Frag {
    Pack<T> v;
  };

  const T* grads;   // [numel]
  GroupVec weight;  // [M] or absent
  T* out;           // [M] (reduction none) or []
  acc_t* norms;     // [M]
  acc_t input_scale;
  acc_t target;
  acc_t eps;
  acc_t scale;
  acc_t total_factor;  // reduction_factor (1/M for the mean, 1 for the sum)
  int64_t reduction;
  bool one_sided;
  bool vec;
  bool need_total;

  __device__ __forceinline__ void set_group(int64_t) {}

  __device__ __forceinline__ Frag load(int64_t i) const { return Frag{load_pack(grads + i)}; }

  __device__ __forceinline__ acc_t consume(const Frag& f, int64_t) const {
    acc_t s = acc_t(0);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const acc_t x = input_scale * to_acc(f.v.v[k]);
      s += x * x;
    }
    return s;
  }

  __device__ __forceinline__ acc_t scalar(int64_t i) const {
    const acc_t x = input_scale * to_acc(grads[i]);
    return x * x;
  }

  __device__ __forceinline__ acc_t finish(int64_t j, acc_t sum) const {
    const acc_t n = acc_sqrt(sum + eps);
    norms[j] = n;
    const acc_t w = weight.ptr != nullptr ? load_group_value<acc_t>(weight, j) : acc_t(1);
    const acc_t phi = group_penalty<acc_t>(n, target, one_sided, w);
    if (reduction == kNone) out[j] = from_acc<T>(scale * phi);
    return phi;
  }

  __device__ __forceinline__ void finish_total(acc_t total) const {
    out[0] = from_acc<T>(scale * total * total_factor);
  }
};

// The upstream values of penalty_backward_coef for group j, read on the device.
template <typename acc_t>
struct CoefArgs {
  GroupVec grad_out;    // [M] (reduction none) or [1]
  GroupVec grad_norms;  // [M] or absent
  GroupVec norms;       // [M]
  GroupVec weight;      // [M] or absent
  acc_t phi_factor;     // scale * reduction_factor
  acc_t target;
  acc_t s2;             // input_scale^2
  bool one_sided;
  bool per_group_out;   // reduction none: grad_out has one value per group

  __device__ __forceinline__ acc_t coef(int64_t j) const {
    const acc_t g_phi = phi_factor * load_group_value<acc_t>(grad_out, per_group_out ? j : 0);
    const acc_t g_norm =
        grad_norms.ptr != nullptr ? load_group_value<acc_t>(grad_norms, j) : acc_t(0);
    const acc_t w = weight.ptr != nullptr ? load_group_value<acc_t>(weight, j) : acc_t(1);
    return penalty_backward_coef<acc_t>(g_phi, g_norm, load_group_value<acc_t>(norms, j), target,
                                        one_sided, w, s2);
  }
};

// The coefficient as a call, for the rare runs that cross a group boundary: keeps one inlined
// copy of the formula per kernel instead of one per element of the pack.
template <typename acc_t>
__device__ __noinline__ acc_t coef_call(CoefArgs<acc_t> args, int64_t j) {
  return args.coef(j);
}

// d_grads[i] = c_j * grads[i]; runs of one pack per thread as in interpolate_kernel, c_j
// evaluated once per run and again only where a run enters a new group.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    penalty_backward_kernel(CoefArgs<acc_type<T>> args,
                            const T* __restrict__ grads,  // [numel]
                            T* __restrict__ d_grads,      // [numel]
                            int64_t numel, FastDiv group, bool vec) {
  using acc_t = acc_type<T>;
  constexpr int V = kVec<T>;
  const int64_t runs = (numel + V - 1) / V;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; r < runs;
       r += stride) {
    const int64_t i0 = r * V;
    const int64_t count = std::min<int64_t>(V, numel - i0);
    const bool packed = vec && count == V;
    Pack<T> x, o;
    if (packed) {
      x = load_pack(grads + i0);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        if (k < count) x.v[k] = grads[i0 + k];
      }
    }
    map_run<V>(i0, count, group, [&](int64_t j) { return args.coef(j); },
               [&](int64_t j) { return coef_call(args, j); },
               [](const Pack<T>& p, int k, acc_t c) { return from_acc<T>(c * to_acc(p.v[k])); },
               x, o);
    if (packed) {
      store_pack(d_grads + i0, o);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        if (k < count) d_grads[i0 + k] = o.v[k];
      }
    }
  }
}

template <typename T>
cudaError_t penalty_forward_typed(const void* grads, GroupVec weight, void* out, void* norms,
                                  void* workspace, const PenaltyParams& params,
                                  const ReducePlan& plan, cudaStream_t stream) {
  using acc_t = acc_type<T>;
  PenaltyForwardOp<T> op{};
  op.grads = static_cast<const T*>(grads);
  op.weight = weight;
  op.out = static_cast<T*>(out);
  op.norms = static_cast<acc_t*>(norms);
  op.input_scale = static_cast<acc_t>(params.input_scale);
  op.target = static_cast<acc_t>(params.target);
  op.eps = static_cast<acc_t>(params.eps);
  op.scale = static_cast<acc_t>(params.scale);
  op.total_factor = reduction_factor<acc_t>(params.reduction, plan.num_groups);
  op.reduction = params.reduction;
  op.one_sided = params.one_sided;
  op.vec = aligned16(grads);
  op.need_total = params.reduction != kNone;
  return run_reduce(op, plan, workspace, stream);
}

template <typename T>
cudaError_t penalty_backward_typed(GroupVec grad_out, GroupVec grad_norms, const void* grads,
                                   GroupVec norms, GroupVec weight, void* d_grads, int64_t numel,
                                   int64_t group_size, int64_t num_groups,
                                   const PenaltyParams& params, int device,
                                   cudaStream_t stream) {
  using acc_t = acc_type<T>;
  CoefArgs<acc_t> args{};
  args.grad_out = grad_out;
  args.grad_norms = grad_norms;
  args.norms = norms;
  args.weight = weight;
  // The same acc_t arithmetic as the CPU kernel: scale * reduction_factor, input_scale^2.
  args.phi_factor =
      static_cast<acc_t>(params.scale) * reduction_factor<acc_t>(params.reduction, num_groups);
  args.target = static_cast<acc_t>(params.target);
  const acc_t s = static_cast<acc_t>(params.input_scale);
  args.s2 = s * s;
  args.one_sided = params.one_sided;
  args.per_group_out = params.reduction == kNone;
  static const int per_sm =
      blocks_per_sm(reinterpret_cast<const void*>(&penalty_backward_kernel<T>));
  const int64_t runs = ceil_div(numel, kVec<T>);
  const int grid = elementwise_grid(runs, static_cast<int64_t>(per_sm) * sm_count(device));
  const bool vec = aligned16(grads) && aligned16(d_grads);
  penalty_backward_kernel<T><<<grid, kThreads, 0, stream>>>(
      args, static_cast<const T*>(grads), static_cast<T*>(d_grads), numel,
      make_fast_div(group_size), vec);
  return cudaGetLastError();
}

}  // namespace

ReducePlan plan_penalty_forward(DType dtype, int64_t num_groups, int64_t group_size,
                                bool need_total, int device) {
  switch (dtype) {
    case DType::kHalf:
      return plan_for<PenaltyForwardOp<__half>>(num_groups, group_size, need_total, device);
    case DType::kBFloat16:
      return plan_for<PenaltyForwardOp<__nv_bfloat16>>(num_groups, group_size, need_total,
                                                        device);
    case DType::kFloat:
      return plan_for<PenaltyForwardOp<float>>(num_groups, group_size, need_total, device);
    default:
      return plan_for<PenaltyForwardOp<double>>(num_groups, group_size, need_total, device);
  }
}

cudaError_t launch_penalty_forward(DType dtype, const void* grads, GroupVec weight, void* out,
                                   void* norms, void* workspace, const PenaltyParams& params,
                                   const ReducePlan& plan, cudaStream_t stream) {
  switch (dtype) {
    case DType::kHalf:
      return penalty_forward_typed<__half>(grads, weight, out, norms, workspace, params, plan,
                                           stream);
    case DType::kBFloat16:
      return penalty_forward_typed<__nv_bfloat16>(grads, weight, out, norms, workspace, params,
                                                  plan, stream);
    case DType::kFloat:
      return penalty_forward_typed<float>(grads, weight, out, norms, workspace, params, plan,
                                          stream);
    default:
      return penalty_forward_typed<double>(grads, weight, out, norms, workspace, params, plan,
                                           stream);
  }
}

cudaError_t launch_penalty_backward(DType dtype, GroupVec grad_out, GroupVec grad_norms,
                                    const void* grads, GroupVec norms, GroupVec weight,
                                    void* d_grads, int64_t numel, int64_t group_size,
                                    int64_t num_groups, const PenaltyParams& params, int device,
                                    cudaStream_t stream) {
  switch (dtype) {
    case DType::kHalf:
      return penalty_backward_typed<__half>(grad_out, grad_norms, grads, norms, weight, d_grads,
                                            numel, group_size, num_groups, params, device,
                                            stream);
    case DType::kBFloat16:
      return penalty_backward_typed<__nv_bfloat16>(grad_out, grad_norms, grads, norms, weight,
                                                   d_grads, numel, group_size, num_groups, params,
                                                   device, stream);
    case DType::kFloat:
      return penalty_backward_typed<float>(grad_out, grad_norms, grads, norms, weight, d_grads,
                                           numel, group_size, num_groups, params, device, stream);
    default:
      return penalty_backward_typed<double>(grad_out, grad_norms, grads, norms, weight, d_grads,
                                            numel, group_size, num_groups, params, device, stream);
  }
}

}  // namespace cuda
}  // namespace wgangp_fast
