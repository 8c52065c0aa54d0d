// The run report: one self-contained HTML file (inline CSS and SVG; no script, no external asset) that summarises a
// run directory, and the text table the CLI prints at the end of a run.
//
// It reads, each optional (a missing file leaves its section out):
//   metrics.jsonl        per-stage curves (run_metrics.h): losses, reward-model accuracy, PPO reward, KL, ...
//   eval/summary.json    the held-out comparison of PPO with SFT (common/task/evaluation.h): win-rate and its
//                        interval, mean score and perfect answers per policy, KL to SFT
//   eval/samples.jsonl   SFT and PPO responses to the same prompts, side by side
//   run.json             the run's configuration and state, shown as it is
#ifndef RLHF_TOOLS_REPORT_REPORT_H_
#define RLHF_TOOLS_REPORT_REPORT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/task/evaluation.h"

namespace rlhf::report {

struct ReportOptions {
  // The page title; empty: "RLHF run <run directory's name>".
  std::string title;
  // Sample responses shown (the first ones of eval/samples.jsonl); the rest are counted.
  int32_t max_samples = 50;
};

// The HTML of the report of `run_dir`. NotFound when run_dir is not a directory or holds none of the files above;
// InvalidArgument "path:line: message" (or "path: message") for a malformed file; a torn last line of
// metrics.jsonl (a crash mid-write) is left out and mentioned in the report.
absl::StatusOr<std::string> RenderRunReport(const std::string& run_dir, const ReportOptions& options = {});

// RenderRunReport, written to `out_path` atomically.
absl::Status WriteRunReport(const std::string& run_dir, const std::string& out_path, const ReportOptions& options = {});

// The evaluation summary as a plain-text table, e.g.
//                      SFT       PPO
//   mean true score   -0.612    -0.401
//   perfect answers    64.3%     77.1%
//
//   PPO vs SFT win-rate, noiseless labeler: 0.571  95% CI [0.552, 0.590]  (2000 prompts, ties count half)
//   PPO vs SFT win-rate, noisy labeler:     0.532  95% CI [0.512, 0.552]
//   KL(PPO || SFT): 0.52 nats per response
// Lines of unmeasured values (noisy win-rate, KL) are left out. Ends with "\n".
std::string FormatSummaryTable(const task::EvalSummary& summary);

}  // namespace rlhf::report

#endif  // RLHF_TOOLS_REPORT_REPORT_H_
