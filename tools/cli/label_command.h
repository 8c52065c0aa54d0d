// `rlhf label`: answer the labeling queue from a terminal. Shows a task (instructions, prompt, candidates), reads a
// ranking line, submits it, and takes the next task, until end of input or "q".
#ifndef RLHF_TOOLS_CLI_LABEL_COMMAND_H_
#define RLHF_TOOLS_CLI_LABEL_COMMAND_H_

#include <cstdint>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/runtime/client.h"

namespace rlhf::cli {

struct LabelSessionOptions {
  runtime::ClientOptions client;  // target = the labeling service
  // Sent as labeler_id. Empty (allowed with a bearer token): the server takes the identity of the token.
  std::string labeler_id;
  absl::Duration poll = absl::Seconds(30);  // NextTask wait per call
  int64_t max_tasks = 0;                    // stop after this many answers; 0: no limit
  bool stop_when_empty = false;             // stop (rather than keep waiting) when no task is pending
};

// Parses a ranking line: candidate ids from best to worst, separated by spaces; ids joined by '=' tie ("2=1 3").
// Every id of `candidate_ids` must appear exactly once. Returns (candidate_id, rank) pairs; InvalidArgument saying
// what is wrong otherwise.
absl::StatusOr<std::vector<std::pair<std::string, int32_t>>> ParseRankingLine(
    const std::string& line, const std::vector<std::string>& candidate_ids);

// Runs the session on `in` / `out`. Returns the number of rankings submitted; an error when the service cannot be
// reached or refuses the labeler (a refused ranking is shown and asked again).
absl::StatusOr<int64_t> RunLabelSession(const LabelSessionOptions& options, std::istream& in, std::ostream& out);

}  // namespace rlhf::cli

#endif  // RLHF_TOOLS_CLI_LABEL_COMMAND_H_
