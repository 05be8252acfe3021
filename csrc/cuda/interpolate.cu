// CUDA kernels of interpolate: x = alpha * real + (1 - alpha) * fake with alpha per group of pac
// samples (forward), and its backward (d_real, d_fake elementwise, d_alpha per group).
#include "device.cuh"
#include "kernels.cuh"
#include "launch.cuh"
#include "reduce.cuh"

namespace wgangp_fast {
namespace cuda {

namespace {

template <typename T>
struct Pair {
  Pack<T> x, y;
};

// Thread k of the grid-stride loop takes runs of one pack: elements [r * V, r * V + V), 16-byte
// loads and stores when `vec` (the last, partial run and unaligned data go one element at a time).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    interpolate_kernel(const T* __restrict__ real,                 // [numel]
                       const T* __restrict__ fake,                 // [numel]
                       const acc_type<T>* __restrict__ alpha,      // [M]
                       T* __restrict__ out,                        // [numel]
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
    Pair<T> in;
    Pack<T> o;
    if (packed) {
      in.x = load_pack(real + i0);
      in.y = load_pack(fake + i0);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        if (k < count) {
          in.x.v[k] = real[i0 + k];
          in.y.v[k] = fake[i0 + k];
        }
      }
    }
    const auto alpha_of = [&](int64_t j) { return alpha[j]; };
    map_run<V>(i0, count, group, alpha_of, alpha_of,
               [](const Pair<T>& p, int k, acc_t a) {
                 return from_acc<T>(lerp_exact(a, to_acc(p.x.v[k]), to_acc(p.y.v[k])));
               },
               in, o);
    if (packed) {
      store_pack(out + i0, o);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        if (k < count) out[i0 + k] = o.v[k];
      }
    }
  }
}

// The interpolate backward as an Op of the group reduction (reduce.cuh): the term is
// (real - fake) * grad, summed into d_alpha; d_real and d_fake are written on the way.
template <typename T>
struct InterpolateBackwardOp {
  using scalar_t = T;
  using acc_t = acc_type<T>;
  static constexpr int kVec = cuda::kVec<T>;
  // Three input packs per step already: two steps in flight keep the registers in check.
  static constexpr int kLoads = 2;
  struct Frag {
    Pack<T> g, r, f;
  };

  const T* grad;         // [numel]
  const T* real;         // [numel]
  const T* fake;         // [numel]
  const acc_t* alpha;    // [M]
  T* d_real;             // [numel]
  T* d_fake;             // [numel]
  acc_t* d_alpha;        // [M]
  bool vec;
  bool need_total;
  acc_t a;               // alpha of the current group
  acc_t b;               // 1 - a

  __device__ __forceinline__ void set_group(int64_t j) {
    a = alpha[j];
    b = acc_t(1) - a;
  }

  __device__ __forceinline__ Frag load(int64_t i) const {
    return Frag{load_pack(grad + i), load_pack(real + i), load_pack(fake + i)};
  }

  __device__ __forceinline__ acc_t consume(const Frag& f, int64_t i) const {
    Pack<T> dr, df;
    acc_t s = acc_t(0);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const acc_t g = to_acc(f.g.v[k]);
      dr.v[k] = from_acc<T>(a * g);
      df.v[k] = from_acc<T>(b * g);
      s += (to_acc(f.r.v[k]) - to_acc(f.f.v[k])) * g;
    }
    store_pack(d_real + i, dr);
    store_pack(d_fake + i, df);
    return s;
  }

  __device__ __forceinline__ acc_t scalar(int64_t i) const {
    const acc_t g = to_acc(grad[i]);
    d_real[i] = from_acc<T>(a * g);
    d_fake[i] = from_acc<T>(b * g);
    return (to_acc(real[i]) - to_acc(fake[i])) * g;
  }

  __device__ __forceinline__ acc_t finish(int64_t j, acc_t sum) const {
    d_alpha[j] = sum;
    return acc_t(0);
  }

  __device__ __forceinline__ void finish_total(acc_t) const {}
};

template <typename T>
cudaError_t interpolate_typed(const void* real, const void* fake, const void* alpha, void* out,
                              int64_t numel, int64_t group_size, int device,
                              cudaStream_t stream) {
  static const int per_sm =
      blocks_per_sm(reinterpret_cast<const void*>(&interpolate_kernel<T>));
  const int64_t runs = ceil_div(numel, kVec<T>);
  const int grid = elementwise_grid(runs, static_cast<int64_t>(per_sm) * sm_count(device));
  const bool vec = aligned16(real) && aligned16(fake) && aligned16(out);
  interpolate_kernel<T><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(real), static_cast<const T*>(fake),
      static_cast<const acc_type<T>*>(alpha), static_cast<T*>(out), numel,
      make_fast_div(group_size), vec);
  return cudaGetLastError();
}

template <typename T>
cudaError_t interpolate_backward_typed(const void* grad, const void* real, const void* fake,
                                       const void* alpha, void* d_real, void* d_fake,
                                       void* d_alpha, void* workspace, const ReducePlan& plan,
                                       cudaStream_t stream) {
  using acc_t = acc_type<T>;
  InterpolateBackwardOp<T> op{};
  op.grad = static_cast<const T*>(grad);
  op.real = static_cast<const T*>(real);
  op.fake = static_cast<const T*>(fake);
  op.alpha = static_cast<const acc_t*>(alpha);
  op.d_real = static_cast<T*>(d_real);
  op.d_fake = static_cast<T*>(d_fake);
  op.d_alpha = static_cast<acc_t*>(d_alpha);
  op.vec = aligned16(grad) && aligned16(real) && aligned16(fake) && aligned16(d_real) &&
           aligned16(d_fake);
  op.need_total = false;
  return run_reduce(op, plan, workspace, stream);
}

}  // namespace

ReducePlan plan_interpolate_backward(DType dtype, int64_t num_groups, int64_t group_size,
                                     int device) {
  switch (dtype) {
    case DType::kHalf:
      return plan_for<InterpolateBackwardOp<__half>>(num_groups, group_size, false, device);
    case DType::kBFloat16:
      return plan_for<InterpolateBackwardOp<__nv_bfloat16>>(num_groups, group_size, false, device);
    case DType::kFloat:
      return plan_for<InterpolateBackwardOp<float>>(num_groups, group_size, false, device);
    default:
      return plan_for<InterpolateBackwardOp<double>>(num_groups, group_size, false, device);
  }
}

cudaError_t launch_interpolate(DType dtype, const void* real, const void* fake, const void* alpha,
                               void* out, int64_t numel, int64_t group_size, int device,
                               cudaStream_t stream) {
  switch (dtype) {
    case DType::kHalf:
      return interpolate_typed<__half>(real, fake, alpha, out, numel, group_size, device, stream);
    case DType::kBFloat16:
      return interpolate_typed<__nv_bfloat16>(real, fake, alpha, out, numel, group_size, device,
                                              stream);
    case DType::kFloat:
      return interpolate_typed<float>(real, fake, alpha, out, numel, group_size, device, stream);
    default:
      return interpolate_typed<double>(real, fake, alpha, out, numel, group_size, device, stream);
  }
}

cudaError_t launch_interpolate_backward(DType dtype, const void* grad, const void* real,
                                        const void* fake, const void* alpha, void* d_real,
                                        void* d_fake, void* d_alpha, void* workspace,
                                        const ReducePlan& plan, cudaStream_t stream) {
  switch (dtype) {
    case DType::kHalf:
      return interpolate_backward_typed<__half>(grad, real, fake, alpha, d_real, d_fake, d_alpha,
                                                workspace, plan, stream);
    case DType::kBFloat16:
      return interpolate_backward_typed<__nv_bfloat16>(grad, real, fake, alpha, d_real, d_fake,
                                                       d_alpha, workspace, plan, stream);
    case DType::kFloat:
      return interpolate_backward_typed<float>(grad, real, fake, alpha, d_real, d_fake, d_alpha,
                                               workspace, plan, stream);
    default:
      return interpolate_backward_typed<double>(grad, real, fake, alpha, d_real, d_fake, d_alpha,
                                                workspace, plan, stream);
  }
}

}  // namespace cuda
}  // namespace wgangp_fast
