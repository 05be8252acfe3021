// CPU kernels of gradient_norm_penalty: per-group norms and penalty (forward), and the per-group
// rescaling of the gradients (backward). One read of `grads` forward, one read and one write back.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <cmath>
#include <vector>

#include "../common/geometry.h"
#include "../common/penalty_math.h"
#include "kernels.h"
#include "loops.h"

namespace wgangp_fast {
namespace cpu {

namespace {

// weight as a contiguous [M] vector in the accumulation dtype, or an undefined tensor.
at::Tensor group_weight(const std::optional<at::Tensor>& weight, const at::Tensor& grads,
                        int64_t m) {
  if (!weight.has_value() || !weight->defined()) return at::Tensor();
  check_vector(*weight, m, "weight");
  TORCH_CHECK(weight->device().is_cpu(), "wgangp_fast: weight must be on the CPU");
  return weight->to(at::toOpMathType(grads.scalar_type())).contiguous();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> penalty_forward(const at::Tensor& grads_in,
                                                   const std::optional<at::Tensor>& weight_in,
                                                   int64_t pac, double target, bool one_sided,
                                                   double eps, double input_scale,
                                                   int64_t reduction, double scale) {
  TORCH_CHECK(grads_in.device().is_cpu(), "wgangp_fast: the CPU kernels take CPU tensors");
  const Groups g = check_penalty_args(grads_in, pac, reduction);
  const at::Tensor grads = grads_in.contiguous();
  const at::Tensor weight = group_weight(weight_in, grads, g.num_groups);
  const auto acc_type = at::toOpMathType(grads.scalar_type());
  at::Tensor norms = at::empty({g.num_groups}, grads.options().dtype(acc_type));
  at::Tensor out = reduction == kNone ? at::empty({g.num_groups}, grads.options())
                                      : at::empty({}, grads.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grads.scalar_type(), "penalty_forward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const scalar_t* v = grads.const_data_ptr<scalar_t>();
        const acc_t s = static_cast<acc_t>(input_scale);
        acc_t* n = norms.mutable_data_ptr<acc_t>();
        group_sums<acc_t>(g.num_groups, g.group_size, n, [&](int64_t i) {
          const acc_t x = s * static_cast<acc_t>(v[i]);
          return x * x;
        });
        const acc_t* w = weight.defined() ? weight.const_data_ptr<acc_t>() : nullptr;
        const acc_t t = static_cast<acc_t>(target);
        const acc_t sc = static_cast<acc_t>(scale);
        scalar_t* o = out.mutable_data_ptr<scalar_t>();
        acc_t total = 0;
        for (int64_t j = 0; j < g.num_groups; ++j) {
          n[j] = std::sqrt(n[j] + static_cast<acc_t>(eps));
          const acc_t phi = group_penalty<acc_t>(n[j], t, one_sided, w ? w[j] : acc_t(1));
          if (reduction == kNone) {
            o[j] = static_cast<scalar_t>(sc * phi);
          } else {
            total += phi;
          }
        }
        if (reduction != kNone) {
          o[0] = static_cast<scalar_t>(sc * total * reduction_factor<acc_t>(reduction, g.num_groups));
        }
      });
  return {out, norms};
}

at::Tensor penalty_backward(const at::Tensor& grad_out_in,
                            const std::optional<at::Tensor>& grad_norms_in,
                            const at::Tensor& grads_in, const at::Tensor& norms_in,
                            const std::optional<at::Tensor>& weight_in, int64_t pac,
                            double target, bool one_sided, double input_scale, int64_t reduction,
                            double scale) {
  TORCH_CHECK(grads_in.device().is_cpu(), "wgangp_fast: the CPU kernels take CPU tensors");
  const Groups g = check_penalty_backward_args(grad_out_in, grads_in, norms_in, pac, reduction);
  const auto acc_type = at::toOpMathType(grads_in.scalar_type());
  const at::Tensor grads = grads_in.contiguous();
  const at::Tensor norms = norms_in.to(acc_type).contiguous();
  const at::Tensor grad_out = grad_out_in.to(acc_type).contiguous();
  const at::Tensor weight = group_weight(weight_in, grads, g.num_groups);
  at::Tensor grad_norms;
  if (grad_norms_in.has_value() && grad_norms_in->defined()) {
    check_vector(*grad_norms_in, g.num_groups, "grad_norms");
    grad_norms = grad_norms_in->to(acc_type).contiguous();
  }
  at::Tensor d_grads = at::empty_like(grads, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grads.scalar_type(), "penalty_backward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const acc_t* n = norms.const_data_ptr<acc_t>();
        const acc_t* go = grad_out.const_data_ptr<acc_t>();
        const acc_t* gn = grad_norms.defined() ? grad_norms.const_data_ptr<acc_t>() : nullptr;
        const acc_t* w = weight.defined() ? weight.const_data_ptr<acc_t>() : nullptr;
        const acc_t s = static_cast<acc_t>(input_scale);
        const acc_t r = static_cast<acc_t>(scale) * reduction_factor<acc_t>(reduction, g.num_groups);
        std::vector<acc_t> coef(g.num_groups);
        for (int64_t j = 0; j < g.num_groups; ++j) {
          const acc_t g_phi = r * (reduction == kNone ? go[j] : go[0]);
          coef[j] = penalty_backward_coef<acc_t>(g_phi, gn ? gn[j] : acc_t(0), n[j],
                                                 static_cast<acc_t>(target), one_sided,
                                                 w ? w[j] : acc_t(1), s * s);
        }
        const scalar_t* v = grads.const_data_ptr<scalar_t>();
        scalar_t* dv = d_grads.mutable_data_ptr<scalar_t>();
        for_each_group_run(g.numel, g.group_size, [&](int64_t j, int64_t b, int64_t e) {
          const acc_t c = coef[j];
          for (int64_t i = b; i < e; ++i) dv[i] = static_cast<scalar_t>(c * static_cast<acc_t>(v[i]));
        });
      });
  return d_grads;
}

}  // namespace cpu
}  // namespace wgangp_fast
