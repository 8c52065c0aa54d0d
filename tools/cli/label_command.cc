#include "tools/cli/label_command.h"

#include <google/protobuf/util/time_util.h>

#include <istream>
#include <ostream>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/runtime/status_util.h"
#include "common/util/status_macros.h"
#include "rlhf/v1/labeling.grpc.pb.h"

namespace rlhf::cli {
namespace {

using google::protobuf::util::TimeUtil;
namespace v1 = ::rlhf::v1;

void ShowTask(const v1::LabelingTask& task, std::ostream& out) {
  const absl::Time deadline = absl::FromUnixNanos(TimeUtil::TimestampToNanoseconds(task.deadline()));
  out << "\n== task " << task.task_id();
  if (!task.run_id().empty()) out << " (run " << task.run_id() << ", round " << task.round() << ")";
  out << ", answer within " << absl::FormatDuration(absl::Seconds(absl::ToInt64Seconds(deadline - absl::Now())))
      << "\n";
  if (!task.instructions().empty()) out << task.instructions() << "\n";
  out << "\nPrompt:\n" << task.prompt() << "\n";
  for (const v1::Candidate& c : task.candidates()) out << "\n[" << c.candidate_id() << "]\n" << c.text() << "\n";
}

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, int32_t>>> ParseRankingLine(
    const std::string& line, const std::vector<std::string>& candidate_ids) {
  const std::set<std::string> known(candidate_ids.begin(), candidate_ids.end());
  std::set<std::string> seen;
  std::vector<std::pair<std::string, int32_t>> ranks;
  int32_t rank = 1;
  for (absl::string_view group : absl::StrSplit(line, absl::ByAnyChar(" \t,"), absl::SkipWhitespace())) {
    int32_t in_group = 0;
    for (absl::string_view id : absl::StrSplit(group, '=')) {
      const std::string candidate(absl::StripAsciiWhitespace(id));
      if (candidate.empty()) return absl::InvalidArgumentError(absl::StrCat("'", group, "': empty candidate"));
      if (known.count(candidate) == 0) {
        return absl::InvalidArgumentError(absl::StrCat("'", candidate, "' is not a candidate"));
      }
      if (!seen.insert(candidate).second) {
        return absl::InvalidArgumentError(absl::StrCat("'", candidate, "' is ranked twice"));
      }
      ranks.emplace_back(candidate, rank);
      ++in_group;
    }
    rank += in_group;
  }
  if (seen.size() != known.size()) {
    std::string missing;
    for (const std::string& id : candidate_ids) {
      if (seen.count(id) == 0) absl::StrAppend(&missing, missing.empty() ? "" : ", ", id);
    }
    return absl::InvalidArgumentError(absl::StrCat("rank every candidate; missing: ", missing));
  }
  return ranks;
}

absl::StatusOr<int64_t> RunLabelSession(const LabelSessionOptions& options, std::istream& in, std::ostream& out) {
  // With a token the server knows who labels; without one it needs a name.
  if (options.labeler_id.empty() && options.client.bearer_token.empty()) {
    return absl::InvalidArgumentError("--labeler_id is required without --token_file");
  }
  ASSIGN_OR_RETURN(auto channel, runtime::MakeChannel(options.client));
  auto stub = v1::LabelingService::NewStub(channel);
  int64_t submitted = 0;
  bool said_waiting = false;
  while (options.max_tasks == 0 || submitted < options.max_tasks) {
    v1::NextTaskRequest next;
    next.set_labeler_id(options.labeler_id);
    *next.mutable_wait() = TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(options.poll));
    v1::LabelingTask task;
    auto context = runtime::ContextWithTimeout(options.poll + absl::Seconds(10));
    const absl::Status got = runtime::FromGrpcStatus(stub->NextTask(context.get(), next, &task));
    if (absl::IsNotFound(got)) {
      if (options.stop_when_empty) break;
      if (!said_waiting) out << "No task is pending; waiting for one (Ctrl-C to stop)...\n" << std::flush;
      said_waiting = true;
      continue;
    }
    if (!got.ok()) return absl::Status(got.code(), absl::StrCat(options.client.target, ": NextTask: ", got.message()));
    said_waiting = false;
    ShowTask(task, out);
    std::vector<std::string> ids;
    for (const v1::Candidate& c : task.candidates()) ids.push_back(c.candidate_id());
    while (true) {
      out << "\nRank from best to worst by id (e.g. \"" << absl::StrJoin(ids, " ") << "\"; '=' ties, as \"" << ids[0]
          << "=" << ids[1] << "\"), or q to quit: " << std::flush;
      std::string line;
      if (!std::getline(in, line)) return submitted;
      if (absl::StripAsciiWhitespace(line) == "q") return submitted;
      auto ranks = ParseRankingLine(line, ids);
      if (!ranks.ok()) {
        out << "  " << ranks.status().message() << "\n";
        continue;
      }
      v1::SubmitRankingRequest submit;
      submit.set_task_id(task.task_id());
      submit.set_labeler_id(options.labeler_id);
      for (const auto& [id, rank] : *ranks) {
        v1::CandidateRank* r = submit.add_ranks();
        r->set_candidate_id(id);
        r->set_rank(rank);
      }
      v1::SubmitRankingResponse response;
      auto submit_context = runtime::ContextWithTimeout(absl::Seconds(30));
      const absl::Status s = runtime::FromGrpcStatus(stub->SubmitRanking(submit_context.get(), submit, &response));
      if (s.ok()) {
        ++submitted;
        out << "  recorded (" << response.completed() << " answered in this round so far)\n";
      } else if (absl::IsInvalidArgument(s)) {
        out << "  refused: " << s.message() << "\n";
        continue;
      } else {
        out << "  not recorded: " << s.message() << "\n";  // expired, withdrawn or answered by someone else
      }
      break;
    }
  }
  return submitted;
}

}  // namespace rlhf::cli
