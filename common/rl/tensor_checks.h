// Internal to common/rl: argument checks shared by the tensor functions, the valid-token gather/scatter that makes
// padded positions invisible, and the guard that turns LibTorch exceptions into absl::Status.
// Not part of the public API; include only from common/rl/*.cc.
#ifndef RLHF_COMMON_RL_TENSOR_CHECKS_H_
#define RLHF_COMMON_RL_TENSOR_CHECKS_H_

#include <cmath>
#include <cstdint>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>

#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace rlhf::rl::internal {

// "[2, 4]".
inline std::string ShapeString(c10::IntArrayRef sizes) {
  return absl::StrCat("[", absl::StrJoin(sizes.begin(), sizes.end(), ", "), "]");
}

// Prefixes a non-OK status with the function name ("ComputeGae: values has shape ...").
inline absl::Status WithContext(absl::string_view function, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(function, ": ", status.message()));
}

// Runs `body` (returning absl::Status or absl::StatusOr<T>): LibTorch exceptions become InternalError, and every
// error message is prefixed with `function`. Nothing escapes.
template <typename Body>
auto Guard(absl::string_view function, Body&& body) -> decltype(body()) {
  using Result = decltype(body());
  try {
    Result result = body();
    if (!result.ok()) {
      if constexpr (std::is_same_v<Result, absl::Status>) {
        return WithContext(function, result);
      } else {
        return WithContext(function, result.status());
      }
    }
    return result;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(function, ": LibTorch error: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(function, ": ", e.what()));
  }
}

inline absl::Status CheckFinite(double value, absl::string_view name) {
  if (!std::isfinite(value)) return absl::InvalidArgumentError(absl::StrCat(name, " must be finite, got ", value));
  return absl::OkStatus();
}

// `t` defined, floating point, of rank `rank`; `layout` names the expected shape in messages ("[batch, seq]").
inline absl::Status CheckFloatTensor(const at::Tensor& t, absl::string_view name, int64_t rank,
                                     absl::string_view layout) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(name, " is undefined; expected ", layout));
  if (!t.is_floating_point()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be a floating-point tensor, got dtype ", std::string(c10::toString(t.scalar_type()))));
  }
  if (t.dim() != rank) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be ", layout, ", got shape ", ShapeString(t.sizes())));
  }
  return absl::OkStatus();
}

inline absl::Status CheckSameDevice(const at::Tensor& t, absl::string_view name, const at::Tensor& ref,
                                    absl::string_view ref_name) {
  if (t.device() != ref.device()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " is on ", t.device().str(), " but ", ref_name, " is on ",
                                                   ref.device().str()));
  }
  return absl::OkStatus();
}

inline absl::Status CheckShape(const at::Tensor& t, absl::string_view name, c10::IntArrayRef expected,
                               absl::string_view expected_what) {
  if (t.sizes() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(name, " has shape ", ShapeString(t.sizes()), " but must be ",
                                                   ShapeString(expected), " (", expected_what, ")"));
  }
  return absl::OkStatus();
}

// A floating-point tensor shaped and placed like `ref` (already checked).
inline absl::Status CheckLike(const at::Tensor& t, absl::string_view name, const at::Tensor& ref,
                              absl::string_view ref_name) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(name, " is undefined"));
  if (!t.is_floating_point()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be a floating-point tensor, got dtype ", std::string(c10::toString(t.scalar_type()))));
  }
  if (absl::Status s = CheckShape(t, name, ref.sizes(), absl::StrCat("the shape of ", ref_name)); !s.ok()) return s;
  return CheckSameDevice(t, name, ref, ref_name);
}

// Validates a mask of valid positions (bool, or any numeric dtype holding only 0 and 1) of shape `expected` on
// `device`, and returns it as bool.
inline absl::StatusOr<at::Tensor> BoolMask(const at::Tensor& mask, absl::string_view name, c10::IntArrayRef expected,
                                           absl::string_view expected_what, const at::Tensor& ref,
                                           absl::string_view ref_name) {
  if (!mask.defined()) return absl::InvalidArgumentError(absl::StrCat(name, " is undefined"));
  if (absl::Status s = CheckShape(mask, name, expected, expected_what); !s.ok()) return s;
  if (absl::Status s = CheckSameDevice(mask, name, ref, ref_name); !s.ok()) return s;
  if (mask.scalar_type() == at::kBool) return mask;
  if (mask.is_complex()) return absl::InvalidArgumentError(absl::StrCat(name, " must be bool or real 0/1"));
  const at::Tensor bad = mask.ne(0).logical_and(mask.ne(1));
  if (bad.any().item<bool>()) {
    const int64_t flat = bad.reshape(-1).nonzero().select(1, 0)[0].item<int64_t>();
    return absl::InvalidArgumentError(absl::StrCat(name, " must hold only 0 and 1 (or be bool); element ", flat,
                                                   " (flat index) is ",
                                                   mask.reshape(-1)[flat].item<double>()));
  }
  return mask.ne(0);
}

// Flat int64 indices [n_valid] of the true entries of a bool mask, on the mask's device.
inline at::Tensor ValidIndex(const at::Tensor& bool_mask) { return bool_mask.reshape(-1).nonzero().select(1, 0); }

// The valid entries of `x` (same number of elements as the mask) as a flat [n_valid] tensor. Padded entries are
// never read, so they may hold anything (even NaN or inf), and receive exactly zero gradient.
inline at::Tensor SelectValid(const at::Tensor& x, const at::Tensor& index) {
  return x.reshape(-1).index_select(0, index);
}

// A tensor of shape `sizes` that is `values` [n_valid] at `index` and `fill` (a tensor of that shape) elsewhere;
// differentiable with respect to `values`.
inline at::Tensor ScatterValid(const at::Tensor& values, const at::Tensor& index, const at::Tensor& fill) {
  return fill.reshape(-1).to(values.scalar_type()).index_copy(0, index, values).view(fill.sizes());
}

inline at::Tensor ScatterValidOverZeros(const at::Tensor& values, const at::Tensor& index, c10::IntArrayRef sizes) {
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  return at::zeros({numel}, values.options()).index_copy(0, index, values).view(sizes);
}

}  // namespace rlhf::rl::internal

#endif  // RLHF_COMMON_RL_TENSOR_CHECKS_H_
