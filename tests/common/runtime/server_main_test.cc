// ServerMain, the main() of every service binary, run as a real process.
#include "common/runtime/server_main.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <regex>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "common/runtime/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rlhf/v1/labeling.grpc.pb.h"

extern char** environ;

namespace rlhf::runtime {
namespace {

using ::testing::HasSubstr;

// A child process with its stdout and stderr read through pipes. Killed at destruction if still running.
class Child {
 public:
  explicit Child(std::vector<std::string> args) {
    int out[2], err[2];
    EXPECT_EQ(::pipe(out), 0);
    EXPECT_EQ(::pipe(err), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    posix_spawn_file_actions_addclose(&actions, err[0]);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    EXPECT_EQ(::posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    ::close(err[1]);
    out_ = out[0];
    err_ = err[0];
  }
  ~Child() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_);
    ::close(err_);
  }

  // Reads the child's stdout or stderr until `pattern` matches what was read, for at most `timeout`; returns the
  // first capture group ("" when the pattern has none, nullopt on timeout or end of output).
  std::optional<std::string> WaitFor(bool from_stderr, const std::string& pattern, absl::Duration timeout) {
    std::string& seen = from_stderr ? err_text_ : out_text_;
    const int fd = from_stderr ? err_ : out_;
    const std::regex re(pattern);
    const absl::Time end = absl::Now() + timeout;
    while (true) {
      std::smatch match;
      if (std::regex_search(seen, match, re)) return match.size() > 1 ? match[1].str() : "";
      const absl::Duration left = end - absl::Now();
      if (left <= absl::ZeroDuration()) return std::nullopt;
      pollfd pfd{fd, POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) continue;
      char buffer[4096];
      const ssize_t n = ::read(fd, buffer, sizeof(buffer));
      if (n <= 0) return std::nullopt;
      seen.append(buffer, static_cast<size_t>(n));
    }
  }

  // Waits up to `timeout` for the child to exit; its wait status, or nullopt if it is still running.
  std::optional<int> WaitExit(absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return status;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return std::nullopt;
  }

  // Everything the child wrote on stderr, after killing it if it still runs (reading waits for the pipe to close).
  std::string DrainStderr() {
    if (!exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      exited_ = true;
    }
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(err_, buffer, sizeof(buffer))) > 0) err_text_.append(buffer, static_cast<size_t>(n));
    return err_text_;
  }

  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int out_ = -1, err_ = -1;
  bool exited_ = false;
  std::string out_text_, err_text_;
};

// SIGTERM while a handler never finishes on its own (it even ignores cancellation): the process still ends soon
// after --shutdown_deadline instead of waiting for the call forever, and says which call it gave up on.
TEST(ServerMain, ExitsAfterTheShutdownDeadlineEvenWhenAHandlerNeverFinishes) {
  Child child({RLHF_STUCK_SERVER, "--listen_address=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
               "--shutdown_deadline=1s"});
  const auto port = child.WaitFor(/*from_stderr=*/true, "grpc_port=([0-9]+)", absl::Seconds(60));
  ASSERT_TRUE(port.has_value()) << child.DrainStderr();
  ClientOptions client;
  client.target = "127.0.0.1:" + *port;
  auto stub = rlhf::v1::LabelingService::NewStub(*MakeChannel(client));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  rlhf::v1::NextTaskRequest request;
  rlhf::v1::LabelingTask task;
  std::thread call([&] { (void)stub->NextTask(&context, request, &task); });
  ASSERT_TRUE(child.WaitFor(/*from_stderr=*/false, "entered", absl::Seconds(60)).has_value());

  ASSERT_EQ(::kill(child.pid(), SIGTERM), 0);
  // Bounded only so that a regression fails instead of hanging: a stuck process would never exit at all.
  const auto status = child.WaitExit(absl::Seconds(60));
  context.TryCancel();
  call.join();
  ASSERT_TRUE(status.has_value()) << "still running a minute after SIGTERM\n" << child.DrainStderr();
  EXPECT_TRUE(WIFEXITED(*status));
  const std::string log = child.DrainStderr();
  EXPECT_THAT(log, HasSubstr("shutdown_deadline"));
  EXPECT_THAT(log, HasSubstr("/rlhf.v1.LabelingService/NextTask"));
}

}  // namespace
}  // namespace rlhf::runtime
