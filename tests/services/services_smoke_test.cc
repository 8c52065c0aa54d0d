// The six service binaries start on the runtime (the model services on a tiny model), serve health and /metrics,
// answer over gRPC, and drain on SIGTERM with exit 0.
#include <string>

#include "common/runtime/client.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rlhf/v1/generation.grpc.pb.h"
#include "rlhf/v1/orchestrator.grpc.pb.h"
#include "rlhf/v1/reward.grpc.pb.h"
#include "tests/testing/test_util.h"
#include "tests/testing/tiny_model.h"
#include "tools/cli/local_services.h"

namespace rlhf::cli {
namespace {

using ::testing::HasSubstr;

TEST(ServiceBinaries, StartServeHealthAndMetricsAndStopCleanly) {
  const std::string log_dir = rlhf::testing::MakeTempDir("services");
  ASSERT_TRUE(rlhf::testing::WriteTinyModel(log_dir + "/model").ok());
  rlhf::testing::TinyModelOptions reward;
  reward.reward_head = true;
  ASSERT_TRUE(rlhf::testing::WriteTinyModel(log_dir + "/reward", reward).ok());
  SuiteLayout layout;
  layout.policy_model = log_dir + "/model";
  layout.reward_model = log_dir + "/reward";
  layout.checkpoint_root = log_dir + "/checkpoints";
  layout.runs_root = log_dir + "/runs";
  ASSERT_TRUE(rlhf::util::MakeDirectories(layout.runs_root).ok());
  std::vector<LocalService> services = SuiteServices(RLHF_BINARY_DIR, layout);
  ASSERT_EQ(services.size(), 6u);
  ASSERT_TRUE(StartLocalServices(services, log_dir, absl::Seconds(60)).ok());

  for (const auto& service : services) {
    auto metrics = rlhf::testing::HttpGet(service.metrics_port, "/metrics");
    ASSERT_TRUE(metrics.ok()) << service.name << ": " << metrics.status();
    EXPECT_THAT(*metrics, HasSubstr("rlhf_build_info{service=\"" + service.name + "\""));
    // The health checks StartLocalServices made are counted.
    EXPECT_THAT(*metrics, HasSubstr("rlhf_rpc_requests_total{code=\"OK\",method=\"/grpc.health.v1.Health/Check\""));
  }

  runtime::ClientOptions client;
  client.target = "127.0.0.1:" + std::to_string(services[5].port);
  ASSERT_EQ(services[5].name, "orchestrator");
  auto channel = runtime::MakeChannel(client);
  ASSERT_TRUE(channel.ok());
  auto stub = v1::OrchestratorService::NewStub(*channel);
  grpc::ClientContext context;
  v1::GetRunRequest request;
  request.set_run_id("no-such-run");
  v1::Run response;
  const grpc::Status status = stub->GetRun(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("no-such-run"));

  EXPECT_TRUE(StopLocalServices(services, absl::Seconds(40)).ok());
}

TEST(ServiceBinaries, StartFailsClearlyWhenABinaryIsMissing) {
  std::vector<LocalService> services = SuiteServices("/nonexistent/build", SuiteLayout{});
  const absl::Status status = StartLocalServices(services, rlhf::testing::MakeTempDir("missing"), absl::Seconds(5));
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("policy-generation: no executable at /nonexistent/build"));
}

}  // namespace
}  // namespace rlhf::cli
