// The one place where absl::Status becomes grpc::Status (TF Serving's grpc_status_util).
#ifndef RLHF_COMMON_RUNTIME_STATUS_UTIL_H_
#define RLHF_COMMON_RUNTIME_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace rlhf::runtime {

// Longest error message sent to a caller; longer messages are cut and end in "...".
inline constexpr size_t kMaxStatusMessageBytes = 1024;

// Maps codes one to one and truncates the message to kMaxStatusMessageBytes. Payloads (stack traces, internal
// details attached to the status) are never sent.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The reverse, for clients of our services.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_STATUS_UTIL_H_
