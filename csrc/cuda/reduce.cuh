// The deterministic per-group reduction shared by the penalty forward and the interpolate
// backward, parameterised by an Op that says what each element contributes (and writes).
//
// An Op provides:
//   acc_t, kVec, Frag           accumulation type, elements per pack, the registers of one pack
//   kLoads                      packs a lane loads before using any (memory-level parallelism
//                               against register pressure)
//   bool vec                    every pointer is 16-byte aligned: packs may be used
//   bool need_total             the groups' finish() values are summed too (mean/sum)
//   set_group(j)                the worker is about to reduce (part of) group j
//   load(i) / consume(frag, i)  one pack at element i (i % kVec == 0): load all of a lane's
//                               packs first, then consume them (sum of terms, outputs written)
//   scalar(i)                   the same for one element
//   finish(j, sum)              the sum over group j is complete; returns its share of the total
//   finish_total(total)         the sum of finish() over all groups
//
// Every sum is taken in an order fixed by the plan (lanes in index order, then a fixed tree),
// never by timing, and there are no floating-point atomics: repeated calls are bitwise equal.
#pragma once

#include "device.cuh"
#include "launch.cuh"

namespace wgangp_fast {
namespace cuda {

// This lane's share of sum_{i in [start, end)} term(i), for W lanes (8, a warp or the block).
// Elements before the first 16-byte boundary and after the last one are taken one at a time.
template <int W, typename Op>
__device__ __forceinline__ typename Op::acc_t range_sum(const Op& op, int64_t start, int64_t end,
                                                       int lane) {
  using acc_t = typename Op::acc_t;
  constexpr int V = Op::kVec;
  acc_t s = acc_t(0);
  if (op.vec) {
    const int64_t head_end = std::min(end, (start + V - 1) / V * V);
    if (lane < head_end - start) s += op.scalar(start + lane);
    const int64_t packs = (end - head_end) / V;
    // A lane's packs are p, p + W, ...: up to kLoads of them are loaded before any is used.
    constexpr int U = Op::kLoads;
    for (int64_t p = lane; p < packs; p += static_cast<int64_t>(U) * W) {
      typename Op::Frag frag[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (p + u * W < packs) frag[u] = op.load(head_end + (p + u * W) * V);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (p + u * W < packs) s += op.consume(frag[u], head_end + (p + u * W) * V);
      }
    }
    const int64_t tail = head_end + packs * V;
    if (lane < end - tail) s += op.scalar(tail + lane);
  } else {
    for (int64_t i = start + lane; i < end; i += W) s += op.scalar(i);
  }
  return s;
}

// The main pass. Task t is either chunk (t % C) of group (t / C), when the plan splits groups
// into C chunks (block workers only; the chunk's sum goes to workspace[t]), or the run of
// groups [t * groups_per_task, ...), reduced W threads per group (kThreads / W groups at a
// time) and finished on the spot; with need_total the task's finish() values are summed, in
// group order per worker then worker order, into workspace[t].
template <int W, typename Op>
__global__ void __launch_bounds__(kThreads)
    group_reduce_kernel(Op op, ReducePlan plan,
                        typename Op::acc_t* __restrict__ workspace /* [plan.workspace] */) {
  using acc_t = typename Op::acc_t;
  constexpr int kWorkers = kThreads / W;
  __shared__ acc_t smem[kWorkers > kWarps ? kWorkers : kWarps];
  const int tid = threadIdx.x;
  const int64_t G = plan.group_size;
  for (int64_t t = blockIdx.x; t < plan.tasks; t += gridDim.x) {
    if constexpr (W == kThreads) {
      if (plan.chunks_per_group > 1) {
        const int64_t j = t / plan.chunks_per_group;
        const int64_t c = t - j * plan.chunks_per_group;
        const int64_t start = j * G + c * plan.chunk;
        const int64_t end = std::min(start + plan.chunk, (j + 1) * G);
        op.set_group(j);
        const acc_t s = block_sum_to_thread0(range_sum<kThreads>(op, start, end, tid), smem);
        if (tid == 0) workspace[t] = s;
        continue;
      }
    }
    const int64_t j0 = t * plan.groups_per_task;
    const int64_t j1 = std::min(j0 + plan.groups_per_task, plan.num_groups);
    acc_t share = acc_t(0);
    if constexpr (W == kThreads) {
      for (int64_t j = j0; j < j1; ++j) {
        op.set_group(j);
        const acc_t part = range_sum<kThreads>(op, j * G, (j + 1) * G, tid);
        const acc_t s = block_sum_to_thread0(part, smem);
        if (tid == 0) share += op.finish(j, s);
      }
      if (op.need_total && tid == 0) workspace[t] = share;
    } else {
      const int worker = tid / W;
      const int lane = tid % W;
      // Every lane runs the same number of rounds, so the shuffles see the whole warp.
      for (int64_t base = j0; base < j1; base += kWorkers) {
        const int64_t j = base + worker;
        const bool active = j < j1;
        acc_t s = acc_t(0);
        if (active) {
          op.set_group(j);
          s = range_sum<W>(op, j * G, (j + 1) * G, lane);
        }
        s = segment_sum<W>(s);
        if (active && lane == 0) share += op.finish(j, s);
      }
      if (op.need_total) {
        const acc_t total = sum_slots(share, worker, lane == 0, kWorkers, smem);
        if (tid == 0) workspace[t] = total;
      }
    }
  }
}

// Second pass of a split plan, one block: plan.finish_lanes threads add up each group's chunk
// sums (in a fixed order), then finish the group; then the total, if needed, in group order per
// slot and slot order.
template <typename Op>
__global__ void __launch_bounds__(kThreads)
    finish_chunks_kernel(Op op, ReducePlan plan,
                         const typename Op::acc_t* __restrict__ workspace /* [M * C] */) {
  using acc_t = typename Op::acc_t;
  __shared__ acc_t smem[kThreads];
  const int lanes = plan.finish_lanes;
  const int slots = kThreads / lanes;
  const int slot = threadIdx.x / lanes;
  const int lane = threadIdx.x % lanes;
  const int64_t C = plan.chunks_per_group;
  acc_t share = acc_t(0);
  for (int64_t base = 0; base < plan.num_groups; base += slots) {
    const int64_t j = base + slot;
    const bool active = j < plan.num_groups;
    acc_t s = acc_t(0);
    if (active) {
      for (int64_t c = lane; c < C; c += lanes) s += workspace[j * C + c];
    }
    s = segment_sum(s, lanes);
    if (active && lane == 0) share += op.finish(j, s);
  }
  if (op.need_total) {
    const acc_t total = sum_slots(share, slot, lane == 0, slots, smem);
    if (threadIdx.x == 0) op.finish_total(total);
  }
}

// Second pass of an unsplit plan with need_total, one block: the tasks' partial totals, in a
// fixed order (thread k takes tasks k, k + 256, ...; then the block's tree).
template <typename Op>
__global__ void __launch_bounds__(kThreads)
    finish_total_kernel(Op op, int64_t tasks,
                        const typename Op::acc_t* __restrict__ workspace /* [tasks] */) {
  using acc_t = typename Op::acc_t;
  __shared__ acc_t smem[kWarps];
  acc_t s = acc_t(0);
#pragma unroll 8
  for (int64_t t = threadIdx.x; t < tasks; t += kThreads) s += workspace[t];
  const acc_t total = block_sum_to_thread0(s, smem);
  if (threadIdx.x == 0) op.finish_total(total);
}

template <int W, typename Op>
int64_t resident_blocks(int device) {
  static const int per_sm =
      blocks_per_sm(reinterpret_cast<const void*>(&group_reduce_kernel<W, Op>));
  return static_cast<int64_t>(per_sm) * sm_count(device);
}

template <typename Op>
ReducePlan plan_for(int64_t num_groups, int64_t group_size, bool need_total, int device) {
  const int64_t resident[3] = {resident_blocks<kSmallWorker, Op>(device),
                               resident_blocks<kWarpSize, Op>(device),
                               resident_blocks<kThreads, Op>(device)};
  return make_reduce_plan(num_groups, group_size, static_cast<int>(sizeof(typename Op::scalar_t)),
                          need_total, resident);
}

// Runs the plan: the main pass, then the second pass it needs (if any).
template <typename Op>
cudaError_t run_reduce(const Op& op, const ReducePlan& plan, void* workspace,
                       cudaStream_t stream) {
  using acc_t = typename Op::acc_t;
  acc_t* ws = static_cast<acc_t*>(workspace);
  if (plan.worker == kSmallWorker) {
    group_reduce_kernel<kSmallWorker, Op><<<plan.grid, kThreads, 0, stream>>>(op, plan, ws);
  } else if (plan.worker == kWarpSize) {
    group_reduce_kernel<kWarpSize, Op><<<plan.grid, kThreads, 0, stream>>>(op, plan, ws);
  } else {
    group_reduce_kernel<kThreads, Op><<<plan.grid, kThreads, 0, stream>>>(op, plan, ws);
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (plan.chunks_per_group > 1) {
    finish_chunks_kernel<Op><<<1, kThreads, 0, stream>>>(op, plan, ws);
    return cudaGetLastError();
  }
  if (op.need_total) {
    finish_total_kernel<Op><<<1, kThreads, 0, stream>>>(op, plan.tasks, ws);
    return cudaGetLastError();
  }
  return cudaSuccess;
}

}  // namespace cuda
}  // namespace wgangp_fast
