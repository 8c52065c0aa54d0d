// A run's metrics.jsonl: one object a line,
//   {"time": "2024-05-01T12:00:00Z", "stage": "ppo", "round": 1, "step": 20,
//    "metrics": {"ppo/mean_reward": 0.31, "ppo/kl": 0.12}}
// stage is one of pretrain, sft, reward_model, ppo, eval (others are accepted and shown after these); round and step
// are integers >= 0; metric values are numbers, or null for a value that was not finite (which plots leave out).
// "time" (RFC 3339) is optional; unknown keys are ignored.
#ifndef RLHF_TOOLS_REPORT_RUN_METRICS_H_
#define RLHF_TOOLS_REPORT_RUN_METRICS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rlhf::report {

struct MetricsRecord {
  std::string time;  // empty when absent
  std::string stage;
  int64_t round = 0;
  int64_t step = 0;
  // In file order; a null value is kept as NaN.
  std::vector<std::pair<std::string, double>> metrics;
};

// The JSON line of a record, without "\n" (NaN and infinities are written as null).
std::string MetricsRecordToJsonLine(const MetricsRecord& record);

// Parses one line. InvalidArgument naming the field ("stage: missing", "metrics.\"val/loss\": expected a number or
// null, got a JSON string").
absl::StatusOr<MetricsRecord> ParseMetricsLine(absl::string_view line);

struct MetricsFile {
  std::vector<MetricsRecord> records;
  // A last line without its "\n" that does not parse (a write cut short by a crash) is left out and described here
  // ("path:line: message"); empty when there was none.
  std::string torn_last_line;
};

// Reads metrics.jsonl. Blank lines are skipped. Any other bad line fails the read with InvalidArgument
// "path:line: message"; a missing file is NotFound.
absl::StatusOr<MetricsFile> ReadMetricsFile(const std::string& path);

}  // namespace rlhf::report

#endif  // RLHF_TOOLS_REPORT_RUN_METRICS_H_
