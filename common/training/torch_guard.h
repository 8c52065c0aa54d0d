// Internal to common/training: runs a body that calls LibTorch and turns its exceptions into absl::Status, so no
// c10::Error crosses the library's API.
#ifndef RLHF_COMMON_TRAINING_TORCH_GUARD_H_
#define RLHF_COMMON_TRAINING_TORCH_GUARD_H_

#include <exception>

#include <c10/util/Exception.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace rlhf::training {

template <typename Body>
auto TorchGuard(absl::string_view where, Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(where, ": LibTorch error: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(where, ": LibTorch error: ", e.what()));
  }
}

}  // namespace rlhf::training

#endif  // RLHF_COMMON_TRAINING_TORCH_GUARD_H_
