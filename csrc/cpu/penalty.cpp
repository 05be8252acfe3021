// CPU kernels of gradient_norm_penalty: per-group norms and penalty (forward), and the per-group
// rescaling of the gradients (backward). One read of `grads` forward, one read and one write back.
#include <cmath>
#include <vector>

#include "../common/geometry.h"
#include "../common/penalty_math.h"
#include "kernels.h"
#include "loops.h"

namespace wgangp_fast {
namespace cpu {

namespace {

void check_cpu(const Tensor& t, const char* name) {
  WGF_CHECK(t.is_cpu(), "the CPU kernels take CPU tensors, got ", name, " on another device");
}

// An optional [M] vector as a contiguous tensor in the accumulation dtype `acc`.
std::optional<Tensor> group_vector(const std::optional<Tensor>& t, int64_t m, ScalarType acc,
                                   const char* name) {
  if (!present(t)) return std::nullopt;
  check_vector(*t, m, name);
  check_cpu(*t, name);
  return flat_as(*t, acc);
}

}  // namespace

std::tuple<Tensor, Tensor> penalty_forward(const Tensor& grads_in,
                                           const std::optional<Tensor>& weight_in, int64_t pac,
                                           double target, bool one_sided, double eps,
                                           double input_scale, int64_t reduction, double scale) {
  check_cpu(grads_in, "grads");
  const Groups g = check_penalty_args(grads_in, pac, reduction);
  const Tensor grads = flat(grads_in);
  const ScalarType acc_type = acc_scalar_type(grads.scalar_type());
  const std::optional<Tensor> weight = group_vector(weight_in, g.num_groups, acc_type, "weight");
  Tensor norms = alloc({g.num_groups}, acc_type, grads);
  Tensor out = reduction == kNone ? alloc({g.num_groups}, grads.scalar_type(), grads)
                                  : alloc({}, grads.scalar_type(), grads);
  dispatch_floating(grads.scalar_type(), "grads", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc = acc_t<scalar_t>;
    const scalar_t* v = grads.const_data_ptr<scalar_t>();
    const acc s = static_cast<acc>(input_scale);
    acc* n = norms.mutable_data_ptr<acc>();
    group_sums<acc>(g.num_groups, g.group_size, n, [&](int64_t i) {
      const acc x = s * static_cast<acc>(v[i]);
      return x * x;
    });
    const acc* w = weight ? weight->const_data_ptr<acc>() : nullptr;
    const acc t = static_cast<acc>(target);
    const acc sc = static_cast<acc>(scale);
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    acc total = 0;
    for (int64_t j = 0; j < g.num_groups; ++j) {
      n[j] = std::sqrt(n[j] + static_cast<acc>(eps));
      const acc phi = group_penalty<acc>(n[j], t, one_sided, w ? w[j] : acc(1));
      if (reduction == kNone) {
        o[j] = static_cast<scalar_t>(sc * phi);
      } else {
        total += phi;
      }
    }
    if (reduction != kNone) {
      o[0] = static_cast<scalar_t>(sc * total * reduction_factor<acc>(reduction, g.num_groups));
    }
  });
  return {out, norms};
}

Tensor penalty_backward(const Tensor& grad_out_in, const std::optional<Tensor>& grad_norms_in,
                        const Tensor& grads_in, const Tensor& norms_in,
                        const std::optional<Tensor>& weight_in, int64_t pac, double target,
                        bool one_sided, double input_scale, int64_t reduction, double scale) {
  check_cpu(grads_in, "grads");
  check_cpu(grad_out_in, "grad_out");
  check_cpu(norms_in, "norms");
  const Groups g = check_penalty_backward_args(grad_out_in, grads_in, norms_in, pac, reduction);
  const ScalarType acc_type = acc_scalar_type(grads_in.scalar_type());
  const Tensor grads = flat(grads_in);
  const Tensor norms = flat_as(norms_in, acc_type);
  const Tensor grad_out = flat_as(grad_out_in, acc_type);
  const std::optional<Tensor> weight = group_vector(weight_in, g.num_groups, acc_type, "weight");
  const std::optional<Tensor> grad_norms =
      group_vector(grad_norms_in, g.num_groups, acc_type, "grad_norms");
  Tensor d_grads = alloc_like(grads);
  dispatch_floating(grads.scalar_type(), "grads", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc = acc_t<scalar_t>;
    const acc* n = norms.const_data_ptr<acc>();
    const acc* go = grad_out.const_data_ptr<acc>();
    const acc* gn = grad_norms ? grad_norms->const_data_ptr<acc>() : nullptr;
    const acc* w = weight ? weight->const_data_ptr<acc>() : nullptr;
    const acc s = static_cast<acc>(input_scale);
    const acc r = static_cast<acc>(scale) * reduction_factor<acc>(reduction, g.num_groups);
    std::vector<acc> coef(g.num_groups);
    for (int64_t j = 0; j < g.num_groups; ++j) {
      const acc g_phi = r * (reduction == kNone ? go[j] : go[0]);
      coef[j] = penalty_backward_coef<acc>(g_phi, gn ? gn[j] : acc(0), n[j],
                                           static_cast<acc>(target), one_sided,
                                           w ? w[j] : acc(1), s * s);
    }
    const scalar_t* v = grads.const_data_ptr<scalar_t>();
    scalar_t* dv = d_grads.mutable_data_ptr<scalar_t>();
    for_each_group_run(g.numel, g.group_size, [&](int64_t j, int64_t b, int64_t e) {
      const acc c = coef[j];
      for (int64_t i = b; i < e; ++i) dv[i] = static_cast<scalar_t>(c * static_cast<acc>(v[i]));
    });
  });
  return d_grads;
}

}  // namespace cpu
}  // namespace wgangp_fast
