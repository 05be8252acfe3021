// What the host code of both extensions uses of torch: the LibTorch stable ABI only (torch/csrc/
// stable, torch/headeronly), built with TORCH_TARGET_VERSION = 2.10 (setup.py), so one binary
// loads under every torch from 2.10 on. Tensors are torch::stable::Tensor (an owning handle);
// allocation and copies are dispatcher calls through the C shim; nothing here links against
// torch's C++ symbols, whose names change from release to release.
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

// The check of a C shim call's status. torch 2.14's headers have STABLE_TORCH_ERROR_CODE_CHECK,
// whose exception carries the failed call's own message (an out-of-memory text, say); torch
// 2.11's have only the header-only TORCH_ERROR_CODE_CHECK, which names the call. Take the first
// where the headers define it, so that the sources also build against torch 2.11's headers (the
// lent GPU machines' torch, where `make gpu-check` builds them when no wheel is carried):
// scripts/test_torch211.sh (`make test-torch211`) builds and tests them so.
#ifndef STABLE_TORCH_ERROR_CODE_CHECK
#define STABLE_TORCH_ERROR_CODE_CHECK(call) TORCH_ERROR_CODE_CHECK(call)
#endif

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace wgangp_fast {

using Tensor = torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;

// Error messages are built from strings only. Integers go through std::to_string, never through
// `ostream << int64_t` (which STD_TORCH_CHECK uses, for __LINE__ too): an extension that carries
// its own copy of libstdc++'s stream code loses integers formatted through it, or crashes there
// (a CUDA build did, in std::ostream::_M_insert<long>), while strings format fine.
// tests/ops/test_error_messages_native.py builds such an extension (-static-libstdc++) to hold
// these checks to it. The exception is a std::runtime_error, which reaches Python as a
// RuntimeError carrying exactly this message.
inline std::string text(const char* s) { return s; }
inline std::string text(const std::string& s) { return s; }
inline std::string text(int64_t v) { return std::to_string(v); }
inline std::string text(int v) { return std::to_string(v); }

inline std::string text(ScalarType t) {
  switch (t) {
    case ScalarType::Half:
      return "float16";
    case ScalarType::BFloat16:
      return "bfloat16";
    case ScalarType::Float:
      return "float32";
    case ScalarType::Double:
      return "float64";
    default:
      return "a non-floating dtype (ScalarType " + std::to_string(static_cast<int>(t)) + ")";
  }
}

template <typename... Parts>
std::string message(const Parts&... parts) {
  std::string out = "wgangp_fast: ";
  ((out += text(parts)), ...);
  return out;
}

#define WGF_CHECK(cond, ...)                                       \
  do {                                                             \
    if (!(cond)) {                                                 \
      throw std::runtime_error(::wgangp_fast::message(__VA_ARGS__)); \
    }                                                              \
  } while (0)

// The accumulation dtype: float64 for float64, float32 for every other floating dtype.
inline ScalarType acc_scalar_type(ScalarType t) {
  return t == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
}

inline bool is_kernel_dtype(ScalarType t) {
  return t == ScalarType::Half || t == ScalarType::BFloat16 || t == ScalarType::Float ||
         t == ScalarType::Double;
}

template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};
template <typename T>
using acc_t = typename Acc<T>::type;

// Calls body(T{}) with T the C++ type of `t` (c10::Half, c10::BFloat16, float or double).
template <typename Body>
void dispatch_floating(ScalarType t, const char* name, const Body& body) {
  switch (t) {
    case ScalarType::Half:
      body(c10::Half{});
      return;
    case ScalarType::BFloat16:
      body(c10::BFloat16{});
      return;
    case ScalarType::Float:
      body(float{});
      return;
    case ScalarType::Double:
      body(double{});
      return;
    default:
      WGF_CHECK(false, name, " must be float16, bfloat16, float32 or float64, got ", t);
  }
}

// t itself when already contiguous: the stable `contiguous` is a boxed dispatcher call even then.
inline Tensor flat(const Tensor& t) {
  return t.is_contiguous() ? t : torch::stable::contiguous(t);
}

// t in dtype `dtype`, contiguous (t itself when it already is both).
inline Tensor flat_as(const Tensor& t, ScalarType dtype) {
  const Tensor c = t.scalar_type() == dtype ? t : torch::stable::to(t, dtype);
  return flat(c);
}

// A new contiguous tensor of `sizes` in `dtype` on `like`'s device. Through the C shim's
// aoti_torch_empty_strided (one direct call) rather than torch::stable::empty (a boxed dispatcher
// call that looks aten::empty up by name): about a microsecond less per output, which is a tenth
// of a small batch's whole kernel call (benchmarks/host_overhead.py).
inline Tensor alloc(torch::headeronly::IntHeaderOnlyArrayRef sizes, ScalarType dtype,
                    const Tensor& like) {
  constexpr size_t kMaxDims = 16;
  const size_t dims = sizes.size();
  WGF_CHECK(dims <= kMaxDims, "tensors of at most 16 dimensions, got ",
            static_cast<int64_t>(dims));
  int64_t strides[kMaxDims];
  int64_t stride = 1;
  for (size_t d = dims; d-- > 0;) {
    strides[d] = stride;
    stride *= sizes[d] > 1 ? sizes[d] : 1;
  }
  int32_t device_type = 0;
  int32_t device_index = 0;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_type(like.get(), &device_type));
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_index(like.get(), &device_index));
  const int32_t code =
      torch::stable::detail::to<int32_t>(torch::stable::detail::from(dtype));
  AtenTensorHandle handle = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_empty_strided(static_cast<int64_t>(dims), sizes.data(),
                                                         strides, code, device_type, device_index,
                                                         &handle));
  return Tensor(handle);
}

// A new contiguous tensor of like's shape, dtype and device.
inline Tensor alloc_like(const Tensor& like) {
  return alloc(like.sizes(), like.scalar_type(), like);
}

inline bool present(const std::optional<Tensor>& t) { return t.has_value() && t->defined(); }

}  // namespace wgangp_fast
