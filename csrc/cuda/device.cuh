// Device-side building blocks shared by the kernels: dtypes and conversions, 16-byte packs,
// group indexing without a 64-bit division per element, and deterministic warp/block sums.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.cuh"

namespace wgangp_fast {
namespace cuda {

// Threads per block of every kernel here.
constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
constexpr int kWarps = kThreads / kWarpSize;
constexpr unsigned kFullMask = 0xffffffffu;
// Bytes per vector load or store.
constexpr int kPackBytes = 16;

template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <typename T>
using acc_type = typename AccOf<T>::type;

// Elements per 16-byte pack: 8 (half, bfloat16), 4 (float), 2 (double).
template <typename T>
constexpr int kVec = kPackBytes / static_cast<int>(sizeof(T));

// torch builds with __CUDA_NO_HALF_CONVERSIONS__: every conversion is spelled out.
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }

template <typename T>
__device__ __forceinline__ T from_acc(acc_type<T> x);
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <>
__device__ __forceinline__ double from_acc<double>(double x) { return x; }

// a * x + (1 - a) * y, rounded after each operation (no FMA contraction), in the order of the
// eager `alpha * real + (1 - alpha) * fake`: float32 and float64 results are bitwise eager's.
__device__ __forceinline__ float lerp_exact(float a, float x, float y) {
  return __fadd_rn(__fmul_rn(a, x), __fmul_rn(__fsub_rn(1.0f, a), y));
}
__device__ __forceinline__ double lerp_exact(double a, double x, double y) {
  return __dadd_rn(__dmul_rn(a, x), __dmul_rn(__dsub_rn(1.0, a), y));
}

__device__ __forceinline__ float acc_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double acc_sqrt(double x) { return sqrt(x); }

// One 16-byte vector of elements; loads and stores through it compile to 128-bit accesses.
template <typename T>
struct alignas(kPackBytes) Pack {
  T v[kVec<T>];
};

template <typename T>
__device__ __forceinline__ Pack<T> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T>*>(p);
}
template <typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T>& x) {
  *reinterpret_cast<Pack<T>*>(p) = x;
}

__host__ __device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) % kPackBytes) == 0;
}

// One value of a GroupVec, converted to the accumulation dtype (as the CPU kernels' .to(acc)).
template <typename acc_t>
__device__ __forceinline__ acc_t load_group_value(const GroupVec& g, int64_t j) {
  switch (g.dtype) {
    case DType::kHalf:
      return static_cast<acc_t>(__half2float(static_cast<const __half*>(g.ptr)[j]));
    case DType::kBFloat16:
      return static_cast<acc_t>(__bfloat162float(static_cast<const __nv_bfloat16*>(g.ptr)[j]));
    case DType::kFloat:
      return static_cast<acc_t>(static_cast<const float*>(g.ptr)[j]);
    default:
      return static_cast<acc_t>(static_cast<const double*>(g.ptr)[j]);
  }
}

// Division of non-negative 64-bit indices by a fixed divisor d >= 1 with one high multiply:
// m = floor((2^64 - 1) / d) makes floor(i * m / 2^64) either i / d or i / d - 1, and one
// comparison corrects it. Avoids the ~70-instruction 64-bit division per element.
struct FastDiv {
  uint64_t d;
  uint64_t m;
};

inline FastDiv make_fast_div(int64_t d) {
  const uint64_t du = static_cast<uint64_t>(d);
  return FastDiv{du, UINT64_MAX / du};
}

__device__ __forceinline__ int64_t fast_div(const FastDiv& f, int64_t i) {
  const uint64_t iu = static_cast<uint64_t>(i);
  uint64_t q = __umul64hi(iu, f.m);
  if (iu - q * f.d >= f.d) ++q;
  return static_cast<int64_t>(q);
}

// Walks the group index along increasing element indices: the division is done once for the
// first element of a run, then each later element only compares against the next boundary.
struct GroupCursor {
  int64_t j;     // group of the current element
  int64_t next;  // first element of group j + 1
  int64_t size;  // G

  __device__ __forceinline__ GroupCursor(int64_t i, const FastDiv& g)
      : size(static_cast<int64_t>(g.d)) {
    j = fast_div(g, i);
    next = (j + 1) * size;
  }

  // Moves to element i (>= the previous one); true if the group changed.
  __device__ __forceinline__ bool advance(int64_t i) {
    if (i < next) return false;
    do {
      ++j;
      next += size;
    } while (i >= next);
    return true;
  }
};

// Computes o[k] = op(x[k], value of the group of element i0 + k) for the `count` elements of a
// run starting at i0. value(j) is evaluated once when the run lies in one group (the common case:
// G >= the pack width and no boundary inside the run); a run that crosses a boundary
// re-evaluates it, through `value_call`, at each group change.
template <int V, typename Value, typename ValueCall, typename Op, typename In, typename Out>
__device__ __forceinline__ void map_run(int64_t i0, int64_t count, const FastDiv& group,
                                        const Value& value, const ValueCall& value_call,
                                        const Op& op, const In& x, Out& o) {
  GroupCursor cur(i0, group);
  auto v = value(cur.j);
  if (count == V && i0 + V <= cur.next) {
#pragma unroll
    for (int k = 0; k < V; ++k) o.v[k] = op(x, k, v);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) {
      if (k < count) {
        if (cur.advance(i0 + k)) v = value_call(cur.j);
        o.v[k] = op(x, k, v);
      }
    }
  }
}

// Butterfly sum over aligned segments of `lanes` lanes (a power of two, at most 32): every lane
// of a segment ends with the same value (each pairwise add is commutative), added in a fixed
// order, so the result is reproducible. All 32 lanes of the warp must call it.
template <typename acc_t>
__device__ __forceinline__ acc_t segment_sum(acc_t v, int lanes) {
  for (int offset = lanes / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(kFullMask, v, offset);
  }
  return v;
}

template <int kLanes, typename acc_t>
__device__ __forceinline__ acc_t segment_sum(acc_t v) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(kFullMask, v, offset);
  }
  return v;
}

// Sum of one value per slot (held by each slot's leader thread), in slot order; the result is
// valid in thread 0. Every thread of the block must call it: it synchronises twice, leaving
// `smem` free for the next call.
template <typename acc_t>
__device__ __forceinline__ acc_t sum_slots(acc_t v, int slot, bool leader, int slots,
                                           acc_t* smem /* [slots] */) {
  if (leader) smem[slot] = v;
  __syncthreads();
  acc_t total = acc_t(0);
  if (threadIdx.x == 0) {
    for (int k = 0; k < slots; ++k) total += smem[k];
  }
  __syncthreads();
  return total;
}

// Sum over the whole block, in a fixed order; valid in thread 0. Every thread must call it.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum_to_thread0(acc_t v, acc_t* smem /* [kWarps] */) {
  v = segment_sum<kWarpSize>(v);
  const int lane = threadIdx.x % kWarpSize;
  return sum_slots(v, static_cast<int>(threadIdx.x / kWarpSize), lane == 0, kWarps, smem);
}

}  // namespace cuda
}  // namespace wgangp_fast
