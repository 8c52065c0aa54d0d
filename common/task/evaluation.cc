#include "common/task/evaluation.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "common/util/json_errors.h"
#include "nlohmann/json.hpp"

namespace rlhf::task {
namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

absl::StatusOr<Json> ParseObject(absl::string_view text) {
  Json json;
  try {
    json = Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("not valid JSON: ", util::JsonErrorText(e.what())));
  }
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("expected a JSON object, got a JSON ", json.type_name()));
  }
  return json;
}

absl::StatusOr<double> Number(const Json& object, const std::string& key, const std::string& field) {
  const auto it = object.find(key);
  if (it == object.end()) return absl::InvalidArgumentError(absl::StrCat(field, ": missing"));
  if (!it->is_number()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": expected a number, got a JSON ", it->type_name()));
  }
  return it->get<double>();
}

absl::StatusOr<std::optional<double>> OptionalNumber(const Json& object, const std::string& key) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": expected a number or null, got a JSON ", it->type_name()));
  }
  return it->get<double>();
}

absl::StatusOr<std::string> String(const Json& object, const std::string& key) {
  const auto it = object.find(key);
  if (it == object.end()) return absl::InvalidArgumentError(absl::StrCat(key, ": missing"));
  if (!it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": expected a string, got a JSON ", it->type_name()));
  }
  return it->get<std::string>();
}

absl::Status CheckFraction(std::optional<double> value, const std::string& field) {
  if (value.has_value() && !(*value >= 0.0 && *value <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(field, "=", *value, " is outside [0, 1]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<PolicyEvalSummary> ParsePolicy(const Json& json, const std::string& key) {
  const auto it = json.find(key);
  if (it == json.end()) return absl::InvalidArgumentError(absl::StrCat(key, ": missing"));
  if (!it->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": expected an object, got a JSON ", it->type_name()));
  }
  PolicyEvalSummary policy;
  ASSIGN_OR_RETURN(policy.mean_score, Number(*it, "mean_score", key + ".mean_score"));
  ASSIGN_OR_RETURN(policy.perfect_fraction, Number(*it, "perfect_fraction", key + ".perfect_fraction"));
  RETURN_IF_ERROR(CheckFraction(policy.perfect_fraction, key + ".perfect_fraction"));
  return policy;
}

OrderedJson OptionalJson(std::optional<double> value) {
  if (!value.has_value() || !std::isfinite(*value)) return OrderedJson(nullptr);
  return OrderedJson(*value);
}

}  // namespace

EvalSummary MakeEvalSummary(const WinRate& noiseless, const std::optional<WinRate>& noisy, const ScoreSummary& sft,
                            const ScoreSummary& ppo, std::optional<double> kl_to_sft) {
  EvalSummary summary;
  summary.num_prompts = noiseless.num_prompts;
  summary.win_rate = noiseless.win_rate;
  summary.ci_low = noiseless.ci_low;
  summary.ci_high = noiseless.ci_high;
  summary.confidence_level = noiseless.confidence_level;
  summary.kl_to_sft = kl_to_sft;
  if (noisy.has_value()) {
    summary.noisy_win_rate = noisy->win_rate;
    summary.noisy_ci_low = noisy->ci_low;
    summary.noisy_ci_high = noisy->ci_high;
  }
  summary.sft = {sft.mean_score, sft.perfect_fraction};
  summary.ppo = {ppo.mean_score, ppo.perfect_fraction};
  return summary;
}

std::string EvalSummaryToJson(const EvalSummary& s) {
  OrderedJson json;
  json["num_prompts"] = s.num_prompts;
  json["win_rate"] = s.win_rate;
  json["ci_low"] = s.ci_low;
  json["ci_high"] = s.ci_high;
  json["confidence_level"] = s.confidence_level;
  json["kl_to_sft"] = OptionalJson(s.kl_to_sft);
  json["noisy_win_rate"] = OptionalJson(s.noisy_win_rate);
  json["noisy_ci_low"] = OptionalJson(s.noisy_ci_low);
  json["noisy_ci_high"] = OptionalJson(s.noisy_ci_high);
  json["sft"] = {{"mean_score", s.sft.mean_score}, {"perfect_fraction", s.sft.perfect_fraction}};
  json["ppo"] = {{"mean_score", s.ppo.mean_score}, {"perfect_fraction", s.ppo.perfect_fraction}};
  return json.dump(2) + "\n";
}

absl::StatusOr<EvalSummary> ParseEvalSummary(absl::string_view text) {
  ASSIGN_OR_RETURN(const Json json, ParseObject(text));
  EvalSummary s;
  ASSIGN_OR_RETURN(const double num_prompts, Number(json, "num_prompts", "num_prompts"));
  if (!(num_prompts >= 0) || num_prompts != std::floor(num_prompts) || num_prompts > 9.0e15) {
    return absl::InvalidArgumentError(absl::StrCat("num_prompts=", num_prompts, " is not a count"));
  }
  s.num_prompts = static_cast<int64_t>(num_prompts);
  ASSIGN_OR_RETURN(s.win_rate, Number(json, "win_rate", "win_rate"));
  ASSIGN_OR_RETURN(s.ci_low, Number(json, "ci_low", "ci_low"));
  ASSIGN_OR_RETURN(s.ci_high, Number(json, "ci_high", "ci_high"));
  ASSIGN_OR_RETURN(s.confidence_level, Number(json, "confidence_level", "confidence_level"));
  ASSIGN_OR_RETURN(s.kl_to_sft, OptionalNumber(json, "kl_to_sft"));
  ASSIGN_OR_RETURN(s.noisy_win_rate, OptionalNumber(json, "noisy_win_rate"));
  ASSIGN_OR_RETURN(s.noisy_ci_low, OptionalNumber(json, "noisy_ci_low"));
  ASSIGN_OR_RETURN(s.noisy_ci_high, OptionalNumber(json, "noisy_ci_high"));
  RETURN_IF_ERROR(CheckFraction(s.win_rate, "win_rate"));
  RETURN_IF_ERROR(CheckFraction(s.ci_low, "ci_low"));
  RETURN_IF_ERROR(CheckFraction(s.ci_high, "ci_high"));
  RETURN_IF_ERROR(CheckFraction(s.confidence_level, "confidence_level"));
  RETURN_IF_ERROR(CheckFraction(s.noisy_win_rate, "noisy_win_rate"));
  RETURN_IF_ERROR(CheckFraction(s.noisy_ci_low, "noisy_ci_low"));
  RETURN_IF_ERROR(CheckFraction(s.noisy_ci_high, "noisy_ci_high"));
  ASSIGN_OR_RETURN(s.sft, ParsePolicy(json, "sft"));
  ASSIGN_OR_RETURN(s.ppo, ParsePolicy(json, "ppo"));
  return s;
}

absl::StatusOr<EvalSummary> ReadEvalSummary(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, util::ReadFile(path));
  absl::StatusOr<EvalSummary> summary = ParseEvalSummary(text);
  if (!summary.ok()) return absl::Status(summary.status().code(), absl::StrCat(path, ": ", summary.status().message()));
  return summary;
}

absl::Status WriteEvalSummary(const std::string& path, const EvalSummary& summary) {
  return util::WriteFileAtomically(path, EvalSummaryToJson(summary));
}

std::string EvalSampleToJsonLine(const EvalSample& sample) {
  OrderedJson json;
  json["prompt"] = sample.prompt;
  json["sft_response"] = sample.sft_response;
  json["sft_score"] = sample.sft_score;
  json["ppo_response"] = sample.ppo_response;
  json["ppo_score"] = sample.ppo_score;
  return json.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}

absl::StatusOr<EvalSample> ParseEvalSample(absl::string_view line) {
  ASSIGN_OR_RETURN(const Json json, ParseObject(line));
  EvalSample sample;
  ASSIGN_OR_RETURN(sample.prompt, String(json, "prompt"));
  ASSIGN_OR_RETURN(sample.sft_response, String(json, "sft_response"));
  ASSIGN_OR_RETURN(sample.sft_score, Number(json, "sft_score", "sft_score"));
  ASSIGN_OR_RETURN(sample.ppo_response, String(json, "ppo_response"));
  ASSIGN_OR_RETURN(sample.ppo_score, Number(json, "ppo_score", "ppo_score"));
  return sample;
}

absl::Status WriteEvalSamples(const std::string& path, const std::vector<EvalSample>& samples) {
  std::string text;
  for (const EvalSample& sample : samples) absl::StrAppend(&text, EvalSampleToJsonLine(sample), "\n");
  return util::WriteFileAtomically(path, text);
}

absl::StatusOr<std::vector<EvalSample>> ReadEvalSamples(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, util::ReadFile(path));
  std::vector<EvalSample> samples;
  size_t line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripSuffix(line, "\r");
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    absl::StatusOr<EvalSample> sample = ParseEvalSample(line);
    if (!sample.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_number, ": ", sample.status().message()));
    }
    samples.push_back(*std::move(sample));
  }
  return samples;
}

}  // namespace rlhf::task
