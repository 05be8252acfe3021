// CPU kernels of interpolate: x = alpha * real + (1 - alpha) * fake, alpha per group of pac samples.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include "../common/geometry.h"
#include "kernels.h"
#include "loops.h"

namespace wgangp_fast {
namespace cpu {

namespace {

void check_pair(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& alpha) {
  check_interpolate_args(real, fake, alpha);
  TORCH_CHECK(real.device().is_cpu() && fake.device().is_cpu() && alpha.device().is_cpu(),
              "wgangp_fast: the CPU kernels take CPU tensors");
}

}  // namespace

at::Tensor interpolate(const at::Tensor& real_in, const at::Tensor& fake_in,
                       const at::Tensor& alpha_in, int64_t pac) {
  check_pair(real_in, fake_in, alpha_in);
  const Groups g = group_geometry(real_in, pac, "real");
  check_vector(alpha_in, g.num_groups, "alpha");
  const at::Tensor real = real_in.contiguous();
  const at::Tensor fake = fake_in.contiguous();
  const at::Tensor alpha = alpha_in.contiguous();
  at::Tensor out = at::empty_like(real, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real.scalar_type(), "interpolate", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* r = real.const_data_ptr<scalar_t>();
    const scalar_t* f = fake.const_data_ptr<scalar_t>();
    const acc_t* a = alpha.const_data_ptr<acc_t>();
    scalar_t* x = out.mutable_data_ptr<scalar_t>();
    for_each_group_run(g.numel, g.group_size, [&](int64_t j, int64_t b, int64_t e) {
      const acc_t aj = a[j];
      const acc_t bj = acc_t(1) - aj;
      // Same operation order as the eager `alpha * real + (1 - alpha) * fake`, so float32 and
      // float64 results are bitwise those of the code this replaces.
      for (int64_t i = b; i < e; ++i) {
        const acc_t t = aj * static_cast<acc_t>(r[i]);
        const acc_t u = bj * static_cast<acc_t>(f[i]);
        x[i] = static_cast<scalar_t>(t + u);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> interpolate_backward(const at::Tensor& grad_in,
                                                                    const at::Tensor& real_in,
                                                                    const at::Tensor& fake_in,
                                                                    const at::Tensor& alpha_in,
                                                                    int64_t pac) {
  check_pair(real_in, fake_in, alpha_in);
  TORCH_CHECK(grad_in.sizes() == real_in.sizes() && grad_in.scalar_type() == real_in.scalar_type(),
              "wgangp_fast: grad must match real in shape and dtype");
  const Groups g = group_geometry(real_in, pac, "real");
  check_vector(alpha_in, g.num_groups, "alpha");
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor real = real_in.contiguous();
  const at::Tensor fake = fake_in.contiguous();
  const at::Tensor alpha = alpha_in.contiguous();
  at::Tensor d_real = at::empty_like(real, at::MemoryFormat::Contiguous);
  at::Tensor d_fake = at::empty_like(real, at::MemoryFormat::Contiguous);
  at::Tensor d_alpha = at::empty({g.num_groups}, alpha.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, real.scalar_type(), "interpolate_backward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const scalar_t* gp = grad.const_data_ptr<scalar_t>();
        const scalar_t* r = real.const_data_ptr<scalar_t>();
        const scalar_t* f = fake.const_data_ptr<scalar_t>();
        const acc_t* a = alpha.const_data_ptr<acc_t>();
        scalar_t* dr = d_real.mutable_data_ptr<scalar_t>();
        scalar_t* df = d_fake.mutable_data_ptr<scalar_t>();
        for_each_group_run(g.numel, g.group_size, [&](int64_t j, int64_t b, int64_t e) {
          const acc_t aj = a[j];
          const acc_t bj = acc_t(1) - aj;
          for (int64_t i = b; i < e; ++i) {
            const acc_t gi = static_cast<acc_t>(gp[i]);
            dr[i] = static_cast<scalar_t>(aj * gi);
            df[i] = static_cast<scalar_t>(bj * gi);
          }
        });
        group_sums<acc_t>(g.num_groups, g.group_size, d_alpha.mutable_data_ptr<acc_t>(),
                          [&](int64_t i) {
                            return (static_cast<acc_t>(r[i]) - static_cast<acc_t>(f[i])) *
                                   static_cast<acc_t>(gp[i]);
                          });
      });
  return {d_real, d_fake, d_alpha};
}

}  // namespace cpu
}  // namespace wgangp_fast
