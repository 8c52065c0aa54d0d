#include "common/runtime/status_util.h"

#include <string>

#include "gtest/gtest.h"

namespace rlhf::runtime {
namespace {

TEST(ToGrpcStatus, KeepsCodeAndMessage) {
  const grpc::Status status = ToGrpcStatus(absl::InvalidArgumentError("prompts[3] is empty"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "prompts[3] is empty");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_EQ(ToGrpcStatus(absl::ResourceExhaustedError("queue full")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST(ToGrpcStatus, TruncatesLongMessagesOnACharacterBoundary) {
  std::string message(kMaxStatusMessageBytes, 'a');
  message += "\xc3\xa9\xc3\xa9";  // two-byte characters straddling the cut
  message = std::string(kMaxStatusMessageBytes - 4, 'a') + "\xc3\xa9\xc3\xa9\xc3\xa9" + message;
  const grpc::Status status = ToGrpcStatus(absl::InternalError(message));
  EXPECT_LE(status.error_message().size(), kMaxStatusMessageBytes);
  EXPECT_EQ(status.error_message().substr(status.error_message().size() - 3), "...");
  // What precedes "..." is whole characters: no dangling lead byte.
  const std::string kept = status.error_message().substr(0, status.error_message().size() - 3);
  const unsigned char last = static_cast<unsigned char>(kept.back());
  EXPECT_TRUE(last < 0x80 || (last & 0xC0) == 0x80);
}

TEST(ToGrpcStatus, ReplacesBytesThatAreNotUtf8) {
  // A corrupted tensor header quoted into an error: the message must stay valid UTF-8 for clients to decode it.
  const grpc::Status status = ToGrpcStatus(absl::DataLossError("header \"\xff\xfe\x80" "abc\" \xc3\xa9 ok"));
  EXPECT_EQ(status.error_message(), "header \"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" "abc\" \xc3\xa9 ok");
}

TEST(FromGrpcStatus, RoundTrips) {
  const absl::Status status = FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "draining"));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(status.message(), "draining");
}

}  // namespace
}  // namespace rlhf::runtime
