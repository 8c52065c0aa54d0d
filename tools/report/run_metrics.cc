#include "tools/report/run_metrics.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "common/util/json_errors.h"
#include "nlohmann/json.hpp"

namespace rlhf::report {
namespace {

using Json = nlohmann::json;

absl::StatusOr<int64_t> NonNegativeInteger(const Json& json, const char* key) {
  const auto it = json.find(key);
  if (it == json.end()) return absl::InvalidArgumentError(absl::StrCat(key, ": missing"));
  if (!it->is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": expected an integer, got ", it->dump()));
  }
  const int64_t value = it->is_number_unsigned() ? static_cast<int64_t>(it->get<uint64_t>()) : it->get<int64_t>();
  if (value < 0) return absl::InvalidArgumentError(absl::StrCat(key, ": expected >= 0, got ", value));
  return value;
}

}  // namespace

std::string MetricsRecordToJsonLine(const MetricsRecord& record) {
  nlohmann::ordered_json json;
  if (!record.time.empty()) json["time"] = record.time;
  json["stage"] = record.stage;
  json["round"] = record.round;
  json["step"] = record.step;
  json["metrics"] = nlohmann::ordered_json::object();
  for (const auto& [name, value] : record.metrics) {
    json["metrics"][name] = std::isfinite(value) ? nlohmann::ordered_json(value) : nlohmann::ordered_json(nullptr);
  }
  return json.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

absl::StatusOr<MetricsRecord> ParseMetricsLine(absl::string_view line) {
  nlohmann::ordered_json json;
  try {
    json = nlohmann::ordered_json::parse(line.begin(), line.end());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("not valid JSON: ", util::JsonErrorText(e.what())));
  }
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("expected a JSON object, got a JSON ", json.type_name()));
  }
  MetricsRecord record;
  if (const auto time = json.find("time"); time != json.end() && !time->is_null()) {
    if (!time->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("time: expected a string, got a JSON ", time->type_name()));
    }
    record.time = time->get<std::string>();
  }
  const auto stage = json.find("stage");
  if (stage == json.end()) return absl::InvalidArgumentError("stage: missing");
  if (!stage->is_string() || stage->get<std::string>().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("stage: expected a non-empty string, got ", stage->dump()));
  }
  record.stage = stage->get<std::string>();
  ASSIGN_OR_RETURN(record.round, NonNegativeInteger(json, "round"));
  ASSIGN_OR_RETURN(record.step, NonNegativeInteger(json, "step"));
  const auto metrics = json.find("metrics");
  if (metrics == json.end()) return absl::InvalidArgumentError("metrics: missing");
  if (!metrics->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("metrics: expected an object, got a JSON ", metrics->type_name()));
  }
  for (const auto& [name, value] : metrics->items()) {
    if (value.is_null()) {
      record.metrics.emplace_back(name, std::numeric_limits<double>::quiet_NaN());
    } else if (value.is_number()) {
      record.metrics.emplace_back(name, value.get<double>());
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics.\"", name, "\": expected a number or null, got a JSON ", value.type_name()));
    }
  }
  return record;
}

absl::StatusOr<MetricsFile> ReadMetricsFile(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, util::ReadFile(path));
  MetricsFile file;
  const std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  for (size_t i = 0; i < lines.size(); ++i) {
    const absl::string_view line = absl::StripSuffix(lines[i], "\r");
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    absl::StatusOr<MetricsRecord> record = ParseMetricsLine(line);
    if (record.ok()) {
      file.records.push_back(*std::move(record));
      continue;
    }
    const std::string where = absl::StrCat(path, ":", i + 1, ": ", record.status().message());
    // The last piece of a split has no "\n" after it.
    if (i + 1 == lines.size()) {
      file.torn_last_line = where;
      break;
    }
    return absl::InvalidArgumentError(where);
  }
  return file;
}

}  // namespace rlhf::report
