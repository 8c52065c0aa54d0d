#include "common/runtime/access_policy.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace rlhf::runtime {
namespace {

constexpr std::pair<RoleSet, const char*> kRoleNames[] = {
    {kRoleClient, "client"}, {kRoleLabeler, "labeler"}, {kRoleProducer, "producer"},
    {kRoleOperator, "operator"}, {kRoleAdmin, "admin"}};

// Who may call each kind of RPC (admin may call all of them).
constexpr RoleSet kInference = kRoleClient | kRoleOperator;
constexpr RoleSet kLabeling = kRoleLabeler;
constexpr RoleSet kProducing = kRoleProducer | kRoleOperator;
constexpr RoleSet kOperating = kRoleOperator;
constexpr RoleSet kQueueReading = kRoleLabeler | kRoleProducer | kRoleOperator;

struct Row {
  const char* method;
  RoleSet roles;
  bool large_requests;
};

// The suite's RPCs. Requests above --max_request_bytes are accepted only by the methods that carry weights, training
// data or rollouts, and only the operator and producer roles may call those.
constexpr Row kSuiteTable[] = {
    // rlhf.v1.PolicyGenerationService (generation.proto)
    {"/rlhf.v1.PolicyGenerationService/Generate", kInference, false},
    {"/rlhf.v1.PolicyGenerationService/UpdateWeights", kOperating, true},
    {"/rlhf.v1.PolicyGenerationService/UpdateWeightsFromCheckpoint", kOperating, false},
    {"/rlhf.v1.PolicyGenerationService/GetModelInfo", kInference, false},
    // rlhf.v1.ReferenceLogprobService (reference.proto)
    {"/rlhf.v1.ReferenceLogprobService/LogProbs", kInference, false},
    {"/rlhf.v1.ReferenceLogprobService/GetModelInfo", kInference, false},
    {"/rlhf.v1.ReferenceLogprobService/UpdateWeightsFromCheckpoint", kOperating, false},
    // rlhf.v1.RewardScoringService (reward.proto)
    {"/rlhf.v1.RewardScoringService/Score", kInference, false},
    {"/rlhf.v1.RewardScoringService/ScoreStream", kInference, false},
    {"/rlhf.v1.RewardScoringService/GetModelInfo", kInference, false},
    {"/rlhf.v1.RewardScoringService/ReloadModel", kOperating, false},
    // rlhf.v1.PpoTrainerService (trainer.proto); ExportWeights' responses are large, its request is not.
    {"/rlhf.v1.PpoTrainerService/TrainSft", kOperating, true},
    {"/rlhf.v1.PpoTrainerService/TrainRewardModel", kOperating, true},
    {"/rlhf.v1.PpoTrainerService/PpoStep", kOperating, true},
    {"/rlhf.v1.PpoTrainerService/ExportWeights", kOperating, false},
    {"/rlhf.v1.PpoTrainerService/SaveCheckpoint", kOperating, false},
    {"/rlhf.v1.PpoTrainerService/LoadCheckpoint", kOperating, false},
    {"/rlhf.v1.PpoTrainerService/GetModelInfo", kInference, false},
    // rlhf.v1.OrchestratorService (orchestrator.proto)
    {"/rlhf.v1.OrchestratorService/StartRun", kOperating, false},
    {"/rlhf.v1.OrchestratorService/GetRun", kInference, false},
    {"/rlhf.v1.OrchestratorService/ListRuns", kInference, false},
    {"/rlhf.v1.OrchestratorService/CancelRun", kOperating, false},
    {"/rlhf.v1.OrchestratorService/WatchRun", kInference, false},
    // rlhf.v1.LabelingService (labeling.proto)
    {"/rlhf.v1.LabelingService/NextTask", kLabeling, false},
    {"/rlhf.v1.LabelingService/SubmitRanking", kLabeling, false},
    {"/rlhf.v1.LabelingService/GetQueueStats", kQueueReading, false},
    {"/rlhf.v1.LabelingService/EnqueueTasks", kProducing, true},
    {"/rlhf.v1.LabelingService/GetRankings", kProducing, false},
    {"/rlhf.v1.LabelingService/CancelTasks", kProducing, false},
    // Server reflection lists the services and their schemas: any identity.
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", kAllRoles, false},
};

}  // namespace

absl::StatusOr<RoleSet> ParseRoles(absl::string_view text) {
  RoleSet roles = 0;
  for (absl::string_view name : absl::StrSplit(text, ',')) {
    name = absl::StripAsciiWhitespace(name);
    bool known = false;
    for (const auto& [bit, role_name] : kRoleNames) {
      if (name == role_name) {
        roles |= bit;
        known = true;
      }
    }
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat("unknown role '", name,
                                                     "' (roles: client, labeler, producer, operator, admin)"));
    }
  }
  return roles;
}

std::string RoleNames(RoleSet roles) {
  std::vector<std::string> names;
  for (const auto& [bit, name] : kRoleNames) {
    if (roles & bit) names.push_back(name);
  }
  return names.empty() ? "none" : absl::StrJoin(names, ",");
}

AccessPolicy AccessPolicy::Suite() {
  AccessPolicy policy;
  for (const Row& row : kSuiteTable) policy.Add({row.method, row.roles, row.large_requests});
  return policy;
}

AccessPolicy& AccessPolicy::Add(MethodRule rule) {
  std::string method = rule.method;
  rules_[std::move(method)] = std::move(rule);
  return *this;
}

const MethodRule* AccessPolicy::Find(absl::string_view method) const {
  auto it = rules_.find(method);
  return it == rules_.end() ? nullptr : &it->second;
}

bool AccessPolicy::IsOpen(absl::string_view method) const {
  for (const auto& prefix : open_prefixes_) {
    if (absl::StartsWith(method, prefix)) return true;
  }
  return false;
}

absl::Status AccessPolicy::Authorize(const Identity& identity, absl::string_view method) const {
  if (IsOpen(method) || identity.Has(kRoleAdmin)) return absl::OkStatus();
  const MethodRule* rule = Find(method);
  if (rule != nullptr && (rule->roles & identity.roles) != 0) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "'", identity.name, "' (roles: ", RoleNames(identity.roles), ") may not call ", method, "; roles that may: ",
      rule != nullptr ? RoleNames(rule->roles | kRoleAdmin) : "admin"));
}

}  // namespace rlhf::runtime
