// The files a run's evaluation writes (and the report reads): eval/summary.json and eval/samples.jsonl.
//
//   summary.json  {"num_prompts": 2000, "win_rate": 0.57, "ci_low": 0.55, "ci_high": 0.59, "confidence_level": 0.95,
//                  "kl_to_sft": 0.52, "noisy_win_rate": 0.53, "noisy_ci_low": 0.51, "noisy_ci_high": 0.55,
//                  "sft": {"mean_score": -0.6, "perfect_fraction": 0.64},
//                  "ppo": {"mean_score": -0.4, "perfect_fraction": 0.77}}
//     win_rate is PPO's over SFT on the held-out prompts, judged by the noiseless labeler, ties as half; the noisy_*
//     fields the same judged with the labeler's noise (null or absent when not measured); kl_to_sft in nats per
//     response (null or absent when not measured).
//   samples.jsonl {"prompt": "...", "sft_response": "...", "sft_score": -1, "ppo_response": "...", "ppo_score": 0}
//     one line per prompt: each policy's sampled response and its score.
#ifndef RLHF_COMMON_TASK_EVALUATION_H_
#define RLHF_COMMON_TASK_EVALUATION_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/task/win_rate.h"

namespace rlhf::task {

struct PolicyEvalSummary {
  double mean_score = 0;
  double perfect_fraction = 0;
};

struct EvalSummary {
  int64_t num_prompts = 0;
  double win_rate = 0;
  double ci_low = 0;
  double ci_high = 0;
  double confidence_level = 0.95;
  std::optional<double> kl_to_sft;
  std::optional<double> noisy_win_rate;
  std::optional<double> noisy_ci_low;
  std::optional<double> noisy_ci_high;
  PolicyEvalSummary sft;
  PolicyEvalSummary ppo;
};

// The summary of PPO against SFT: `noiseless` is ComputeWinRate(ppo scores, sft scores); `noisy` the same with the
// noisy labeler's judgements, if measured.
EvalSummary MakeEvalSummary(const WinRate& noiseless, const std::optional<WinRate>& noisy, const ScoreSummary& sft,
                            const ScoreSummary& ppo, std::optional<double> kl_to_sft);

// The summary.json text (pretty-printed, keys in the order above; unset optionals are null).
std::string EvalSummaryToJson(const EvalSummary& summary);

// Parses summary.json. Unknown keys are ignored. InvalidArgument naming the field for a missing required field
// (num_prompts, win_rate, ci_low, ci_high, confidence_level, sft, ppo and their mean_score, perfect_fraction), a
// value of the wrong type, or a value out of range (fractions outside [0, 1], a negative num_prompts).
absl::StatusOr<EvalSummary> ParseEvalSummary(absl::string_view json);

// Reads and parses a summary.json file; errors start with the path.
absl::StatusOr<EvalSummary> ReadEvalSummary(const std::string& path);

// Writes summary.json atomically (util::WriteFileAtomically).
absl::Status WriteEvalSummary(const std::string& path, const EvalSummary& summary);

struct EvalSample {
  std::string prompt;
  std::string sft_response;
  double sft_score = 0;
  std::string ppo_response;
  double ppo_score = 0;
};

// One samples.jsonl line, without the "\n". Bytes that are not UTF-8 come out as U+FFFD.
std::string EvalSampleToJsonLine(const EvalSample& sample);

// Parses one line; unknown keys are ignored. InvalidArgument naming the field.
absl::StatusOr<EvalSample> ParseEvalSample(absl::string_view line);

// Writes samples.jsonl atomically, one line per sample.
absl::Status WriteEvalSamples(const std::string& path, const std::vector<EvalSample>& samples);

// Reads samples.jsonl; blank lines are skipped; a bad line fails the read with InvalidArgument "path:line: message".
absl::StatusOr<std::vector<EvalSample>> ReadEvalSamples(const std::string& path);

}  // namespace rlhf::task

#endif  // RLHF_COMMON_TASK_EVALUATION_H_
