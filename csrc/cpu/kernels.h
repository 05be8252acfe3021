// CPU implementations of the wgangp_fast kernel ops (schemas in csrc/ops.cpp).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace wgangp_fast {
namespace cpu {

at::Tensor interpolate(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& alpha,
                       int64_t pac);

std::tuple<at::Tensor, at::Tensor, at::Tensor> interpolate_backward(const at::Tensor& grad,
                                                                    const at::Tensor& real,
                                                                    const at::Tensor& fake,
                                                                    const at::Tensor& alpha,
                                                                    int64_t pac);

std::tuple<at::Tensor, at::Tensor> penalty_forward(const at::Tensor& grads,
                                                   const std::optional<at::Tensor>& weight,
                                                   int64_t pac, double target, bool one_sided,
                                                   double eps, double input_scale,
                                                   int64_t reduction, double scale);

at::Tensor penalty_backward(const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_norms,
                            const at::Tensor& grads, const at::Tensor& norms,
                            const std::optional<at::Tensor>& weight, int64_t pac, double target,
                            bool one_sided, double input_scale, int64_t reduction, double scale);

}  // namespace cpu
}  // namespace wgangp_fast
