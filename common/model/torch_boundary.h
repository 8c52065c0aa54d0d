// The one boundary between LibTorch's exceptions and this project's absl::Status: code that calls LibTorch runs its
// body through TorchBoundary, so that no exception crosses a library API.
#ifndef RLHF_COMMON_MODEL_TORCH_BOUNDARY_H_
#define RLHF_COMMON_MODEL_TORCH_BOUNDARY_H_

#include <exception>
#include <new>

#include <c10/util/Exception.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace rlhf::model {

// Runs `body` (returning absl::Status or absl::StatusOr<T>) and maps what it throws: std::bad_alloc and LibTorch's
// out-of-memory errors -> ResourceExhausted, c10::Error and other std::exception -> Internal, each message starting
// with `where`.
template <typename Body>
auto TorchBoundary(absl::string_view where, Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(absl::StrCat(where, ": out of memory: ", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(where, ": LibTorch error: ", e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(where, ": out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(where, ": ", e.what()));
  }
}

}  // namespace rlhf::model

#endif  // RLHF_COMMON_MODEL_TORCH_BOUNDARY_H_
