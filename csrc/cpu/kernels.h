// CPU implementations of the wgangp_fast kernel ops (schemas in csrc/ops.cpp).
#pragma once

#include <cstdint>
#include <optional>
#include <tuple>

#include "../common/stable.h"

namespace wgangp_fast {
namespace cpu {

Tensor interpolate(const Tensor& real, const Tensor& fake, const Tensor& alpha, int64_t pac);

std::tuple<Tensor, Tensor, Tensor> interpolate_backward(const Tensor& grad, const Tensor& real,
                                                        const Tensor& fake, const Tensor& alpha,
                                                        int64_t pac);

std::tuple<Tensor, Tensor> penalty_forward(const Tensor& grads,
                                           const std::optional<Tensor>& weight, int64_t pac,
                                           double target, bool one_sided, double eps,
                                           double input_scale, int64_t reduction, double scale);

Tensor penalty_backward(const Tensor& grad_out, const std::optional<Tensor>& grad_norms,
                        const Tensor& grads, const Tensor& norms,
                        const std::optional<Tensor>& weight, int64_t pac, double target,
                        bool one_sided, double input_scale, int64_t reduction, double scale);

}  // namespace cpu
}  // namespace wgangp_fast
