// CPU kernels of interpolate: x = alpha * real + (1 - alpha) * fake, alpha per group of pac samples.
#include "../common/geometry.h"
#include "kernels.h"
#include "loops.h"

namespace wgangp_fast {
namespace cpu {

namespace {

void check_cpu(const Tensor& t, const char* name) {
  WGF_CHECK(t.is_cpu(), "the CPU kernels take CPU tensors, got ", name, " on another device");
}

void check_pair(const Tensor& real, const Tensor& fake, const Tensor& alpha) {
  check_interpolate_args(real, fake, alpha);
  check_cpu(real, "real");
  check_cpu(fake, "fake");
  check_cpu(alpha, "alpha");
}

}  // namespace

Tensor interpolate(const Tensor& real_in, const Tensor& fake_in, const Tensor& alpha_in,
                   int64_t pac) {
  check_pair(real_in, fake_in, alpha_in);
  const Groups g = group_geometry(real_in, pac, "real");
  check_vector(alpha_in, g.num_groups, "alpha");
  const Tensor real = flat(real_in);
  const Tensor fake = flat(fake_in);
  const Tensor alpha = flat(alpha_in);
  Tensor out = alloc_like(real);
  dispatch_floating(real.scalar_type(), "real", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc = acc_t<scalar_t>;
    const scalar_t* r = real.const_data_ptr<scalar_t>();
    const scalar_t* f = fake.const_data_ptr<scalar_t>();
    const acc* a = alpha.const_data_ptr<acc>();
    scalar_t* x = out.mutable_data_ptr<scalar_t>();
    for_each_group_run(g.numel, g.group_size, [&](int64_t j, int64_t b, int64_t e) {
      const acc aj = a[j];
      const acc bj = acc(1) - aj;
      // Same operation order as the eager `alpha * real + (1 - alpha) * fake`, so float32 and
      // float64 results are bitwise those of the code this replaces.
      for (int64_t i = b; i < e; ++i) {
        const acc t = aj * static_cast<acc>(r[i]);
        const acc u = bj * static_cast<acc>(f[i]);
        x[i] = static_cast<scalar_t>(t + u);
      }
    });
  });
  return out;
}

std::tuple<Tensor, Tensor, Tensor> interpolate_backward(const Tensor& grad_in,
                                                        const Tensor& real_in,
                                                        const Tensor& fake_in,
                                                        const Tensor& alpha_in, int64_t pac) {
  check_pair(real_in, fake_in, alpha_in);
  WGF_CHECK(grad_in.sizes().equals(real_in.sizes()) &&
                grad_in.scalar_type() == real_in.scalar_type(),
            "grad must match real in shape and dtype");
  check_cpu(grad_in, "grad");
  const Groups g = group_geometry(real_in, pac, "real");
  check_vector(alpha_in, g.num_groups, "alpha");
  const Tensor grad = flat(grad_in);
  const Tensor real = flat(real_in);
  const Tensor fake = flat(fake_in);
  const Tensor alpha = flat(alpha_in);
  Tensor d_real = alloc_like(real);
  Tensor d_fake = alloc_like(real);
  Tensor d_alpha = alloc({g.num_groups}, alpha.scalar_type(), alpha);
  dispatch_floating(real.scalar_type(), "real", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc = acc_t<scalar_t>;
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* r = real.const_data_ptr<scalar_t>();
    const scalar_t* f = fake.const_data_ptr<scalar_t>();
    const acc* a = alpha.const_data_ptr<acc>();
    scalar_t* dr = d_real.mutable_data_ptr<scalar_t>();
    scalar_t* df = d_fake.mutable_data_ptr<scalar_t>();
    for_each_group_run(g.numel, g.group_size, [&](int64_t j, int64_t b, int64_t e) {
      const acc aj = a[j];
      const acc bj = acc(1) - aj;
      for (int64_t i = b; i < e; ++i) {
        const acc gi = static_cast<acc>(gp[i]);
        dr[i] = static_cast<scalar_t>(aj * gi);
        df[i] = static_cast<scalar_t>(bj * gi);
      }
    });
    group_sums<acc>(g.num_groups, g.group_size, d_alpha.mutable_data_ptr<acc>(), [&](int64_t i) {
      return (static_cast<acc>(r[i]) - static_cast<acc>(f[i])) * static_cast<acc>(gp[i]);
    });
  });
  return {d_real, d_fake, d_alpha};
}

}  // namespace cpu
}  // namespace wgangp_fast
