// The role table, checked RPC by RPC on a real server: every method of the six services is called with a token of
// each role, and is refused with PERMISSION_DENIED before any handler exactly when the role may not call it.
#include "common/runtime/access_policy.h"

#include <google/protobuf/descriptor.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/runtime/auth.h"
#include "common/runtime/client.h"
#include "common/runtime/server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rlhf/v1/generation.grpc.pb.h"
#include "rlhf/v1/labeling.grpc.pb.h"
#include "rlhf/v1/orchestrator.grpc.pb.h"
#include "rlhf/v1/reference.grpc.pb.h"
#include "rlhf/v1/reward.grpc.pb.h"
#include "rlhf/v1/trainer.grpc.pb.h"
#include "tests/testing/test_util.h"

namespace rlhf::runtime {
namespace {

using ::rlhf::testing::CallRaw;
using ::testing::HasSubstr;

constexpr const char* kServices[] = {"rlhf.v1.PolicyGenerationService", "rlhf.v1.ReferenceLogprobService",
                                     "rlhf.v1.RewardScoringService",    "rlhf.v1.PpoTrainerService",
                                     "rlhf.v1.OrchestratorService",     "rlhf.v1.LabelingService"};

// Who may call what, written out here independently of the table in access_policy.cc (admin: everything).
const std::map<std::string, std::set<std::string>>& ExpectedRoles() {
  static const auto* expected = new std::map<std::string, std::set<std::string>>{
      {"/rlhf.v1.PolicyGenerationService/Generate", {"client", "operator"}},
      {"/rlhf.v1.PolicyGenerationService/UpdateWeights", {"operator"}},
      {"/rlhf.v1.PolicyGenerationService/UpdateWeightsFromCheckpoint", {"operator"}},
      {"/rlhf.v1.PolicyGenerationService/GetModelInfo", {"client", "operator"}},
      {"/rlhf.v1.ReferenceLogprobService/LogProbs", {"client", "operator"}},
      {"/rlhf.v1.ReferenceLogprobService/GetModelInfo", {"client", "operator"}},
      {"/rlhf.v1.ReferenceLogprobService/UpdateWeightsFromCheckpoint", {"operator"}},
      {"/rlhf.v1.RewardScoringService/Score", {"client", "operator"}},
      {"/rlhf.v1.RewardScoringService/ScoreStream", {"client", "operator"}},
      {"/rlhf.v1.RewardScoringService/GetModelInfo", {"client", "operator"}},
      {"/rlhf.v1.RewardScoringService/ReloadModel", {"operator"}},
      {"/rlhf.v1.PpoTrainerService/TrainSft", {"operator"}},
      {"/rlhf.v1.PpoTrainerService/TrainRewardModel", {"operator"}},
      {"/rlhf.v1.PpoTrainerService/PpoStep", {"operator"}},
      {"/rlhf.v1.PpoTrainerService/ExportWeights", {"operator"}},
      {"/rlhf.v1.PpoTrainerService/SaveCheckpoint", {"operator"}},
      {"/rlhf.v1.PpoTrainerService/LoadCheckpoint", {"operator"}},
      {"/rlhf.v1.PpoTrainerService/GetModelInfo", {"client", "operator"}},
      {"/rlhf.v1.OrchestratorService/StartRun", {"operator"}},
      {"/rlhf.v1.OrchestratorService/GetRun", {"client", "operator"}},
      {"/rlhf.v1.OrchestratorService/ListRuns", {"client", "operator"}},
      {"/rlhf.v1.OrchestratorService/CancelRun", {"operator"}},
      {"/rlhf.v1.OrchestratorService/WatchRun", {"client", "operator"}},
      {"/rlhf.v1.LabelingService/NextTask", {"labeler"}},
      {"/rlhf.v1.LabelingService/SubmitRanking", {"labeler"}},
      {"/rlhf.v1.LabelingService/GetQueueStats", {"labeler", "producer", "operator"}},
      {"/rlhf.v1.LabelingService/EnqueueTasks", {"producer", "operator"}},
      {"/rlhf.v1.LabelingService/GetRankings", {"producer", "operator"}},
      {"/rlhf.v1.LabelingService/CancelTasks", {"producer", "operator"}},
  };
  return *expected;
}

// Every method the six services' protos declare, as gRPC paths.
std::vector<std::string> DeclaredMethods() {
  std::vector<std::string> methods;
  for (const char* name : kServices) {
    const auto* service = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
    EXPECT_NE(service, nullptr) << name;
    if (service == nullptr) continue;
    for (int i = 0; i < service->method_count(); ++i) {
      methods.push_back("/" + std::string(name) + "/" + service->method(i)->name());
    }
  }
  return methods;
}

TEST(AccessPolicy, TheSuiteTableHasEveryRpcOfTheSixServicesAndNothingElse) {
  const AccessPolicy policy = AccessPolicy::Suite();
  std::set<std::string> declared;
  for (const std::string& method : DeclaredMethods()) {
    declared.insert(method);
    EXPECT_NE(policy.Find(method), nullptr) << method << " has no row in the role table";
    EXPECT_EQ(ExpectedRoles().count(method), 1u) << method << " is not checked by this test";
  }
  EXPECT_EQ(declared.size(), ExpectedRoles().size());
  for (const auto& [method, rule] : policy.rules()) {
    if (method == "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") continue;
    EXPECT_EQ(declared.count(method), 1u) << method << " is in the table but in no proto";
  }
  // Only privileged roles' methods take large requests.
  for (const auto& [method, rule] : policy.rules()) {
    if (rule.large_requests) {
      EXPECT_EQ(rule.roles & kRoleClient, 0u) << method;
    }
  }
}

TEST(AccessPolicy, AdminMayCallAnythingAndHealthIsOpen) {
  const AccessPolicy policy = AccessPolicy::Suite();
  EXPECT_TRUE(policy.Authorize({"root", kRoleAdmin}, "/rlhf.v1.PpoTrainerService/PpoStep").ok());
  EXPECT_TRUE(policy.Authorize({"root", kRoleAdmin}, "/some.Unknown/Method").ok());
  EXPECT_TRUE(policy.Authorize({"nobody", 0}, "/grpc.health.v1.Health/Check").ok());
  const absl::Status denied = policy.Authorize({"alice", kRoleLabeler}, "/rlhf.v1.LabelingService/CancelTasks");
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(denied.message(),
            "'alice' (roles: labeler) may not call /rlhf.v1.LabelingService/CancelTasks; roles that may: "
            "producer,operator,admin");
  EXPECT_EQ(policy.Authorize({"alice", kRoleLabeler}, "/some.Unknown/Method").code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(ParseRoles, ReadsListsAndNamesUnknownRoles) {
  EXPECT_EQ(*ParseRoles("client"), kRoleClient);
  EXPECT_EQ(*ParseRoles("labeler, client"), kRoleLabeler | kRoleClient);
  EXPECT_EQ(RoleNames(kRoleOperator | kRoleClient), "client,operator");
  EXPECT_EQ(RoleNames(0), "none");
  const auto bad = ParseRoles("client,root");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("unknown role 'root'"));
  EXPECT_FALSE(ParseRoles("").ok());
}

// The six services with every method unimplemented: a call that passes the check reaches the handler and comes back
// UNIMPLEMENTED; one that does not is PERMISSION_DENIED.
struct AllServices {
  rlhf::v1::PolicyGenerationService::CallbackService generation;
  rlhf::v1::ReferenceLogprobService::CallbackService reference;
  rlhf::v1::RewardScoringService::CallbackService reward;
  rlhf::v1::PpoTrainerService::CallbackService trainer;
  rlhf::v1::OrchestratorService::CallbackService orchestrator;
  rlhf::v1::LabelingService::CallbackService labeling;
  std::unique_ptr<Server> server;
  std::shared_ptr<grpc::Channel> channel;

  AllServices() {
    std::vector<Authenticator::Token> tokens;
    for (const char* role : {"client", "labeler", "producer", "operator", "admin"}) {
      tokens.push_back({std::string("token-of-") + role, {std::string(role) + "-1", *ParseRoles(role)}});
    }
    ServerOptions options;
    options.name = "access-test";
    options.listen_address = "127.0.0.1:0";
    options.metrics_address = "127.0.0.1:0";
    options.security.authenticator = std::make_shared<const Authenticator>(
        std::move(tokens), std::map<std::string, RoleSet, std::less<>>{});
    auto started = Server::Start(options,
                                 {{kServices[0], &generation},
                                  {kServices[1], &reference},
                                  {kServices[2], &reward},
                                  {kServices[3], &trainer},
                                  {kServices[4], &orchestrator},
                                  {kServices[5], &labeling}},
                                 std::make_shared<prometheus::Registry>());
    EXPECT_TRUE(started.ok()) << started.status();
    if (!started.ok()) return;
    server = *std::move(started);
    ClientOptions client;
    client.target = "127.0.0.1:" + std::to_string(server->port());
    channel = *MakeChannel(client);
  }
};

TEST(AccessPolicy, EveryRpcOfEveryServiceAdmitsExactlyItsRoles) {
  AllServices s;
  ASSERT_NE(s.server, nullptr);
  int checked = 0;
  for (const auto& [method, allowed] : ExpectedRoles()) {
    for (const char* role : {"client", "labeler", "producer", "operator", "admin"}) {
      std::string reply;
      const grpc::Status status = CallRaw(*s.channel, method, "", &reply, 10000, std::string("token-of-") + role);
      const bool may = allowed.count(role) > 0 || std::string(role) == "admin";
      if (may) {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED)
            << role << " calling " << method << ": " << status.error_message();
      } else {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << role << " calling " << method;
        EXPECT_THAT(status.error_message(), HasSubstr(method));
      }
      ++checked;
    }
    // No token, or a token nobody has: refused before any role is looked at.
    std::string reply;
    EXPECT_EQ(CallRaw(*s.channel, method, "", &reply).error_code(), grpc::StatusCode::UNAUTHENTICATED) << method;
    EXPECT_EQ(CallRaw(*s.channel, method, "", &reply, 10000, "token-of-nobody").error_code(),
              grpc::StatusCode::UNAUTHENTICATED)
        << method;
  }
  EXPECT_EQ(checked, 29 * 5);
  // Health stays open to callers without a token.
  EXPECT_EQ(*CheckHealth(*s.channel, "rlhf.v1.LabelingService", absl::Seconds(5)), HealthState::kServing);
}

}  // namespace
}  // namespace rlhf::runtime
