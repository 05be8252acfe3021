// Autograd for the compiled kernel ops, in C++.
//
// The Autograd dispatch key of interpolate_kernel and penalty_forward_kernel gets a
// torch::autograd::Function, so an eager call on the cpu or cuda backend records one C++ node and
// its backward runs without entering Python: at small batches the host cost of each call is the
// whole cost (benchmarks/host_overhead.py). The formulas are those of the registered ops in
// wgangp_fast/ops/ (interpolation.py, penalty.py), which the triton and reference backends and
// torch.compile use.
//
// The first-order backward calls the backward kernel op. With grad mode on (create_graph=True),
// it goes through the dispatcher, where wgangp_fast/ops/ registers the second-order autograd
// of the backward kernel ops (the chain rule in differentiable ATen ops, not on a hot path);
// otherwise it skips the Autograd key and runs the kernel directly.
#include <ATen/TensorOperators.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "common/penalty_math.h"

namespace wgangp_fast {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

const c10::TypedOperatorHandle<Tensor(const Tensor&, const Tensor&, const Tensor&, int64_t)>&
interpolate_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("wgangp_fast::interpolate_kernel", "")
                             .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, int64_t)>();
  return op;
}

using InterpolateBackwardSig = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&,
                                                                  const Tensor&, const Tensor&,
                                                                  int64_t);
const c10::TypedOperatorHandle<InterpolateBackwardSig>& interpolate_backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("wgangp_fast::interpolate_backward_kernel", "")
                             .typed<InterpolateBackwardSig>();
  return op;
}

using PenaltyForwardSig = std::tuple<Tensor, Tensor>(const Tensor&, const std::optional<Tensor>&,
                                                     int64_t, double, bool, double, double,
                                                     int64_t, double);
const c10::TypedOperatorHandle<PenaltyForwardSig>& penalty_forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("wgangp_fast::penalty_forward_kernel", "")
                             .typed<PenaltyForwardSig>();
  return op;
}

using PenaltyBackwardSig = Tensor(const Tensor&, const std::optional<Tensor>&, const Tensor&,
                                  const Tensor&, const std::optional<Tensor>&, int64_t, double,
                                  bool, double, int64_t, double);
const c10::TypedOperatorHandle<PenaltyBackwardSig>& penalty_backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("wgangp_fast::penalty_backward_kernel", "")
                             .typed<PenaltyBackwardSig>();
  return op;
}

std::optional<Tensor> optional(const Tensor& t) {
  return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
}

// Calls a backward kernel op from a first-order backward: through the Autograd key only when a
// graph is being built of it (create_graph=True).
template <typename Sig, typename... Args>
auto call_backward(const c10::TypedOperatorHandle<Sig>& op, Args&&... args) {
  if (at::GradMode::is_enabled()) {
    return op.call(std::forward<Args>(args)...);
  }
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(std::forward<Args>(args)...);
}

// The node's name, as a graph shows it (grad_fn.name()), reads like the Python paths' nodes.
struct wgangp_fast_interpolate : public torch::autograd::Function<wgangp_fast_interpolate> {
  static Tensor forward(AutogradContext* ctx, const Tensor& real, const Tensor& fake,
                        const Tensor& alpha, int64_t pac) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    Tensor x = interpolate_op().call(real, fake, alpha, pac);
    ctx->save_for_backward({real, fake, alpha});
    ctx->saved_data["pac"] = pac;
    return x;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const int64_t pac = ctx->saved_data["pac"].toInt();
    auto [d_real, d_fake, d_alpha] = call_backward(
        interpolate_backward_op(), grad_outputs[0].contiguous(), saved[0], saved[1], saved[2], pac);
    return {ctx->needs_input_grad(0) ? d_real : Tensor(),
            ctx->needs_input_grad(1) ? d_fake : Tensor(),
            ctx->needs_input_grad(2) ? d_alpha : Tensor(), Tensor()};
  }
};

struct wgangp_fast_gradient_norm_penalty
    : public torch::autograd::Function<wgangp_fast_gradient_norm_penalty> {
  static variable_list forward(AutogradContext* ctx, const Tensor& grads,
                               const std::optional<Tensor>& weight, int64_t pac, double target,
                               bool one_sided, double eps, double input_scale, int64_t reduction,
                               double scale) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [out, norms] = penalty_forward_op().call(grads, weight, pac, target, one_sided, eps,
                                                  input_scale, reduction, scale);
    ctx->save_for_backward({grads, weight.value_or(Tensor()), norms});
    ctx->saved_data["pac"] = pac;
    ctx->saved_data["target"] = target;
    ctx->saved_data["one_sided"] = one_sided;
    ctx->saved_data["input_scale"] = input_scale;
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["scale"] = scale;
    ctx->set_materialize_grads(false);
    return {out, norms};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list result(9);
    Tensor g_out = grad_outputs[0];
    const Tensor& g_norms = grad_outputs[1];
    if (!g_out.defined() && !g_norms.defined()) {
      return result;
    }
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &grads = saved[0], &weight = saved[1], &norms = saved[2];
    const int64_t pac = ctx->saved_data["pac"].toInt();
    const double target = ctx->saved_data["target"].toDouble();
    const bool one_sided = ctx->saved_data["one_sided"].toBool();
    const double input_scale = ctx->saved_data["input_scale"].toDouble();
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    const double scale = ctx->saved_data["scale"].toDouble();
    const int64_t m = norms.size(0);
    if (!g_out.defined()) {
      g_out = reduction == kNone ? grads.new_zeros({m}) : grads.new_zeros({});
    }
    // needs_input_grad counts the tensor inputs that were given: grads is 0 and weight, when
    // given, 1. The result has one entry per forward argument.
    if (ctx->needs_input_grad(0)) {
      result[0] = call_backward(penalty_backward_op(), g_out, optional(g_norms), grads, norms,
                                optional(weight), pac, target, one_sided, input_scale, reduction,
                                scale);
    }
    if (weight.defined() && ctx->needs_input_grad(1)) {
      // d phi_j / d w_j = u_j^2, in the same operation order as ops/penalty.py's formula.
      Tensor u = norms - target;
      if (one_sided) {
        u = u.clamp_min(0);
      }
      const double factor = reduction == kMean ? 1.0 / static_cast<double>(m) : 1.0;
      const Tensor g_phi = g_out.to(norms.scalar_type()) * (scale * factor);
      result[1] = (g_phi * u * u).to(weight.scalar_type()).reshape(weight.sizes());
    }
    return result;
  }
};

// Whether autograd would record a call with these inputs. Where it would not (grad mode off, as
// in a first-order backward, or no input requiring grad, as for interpolate on data), the kernel
// runs bare: Function::apply builds a node even then, a microsecond or two per call.
bool records(std::initializer_list<const Tensor*> inputs) {
  if (!at::GradMode::is_enabled()) {
    return false;
  }
  for (const Tensor* t : inputs) {
    if (t->defined() && t->requires_grad()) {
      return true;
    }
  }
  return false;
}

Tensor interpolate_autograd(const Tensor& real, const Tensor& fake, const Tensor& alpha,
                            int64_t pac) {
  if (!records({&real, &fake, &alpha})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return interpolate_op().call(real, fake, alpha, pac);
  }
  return wgangp_fast_interpolate::apply(real, fake, alpha, pac);
}

std::tuple<Tensor, Tensor> penalty_forward_autograd(const Tensor& grads,
                                                    const std::optional<Tensor>& weight,
                                                    int64_t pac, double target, bool one_sided,
                                                    double eps, double input_scale,
                                                    int64_t reduction, double scale) {
  const Tensor none;
  if (!records({&grads, weight.has_value() ? &*weight : &none})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return penalty_forward_op().call(grads, weight, pac, target, one_sided, eps, input_scale,
                                     reduction, scale);
  }
  variable_list out = wgangp_fast_gradient_norm_penalty::apply(
      grads, weight, pac, target, one_sided, eps, input_scale, reduction, scale);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace wgangp_fast

TORCH_LIBRARY_IMPL(wgangp_fast, Autograd, m) {
  m.impl("interpolate_kernel", &wgangp_fast::interpolate_autograd);
  m.impl("penalty_forward_kernel", &wgangp_fast::penalty_forward_autograd);
}
