// The one place where absl::Status becomes grpc::Status (TF Serving's grpc_status_util), and where error text
// becomes safe to send.
#ifndef RLHF_COMMON_RUNTIME_STATUS_UTIL_H_
#define RLHF_COMMON_RUNTIME_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace rlhf::runtime {

// Longest error message sent to a caller; longer messages are cut and end in "...".
inline constexpr size_t kMaxStatusMessageBytes = 1024;

// Maps codes one to one; the message goes through Utf8Safe and is cut to kMaxStatusMessageBytes on a character
// boundary. Payloads (stack traces, internal details attached to the status) are never sent.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The reverse, for clients of our services.
absl::Status FromGrpcStatus(const grpc::Status& status);

// `text` with every byte that is not part of well-formed UTF-8 replaced by U+FFFD. Use it wherever error text (which
// may quote a file's or a caller's bytes) goes into a proto string field: proto3 strings must be UTF-8, and a client
// fails to parse a message that holds anything else.
std::string Utf8Safe(absl::string_view text);

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_STATUS_UTIL_H_
