// Host-only check of make_reduce_plan (csrc/cuda/launch.cuh), compiled by tests/test_cuda_build.py
// with nvcc and run on the CPU: no GPU needed. A GPU whose SM count reads 0 takes only
// single-block plans, so the multi-block and split-group plans need this check: for GPU-sized
// resident block counts and every group shape the kernels see, that a plan covers each element
// exactly once with chunks the vector loop can take, and stays within its workspace. Prints one line per
// violation and "checked N plans"; exits 1 on any violation.
#include <cstdio>
#include <cstdlib>

#include "../../../csrc/cuda/launch.cuh"

using wgangp_fast::cuda::ReducePlan;
namespace wc = wgangp_fast::cuda;

static int failures = 0;

#define EXPECT(cond)                                                                          \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      ++failures;                                                                             \
      std::printf("FAIL M=%lld G=%lld elem=%d total=%d resident=%lld: %s\n", (long long)m,    \
                  (long long)g, elem, (int)need_total, (long long)resident[2], #cond);        \
    }                                                                                         \
  } while (0)

static void check(int64_t m, int64_t g, int elem, bool need_total, const int64_t (&resident)[3]) {
  const ReducePlan p = wc::make_reduce_plan(m, g, elem, need_total, resident);
  const int64_t bytes = g * elem;
  const int want_worker = bytes <= wc::kSmallGroupBytes  ? wc::kSmallWorker
                          : bytes <= wc::kWarpGroupBytes ? wc::kWarpSize
                                                         : wc::kThreads;
  EXPECT(p.num_groups == m && p.group_size == g && p.worker == want_worker);
  EXPECT(p.grid >= 1 && p.grid <= p.tasks);
  // Rounds (tasks per block) are as few as the resident blocks allow, and equal for every block
  // but the last ones.
  const int64_t w = want_worker == wc::kSmallWorker ? 0 : want_worker == wc::kWarpSize ? 1 : 2;
  const int64_t blocks = resident[w] > 0 ? resident[w] : 1;
  const int64_t rounds = (p.tasks + p.grid - 1) / p.grid;
  EXPECT(rounds == (p.tasks + blocks - 1) / blocks);
  if (p.chunks_per_group > 1) {
    EXPECT(p.worker == wc::kThreads);
    const int64_t step = static_cast<int64_t>(wc::kThreads) * (wc::kPackBytes / elem);
    EXPECT(p.chunk % step == 0);                       // chunk starts keep the group's alignment
    EXPECT(p.chunk * p.chunks_per_group >= g);         // every element is in a chunk
    EXPECT(p.chunk * (p.chunks_per_group - 1) < g);    // and no chunk is empty
    EXPECT(p.tasks == m * p.chunks_per_group && p.workspace == p.tasks);
    EXPECT(p.tasks <= blocks);                         // one wave
    EXPECT(p.finish_lanes >= 1 && p.finish_lanes <= wc::kWarpSize &&
           (p.finish_lanes & (p.finish_lanes - 1)) == 0);
  } else {
    EXPECT(p.chunk == g && p.finish_lanes == 1);
    const int64_t workers = wc::kThreads / p.worker;
    EXPECT(p.groups_per_task >= 1 && p.groups_per_task % workers == 0);
    EXPECT(p.tasks * p.groups_per_task >= m && (p.tasks - 1) * p.groups_per_task < m);
    EXPECT(p.tasks <= wc::kMaxTasks || p.groups_per_task == workers);
    EXPECT(p.workspace == (need_total ? p.tasks : 0));
  }
}

int main() {
  // Resident blocks per worker width: one SM, an A100 (108 SMs) and an H100 (132 SMs) at 8
  // blocks an SM, and a huge count.
  const int64_t residents[][3] = {{1, 1, 1}, {864, 864, 864}, {1056, 1056, 1056},
                                  {1056, 1056, 528}, {1 << 20, 1 << 20, 1 << 20}};
  const int64_t groups[] = {1, 2, 3, 7, 64, 100, 1000, 5000, 65536, 1000003};
  const int64_t sizes[] = {1, 2, 7, 8, 150, 255, 256, 257, 500, 1023, 1024, 1025, 2048, 4097,
                           3 * 32 * 32, 65536, 3 * 256 * 256, 1 << 22, (1 << 22) + 13, 3 * 1024 * 1024};
  const int elems[] = {2, 4, 8};
  long checked = 0;
  for (const auto& r : residents) {
    for (int64_t m : groups) {
      for (int64_t g : sizes) {
        if (m * g > (int64_t{1} << 34)) continue;
        for (int elem : elems) {
          for (bool need_total : {false, true}) {
            check(m, g, elem, need_total, r);
            ++checked;
          }
        }
      }
    }
  }
  std::printf("checked %ld plans, %d failures\n", checked, failures);
  return failures == 0 ? 0 : 1;
}
