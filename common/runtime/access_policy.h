// Who may call what: roles, the identities that hold them, and the one table of the suite's RPCs with the roles each
// admits and the size of request each accepts. The server enforces it before any handler runs (auth.h).
#ifndef RLHF_COMMON_RUNTIME_ACCESS_POLICY_H_
#define RLHF_COMMON_RUNTIME_ACCESS_POLICY_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rlhf::runtime {

// A set of roles, as bits.
using RoleSet = uint32_t;
// Inference RPCs (Generate, Score, ScoreStream, LogProbs, GetModelInfo) and the read-only run RPCs (GetRun,
// ListRuns, WatchRun).
inline constexpr RoleSet kRoleClient = 1u << 0;
// NextTask and SubmitRanking, as itself only; GetQueueStats.
inline constexpr RoleSet kRoleLabeler = 1u << 1;
// EnqueueTasks, GetRankings, CancelTasks, GetQueueStats.
inline constexpr RoleSet kRoleProducer = 1u << 2;
// ReloadModel, UpdateWeights*, training, checkpoints, StartRun and CancelRun; and everything client and producer may.
inline constexpr RoleSet kRoleOperator = 1u << 3;
// Every RPC, and labeling on behalf of any labeler (NextTask / SubmitRanking naming another labeler_id).
inline constexpr RoleSet kRoleAdmin = 1u << 4;
inline constexpr RoleSet kAllRoles = kRoleClient | kRoleLabeler | kRoleProducer | kRoleOperator | kRoleAdmin;

// "client,operator" -> bits. InvalidArgument naming the unknown role and the known ones; an empty list is an error.
absl::StatusOr<RoleSet> ParseRoles(absl::string_view text);
// Bits -> "client,operator" (in the order of the constants above); "none" for 0.
std::string RoleNames(RoleSet roles);

// An authenticated caller: the name its token or certificate carries, and its roles.
struct Identity {
  std::string name;
  RoleSet roles = 0;

  bool Has(RoleSet role) const { return (roles & role) != 0; }
};

// One RPC of the table.
struct MethodRule {
  std::string method;  // full gRPC path, "/rlhf.v1.RewardScoringService/Score"
  RoleSet roles = 0;   // roles that may call it (admin may call every method, whatever this says)
  // The request (each message, for client streams) may be up to --max_message_bytes; otherwise --max_request_bytes.
  bool large_requests = false;
};

// The method table a server enforces. Methods not in it are refused to everyone but admin, except the open ones
// (grpc.health.v1), which need no credentials at all.
class AccessPolicy {
 public:
  // The suite's table: every RPC of the six services (protos/rlhf/v1/), server reflection (any identity) and health
  // (open). The README's role table is this one.
  static AccessPolicy Suite();

  // Adds or replaces the rule of `rule.method`.
  AccessPolicy& Add(MethodRule rule);

  // The rule of `method`, or null.
  const MethodRule* Find(absl::string_view method) const;
  // True for methods that need no credentials.
  bool IsOpen(absl::string_view method) const;
  // OK when `identity` may call `method`; otherwise PERMISSION_DENIED naming the caller, its roles and the roles
  // that may.
  absl::Status Authorize(const Identity& identity, absl::string_view method) const;
  // Every rule, by method.
  const std::map<std::string, MethodRule, std::less<>>& rules() const { return rules_; }

 private:
  std::map<std::string, MethodRule, std::less<>> rules_;
  std::vector<std::string> open_prefixes_ = {"/grpc.health.v1.Health/"};
};

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_ACCESS_POLICY_H_
