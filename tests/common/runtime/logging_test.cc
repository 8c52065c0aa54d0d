// Logging: with --log_format=json every line the process writes to stderr is one JSON object, including the lines
// that libprotobuf and gRPC core log on their own.
#include "common/runtime/logging.h"

#include <grpc/grpc.h>
#include <grpc/support/log.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rlhf/v1/labeling.pb.h"
#include "tests/testing/test_util.h"

namespace rlhf::runtime {
namespace {

using ::testing::HasSubstr;

// Runs `write_logs` with stderr sent to a file; returns what was written.
std::string CaptureStderr(const std::function<void()>& write_logs) {
  const std::string path = rlhf::testing::MakeTempDir("stderr") + "/stderr.txt";
  std::fflush(stderr);
  const int saved = ::dup(STDERR_FILENO);
  FILE* file = std::fopen(path.c_str(), "w");
  ::dup2(::fileno(file), STDERR_FILENO);
  write_logs();
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::fclose(file);
  return *util::ReadFile(path);
}

TEST(Logging, LibraryLinesAreJsonWhenJsonIsAsked) {
  grpc_init();  // as any process with a server or a channel has done
  LoggingOptions options;
  options.format = LogFormat::kJson;
  ASSERT_TRUE(InitLogging(options).ok());
  const std::string text = CaptureStderr([] {
    Logger("runtime")->warn("our own line");
    // libprotobuf logs an error when a string field holds bytes that are not UTF-8.
    rlhf::v1::GetQueueStatsRequest request;
    request.set_run_id("bad \xff bytes");
    (void)request.SerializeAsString();
    // gRPC core logs through gpr_log.
    gpr_log(GPR_ERROR, "a gRPC core line %d", 42);
    Logger("runtime")->flush();
  });
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  ASSERT_GE(lines.size(), 3u) << text;
  for (const std::string& line : lines) {
    EXPECT_TRUE(line.front() == '{' && line.back() == '}') << "not a JSON line: " << line;
  }
  EXPECT_THAT(text, HasSubstr("our own line"));
  EXPECT_THAT(text, HasSubstr("\"logger\":\"protobuf\""));
  EXPECT_THAT(text, HasSubstr("invalid UTF-8"));
  EXPECT_THAT(text, HasSubstr("\"logger\":\"grpc\""));
  EXPECT_THAT(text, HasSubstr("a gRPC core line 42"));
  options.format = LogFormat::kText;
  ASSERT_TRUE(InitLogging(options).ok());
  grpc_shutdown();
}

}  // namespace
}  // namespace rlhf::runtime
