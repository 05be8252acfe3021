// Loop shapes shared by the CPU kernels: a per-group elementwise map and a deterministic per-group
// reduction. Both split work on fixed boundaries, never on the thread count, so results are
// bitwise the same for any number of threads.
#pragma once

#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace wgangp_fast {
namespace cpu {

// Elements per reduction chunk: a group larger than this is summed in pieces whose partial sums
// are then added in order, so one huge group (one large image) still uses every core.
constexpr int64_t kChunk = 1 << 14;
// Elements per parallel_for grain for elementwise loops.
constexpr int64_t kGrain = 1 << 15;
// Independent accumulators per reduction: breaks the add dependency chain so the compiler can
// vectorise without reassociating (no -ffast-math), and fixes the summation order.
constexpr int kLanes = 16;

// Calls body(group, begin, end) for every run of elements [begin, end) that lies in one group,
// over all `numel` elements, in parallel.
template <typename F>
void for_each_group_run(int64_t numel, int64_t group_size, const F& body) {
  torch::stable::parallel_for(0, numel, kGrain, [&](int64_t b, int64_t e) {
    int64_t i = b;
    while (i < e) {
      const int64_t j = i / group_size;
      const int64_t stop = std::min(e, (j + 1) * group_size);
      body(j, i, stop);
      i = stop;
    }
  });
}

// Sum over i in [0, n) of term(i), lanes first then the tail, in a fixed order.
template <typename acc_t, typename Term>
acc_t lane_sum(int64_t n, const Term& term) {
  acc_t lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) lane[k] += term(i + k);
  }
  acc_t total = 0;
  for (int k = 0; k < kLanes; ++k) total += lane[k];
  for (; i < n; ++i) total += term(i);
  return total;
}

// out[j] = sum over the elements of group j of term(global_index), for M groups of G elements.
// Groups longer than kChunk are split into chunks reduced in parallel, then added in order.
template <typename acc_t, typename Term>
void group_sums(int64_t num_groups, int64_t group_size, acc_t* out, const Term& term) {
  const int64_t chunks = (group_size + kChunk - 1) / kChunk;
  const int64_t chunk_len = std::min(group_size, kChunk);
  const int64_t tasks = num_groups * chunks;
  const int64_t grain = std::max<int64_t>(1, kGrain / chunk_len);
  std::vector<acc_t> partial(chunks > 1 ? tasks : 0);
  torch::stable::parallel_for(0, tasks, grain, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t j = t / chunks;
      const int64_t c = t % chunks;
      const int64_t start = j * group_size + c * kChunk;
      const int64_t len = std::min(kChunk, group_size - c * kChunk);
      const acc_t s = lane_sum<acc_t>(len, [&](int64_t i) { return term(start + i); });
      if (chunks > 1) {
        partial[t] = s;
      } else {
        out[j] = s;
      }
    }
  });
  if (chunks > 1) {
    for (int64_t j = 0; j < num_groups; ++j) {
      acc_t s = 0;
      for (int64_t c = 0; c < chunks; ++c) s += partial[j * chunks + c];
      out[j] = s;
    }
  }
}

}  // namespace cpu
}  // namespace wgangp_fast
