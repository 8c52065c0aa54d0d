// Small helpers for tests that run real servers on loopback.
#ifndef RLHF_TESTS_TESTING_TEST_UTIL_H_
#define RLHF_TESTS_TESTING_TEST_UTIL_H_

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/support/byte_buffer.h>

#include <string>

#include "absl/status/statusor.h"

namespace rlhf::testing {

// GET http://127.0.0.1:<port><path>; returns the body of a 200 answer. Bounded by a 5 s timeout.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

// A fresh folder under the test's temp dir.
std::string MakeTempDir(const std::string& prefix);

// A generic service for runtime tests. Methods:
//   /rlhf.test.Echo/Echo  replies with the request bytes;
//   /rlhf.test.Echo/Slow  replies with the request bytes after `slow_ms` milliseconds (never blocks a thread).
class EchoService final : public grpc::CallbackGenericService {
 public:
  explicit EchoService(int slow_ms = 1500) : slow_ms_(slow_ms) {}
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* context) override;

 private:
  int slow_ms_;
};

inline constexpr char kEchoMethod[] = "/rlhf.test.Echo/Echo";
inline constexpr char kSlowMethod[] = "/rlhf.test.Echo/Slow";

// Calls a method of EchoService (or any unary method) with raw bytes; returns the reply bytes.
grpc::Status CallRaw(grpc::Channel& channel, const std::string& method, const std::string& request, std::string* reply,
                     int timeout_ms = 10000, const std::string& bearer_token = "");

}  // namespace rlhf::testing

#endif  // RLHF_TESTS_TESTING_TEST_UTIL_H_
