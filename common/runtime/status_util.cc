#include "common/runtime/status_util.h"

#include <string>

#include "common/data/records.h"

namespace rlhf::runtime {

std::string Utf8Safe(absl::string_view text) {
  constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  std::string out;
  size_t bad = data::FindInvalidUtf8(text);
  if (bad == absl::string_view::npos) return std::string(text);
  out.reserve(text.size() + 8);
  while (bad != absl::string_view::npos) {
    out.append(text.data(), bad);
    out.append(kReplacement.data(), kReplacement.size());
    text.remove_prefix(bad + 1);
    bad = data::FindInvalidUtf8(text);
  }
  out.append(text.data(), text.size());
  return out;
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string message = Utf8Safe(status.message());
  if (message.size() > kMaxStatusMessageBytes) {
    message.resize(kMaxStatusMessageBytes - 3);
    // Do not leave half a UTF-8 sequence at the cut.
    while (!message.empty() && (static_cast<unsigned char>(message.back()) & 0xC0) == 0x80) message.pop_back();
    if (!message.empty() && (static_cast<unsigned char>(message.back()) & 0x80) != 0) message.pop_back();
    message += "...";
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), message);
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace rlhf::runtime
