// rlhf-health, the container health probe, as a process against a server on loopback: its exit code is what
// docker-compose healthchecks and Kubernetes exec probes read.
#include <sys/wait.h>

#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/runtime/server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/labeling/labeling_service_impl.h"

namespace rlhf::cli {
namespace {

struct Probe {
  int exit_code = -1;
  std::string output;
};

Probe RunProbe(const std::string& args) {
  const std::string command = absl::StrCat(RLHF_BINARY_DIR, "/tools/cli/rlhf-health ", args, " 2>&1");
  Probe probe;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return probe;
  char buffer[512];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) probe.output += buffer;
  const int status = ::pclose(pipe);
  if (WIFEXITED(status)) probe.exit_code = WEXITSTATUS(status);
  return probe;
}

TEST(HealthProbeTest, ExitCodeSaysWhetherTheServerOrServiceIsServing) {
  auto service = labeling::LabelingServiceImpl::Create({}, nullptr);
  ASSERT_TRUE(service.ok());
  runtime::ServerOptions options;
  options.name = "health-probe-test";
  options.listen_address = "127.0.0.1:0";
  options.metrics_address = "127.0.0.1:0";
  options.drain_delay = absl::ZeroDuration();
  auto server = runtime::Server::Start(options, {{"rlhf.v1.LabelingService", service->get()}},
                                       std::make_shared<prometheus::Registry>());
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = absl::StrCat("127.0.0.1:", (*server)->port());

  Probe whole = RunProbe(address);
  EXPECT_EQ(whole.exit_code, 0) << whole.output;
  EXPECT_THAT(whole.output, ::testing::HasSubstr("SERVING"));
  Probe one = RunProbe("--quiet --service=rlhf.v1.LabelingService " + address);
  EXPECT_EQ(one.exit_code, 0) << one.output;
  EXPECT_EQ(one.output, "") << "--quiet prints nothing";
  Probe unknown = RunProbe("--service=rlhf.v1.NoSuchService " + address);
  EXPECT_EQ(unknown.exit_code, 1) << unknown.output;
  EXPECT_THAT(unknown.output, ::testing::HasSubstr("unknown service"));

  (*server)->SetServing("rlhf.v1.LabelingService", false);
  Probe draining = RunProbe("--service=rlhf.v1.LabelingService " + address);
  EXPECT_EQ(draining.exit_code, 1) << draining.output;
  EXPECT_THAT(draining.output, ::testing::HasSubstr("NOT_SERVING"));

  (*server)->Shutdown();
  Probe down = RunProbe("--timeout=1s " + address);
  EXPECT_EQ(down.exit_code, 1) << down.output;
  EXPECT_THAT(down.output, ::testing::HasSubstr("unreachable"));

  EXPECT_EQ(RunProbe("").exit_code, 2) << "no address";
  EXPECT_EQ(RunProbe("--timeout=0s " + address).exit_code, 2);
}

}  // namespace
}  // namespace rlhf::cli
