// RETURN_IF_ERROR / ASSIGN_OR_RETURN for absl::Status and absl::StatusOr (Debian's abseil ships neither).
#ifndef RLHF_COMMON_UTIL_STATUS_MACROS_H_
#define RLHF_COMMON_UTIL_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define RLHF_STATUS_CONCAT_INNER_(a, b) a##b
#define RLHF_STATUS_CONCAT_(a, b) RLHF_STATUS_CONCAT_INNER_(a, b)

// Returns from the current function with `expr`'s status when it is not OK.
#define RETURN_IF_ERROR(expr)                                   \
  do {                                                          \
    ::absl::Status rlhf_status_ = (expr);                       \
    if (!rlhf_status_.ok()) return rlhf_status_;                \
  } while (false)

// ASSIGN_OR_RETURN(lhs, expr): evaluates `expr` (an absl::StatusOr<T>); on error returns its status, otherwise
// moves the value into `lhs`, which may be a declaration (`auto x`) or an existing variable.
#define ASSIGN_OR_RETURN(lhs, expr) \
  RLHF_ASSIGN_OR_RETURN_IMPL_(RLHF_STATUS_CONCAT_(rlhf_statusor_, __LINE__), lhs, expr)

#define RLHF_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // RLHF_COMMON_UTIL_STATUS_MACROS_H_
