// Every tile and launch choice of the CUDA kernels, in one place.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "device.cuh"
#include "kernels.cuh"

namespace wgangp_fast {
namespace cuda {

// Vector loads a lane issues before using any of them (memory-level parallelism).
constexpr int kUnroll = 4;
// Threads per group, by group size: up to kSmallGroupBytes (tabular data, pac * D of a few
// hundred elements) 8 lanes, so a warp keeps four groups in flight; up to kWarpGroupBytes a warp;
// larger groups a whole block, split into chunks over several blocks when there are too few
// groups to fill the GPU (one large image).
constexpr int kSmallWorker = 8;
constexpr int64_t kSmallGroupBytes = 1024;
constexpr int64_t kWarpGroupBytes = 4096;
// At most this many per-task partial sums for the finishing kernel (one block) to add up.
constexpr int64_t kMaxTasks = 4096;
constexpr int kMaxDevices = 64;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A failed query must not leave its error behind for the launch check to report.
inline int query_or(cudaError_t err, int value, int fallback) {
  if (err != cudaSuccess || value < 1) {
    cudaGetLastError();
    return fallback;
  }
  return value;
}

inline int sm_count(int device) {
  static std::atomic<int> cache[kMaxDevices];
  const bool cached = device >= 0 && device < kMaxDevices;
  int value = cached ? cache[device].load(std::memory_order_relaxed) : 0;
  if (value == 0) {
    int sms = 0;
    // The query must run before `sms` is read: function arguments have no evaluation order, and
    // reading `sms` in the same call can read 0, which clamps every grid to one block.
    const cudaError_t err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    value = query_or(err, sms, 1);
    if (cached) cache[device].store(value, std::memory_order_relaxed);
  }
  return value;
}

// Blocks of kThreads threads of `kernel` that fit on one SM at once.
inline int blocks_per_sm(const void* kernel) {
  int blocks = 0;
  const cudaError_t err =
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, 0);
  return query_or(err, blocks, 1);
}

// Grid of a grid-stride elementwise kernel over `runs` runs of one pack each: one thread per
// run, at most one full wave of resident blocks.
inline int elementwise_grid(int64_t runs, int64_t resident_blocks) {
  const int64_t blocks = std::min(ceil_div(runs, kThreads), resident_blocks);
  return static_cast<int>(std::max<int64_t>(1, blocks));
}

// The plan of a per-group reduction over M groups of G elements of `elem_size` bytes.
// resident[w]: blocks of the kernel with worker width 8, 32, 256 (w = 0, 1, 2) that fit on the
// device at once.
inline ReducePlan make_reduce_plan(int64_t num_groups, int64_t group_size, int elem_size,
                                   bool need_total, const int64_t (&resident)[3]) {
  ReducePlan p{};
  p.num_groups = num_groups;
  p.group_size = group_size;
  const int64_t bytes = group_size * elem_size;
  const int w = bytes <= kSmallGroupBytes ? 0 : bytes <= kWarpGroupBytes ? 1 : 2;
  p.worker = w == 0 ? kSmallWorker : w == 1 ? kWarpSize : kThreads;
  const int64_t blocks = std::max<int64_t>(1, resident[w]);
  p.chunks_per_group = 1;
  p.chunk = group_size;
  p.finish_lanes = 1;
  if (p.worker == kThreads && 2 * num_groups <= blocks) {
    const int64_t step = static_cast<int64_t>(kThreads) * (kPackBytes / elem_size);
    // As many chunks as fit in one wave of blocks (a second, nearly empty wave would double the
    // time), each at least one unrolled step long.
    int64_t chunks = std::min(blocks / num_groups, ceil_div(group_size, step * kUnroll));
    if (chunks > 1) {
      const int64_t chunk = ceil_div(ceil_div(group_size, chunks), step) * step;
      chunks = ceil_div(group_size, chunk);
      if (chunks > 1) {
        p.chunks_per_group = chunks;
        p.chunk = chunk;
      }
    }
  }
  if (p.chunks_per_group > 1) {
    p.groups_per_task = 1;
    p.tasks = num_groups * p.chunks_per_group;
    p.workspace = p.tasks;
    // About four chunk sums per thread of the finishing block, at most a warp per group.
    while (p.finish_lanes < kWarpSize && p.finish_lanes * 4 < p.chunks_per_group) {
      p.finish_lanes *= 2;
    }
  } else {
    const int64_t workers = kThreads / p.worker;
    p.groups_per_task = workers * std::max<int64_t>(1, ceil_div(num_groups, workers * kMaxTasks));
    p.tasks = ceil_div(num_groups, p.groups_per_task);
    p.workspace = need_total ? p.tasks : 0;
  }
  // As few blocks as keep the number of rounds (tasks per block) minimal: every block then runs
  // the same number of tasks, and no last round runs with a handful of blocks.
  const int64_t rounds = ceil_div(p.tasks, blocks);
  p.grid = static_cast<int>(ceil_div(p.tasks, rounds));
  return p;
}

}  // namespace cuda
}  // namespace wgangp_fast
