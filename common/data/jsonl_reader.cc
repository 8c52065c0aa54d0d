#include "common/data/jsonl_reader.h"

#include <climits>
#include <cstdint>
#include <exception>
#include <memory>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "common/data/line_reader.h"
#include "common/util/json_errors.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace rlhf::data {
namespace {

using internal::Line;
using internal::LineReader;
using ::nlohmann::json;

// Longest error message kept for one record; JSON parser messages quote the token they stopped at, which can be as
// long as the line.
constexpr size_t kMaxMessageBytes = 300;

// `text` cut to at most `max_bytes` on a UTF-8 character boundary, marked with "...".
std::string Truncate(std::string text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t end = max_bytes;
  while (end > 0 && (static_cast<uint8_t>(text[end]) & 0xC0) == 0x80) --end;
  text.resize(end);
  text += "...";
  return text;
}

bool IsBlank(absl::string_view line) {
  for (char c : line) {
    if (c != ' ' && c != '\t') return false;
  }
  return true;
}

// A JSON value as it appears in an error message, shortened; arrays and objects by their type only (printing them
// would recurse as deep as they nest).
std::string Quote(const json& value) {
  if (value.is_structured()) return value.type_name();
  return Truncate(value.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace), 40);
}

absl::Status ValidateReadOptions(const ReadOptions& options) {
  if (options.max_line_bytes == 0) return absl::InvalidArgumentError("ReadOptions.max_line_bytes must be > 0");
  if (options.max_responses_per_comparison < kMinResponsesPerComparison) {
    return absl::InvalidArgumentError(
        absl::StrCat("ReadOptions.max_responses_per_comparison must be >= ", kMinResponsesPerComparison, ", got ",
                     options.max_responses_per_comparison));
  }
  return absl::OkStatus();
}

// Records a bad record in `result`; in kFail mode returns it as the error that ends the read.
template <typename Record>
absl::Status ReportBadRecord(const std::string& path, size_t line, std::string message, const ReadOptions& options,
                             ReadResult<Record>* result) {
  RecordError error{path, line, Truncate(std::move(message), kMaxMessageBytes)};
  if (options.policy == BadRecordPolicy::kFail) return absl::InvalidArgumentError(error.ToString());
  ++result->num_bad_records;
  if (result->errors.size() < options.max_reported_errors) result->errors.push_back(std::move(error));
  return absl::OkStatus();
}

std::string LineTooLongMessage(const Line& line, const ReadOptions& options) {
  return absl::StrCat("line has ", line.length, " bytes, more than the limit of ", options.max_line_bytes,
                      " (ReadOptions.max_line_bytes)");
}

// Empty when `line` is well-formed UTF-8, otherwise the reason.
std::string Utf8Problem(absl::string_view line) {
  const size_t bad = FindInvalidUtf8(line);
  if (bad == absl::string_view::npos) return "";
  return absl::StrFormat("line is not valid UTF-8 (ill-formed byte 0x%02X at byte offset %d)",
                         static_cast<uint8_t>(line[bad]), bad);
}

// ---- Fields of a JSON object --------------------------------------------------------------------------------------

// `object[key]` as a string. `where` prefixes the message ("" at the top level, "responses[2]" inside the array).
absl::StatusOr<std::string> StringField(const json& object, const char* key, const std::string& where = "") {
  const auto it = object.find(key);
  if (it == object.end()) {
    if (where.empty()) return absl::InvalidArgumentError(absl::StrCat("missing required field \"", key, "\""));
    return absl::InvalidArgumentError(absl::StrCat(where, " is missing required field \"", key, "\""));
  }
  if (!it->is_string()) {
    const std::string field = where.empty() ? absl::StrCat("field \"", key, "\"") : absl::StrCat(where, ".", key);
    return absl::InvalidArgumentError(absl::StrCat(field, " must be a string, got ", it->type_name()));
  }
  return it->get<std::string>();
}

absl::StatusOr<int> RankField(const json& object, const std::string& where) {
  const auto it = object.find("rank");
  if (it == object.end()) {
    return absl::InvalidArgumentError(absl::StrCat(where, " is missing required field \"rank\""));
  }
  const std::string field = absl::StrCat(where, ".rank");
  if (it->is_number_unsigned()) {
    const uint64_t rank = it->get<uint64_t>();
    if (rank > static_cast<uint64_t>(INT_MAX)) {
      return absl::InvalidArgumentError(absl::StrCat(field, " ", rank, " is too large (at most ", INT_MAX, ")"));
    }
    return static_cast<int>(rank);  // 0 is left to ValidateComparison, which words it like the cases below
  }
  return absl::InvalidArgumentError(absl::StrCat(field, " must be a positive integer, got ", Quote(*it)));
}

// The prompt of a record: "prompt" (a string) or "messages" (a non-empty array of {"role", "content"} strings),
// exactly one of them. For messages, `prompt` becomes their one-text form (ChatPromptText).
absl::Status PromptField(const json& object, std::string* prompt, std::vector<ChatTurn>* messages) {
  const bool has_prompt = object.contains("prompt");
  const auto it = object.find("messages");
  if (it == object.end()) {
    ASSIGN_OR_RETURN(*prompt, StringField(object, "prompt"));
    return absl::OkStatus();
  }
  if (has_prompt) {
    return absl::InvalidArgumentError("has both \"prompt\" and \"messages\": give the prompt as one of them");
  }
  if (!it->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("field \"messages\" must be an array, got ", it->type_name()));
  }
  if (it->empty()) return absl::InvalidArgumentError("field \"messages\" is empty");
  messages->clear();
  for (size_t i = 0; i < it->size(); ++i) {
    const std::string where = absl::StrCat("messages[", i, "]");
    const json& element = (*it)[i];
    if (!element.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(where, " must be an object, got ", element.type_name()));
    }
    ChatTurn turn;
    ASSIGN_OR_RETURN(turn.role, StringField(element, "role", where));
    ASSIGN_OR_RETURN(turn.content, StringField(element, "content", where));
    messages->push_back(std::move(turn));
  }
  *prompt = ChatPromptText(*messages);
  return absl::OkStatus();
}

// ---- Records from JSON objects -------------------------------------------------------------------------------------

struct SftParser {
  absl::StatusOr<SftExample> operator()(const json& object) const {
    SftExample example;
    RETURN_IF_ERROR(PromptField(object, &example.prompt, &example.messages));
    if (!example.messages.empty() && !object.contains("response")) {
      // The demonstration is the conversation's last message, the assistant's.
      if (example.messages.back().role != "assistant") {
        return absl::InvalidArgumentError(
            "missing \"response\", and the last of \"messages\" is not the assistant's to take as the response");
      }
      if (example.messages.size() < 2) {
        return absl::InvalidArgumentError("\"messages\" holds only the response: there is no prompt before it");
      }
      example.response = std::move(example.messages.back().content);
      example.messages.pop_back();
      example.prompt = ChatPromptText(example.messages);
    } else {
      ASSIGN_OR_RETURN(example.response, StringField(object, "response"));
    }
    RETURN_IF_ERROR(ValidateSftExample(example));
    return example;
  }
};

struct ComparisonParser {
  size_t max_responses;

  absl::StatusOr<Comparison> operator()(const json& object) const {
    const bool ranked = object.contains("responses");
    const bool pairwise = object.contains("chosen") || object.contains("rejected");
    if (ranked && pairwise) {
      return absl::InvalidArgumentError(
          "ambiguous comparison: has both \"responses\" (ranked form) and \"chosen\"/\"rejected\" (pairwise form)");
    }
    if (!ranked && !pairwise) {
      return absl::InvalidArgumentError(
          "missing \"responses\" (ranked form) or \"chosen\" and \"rejected\" (pairwise form)");
    }
    Comparison comparison;
    RETURN_IF_ERROR(PromptField(object, &comparison.prompt, &comparison.messages));
    if (pairwise) {
      ASSIGN_OR_RETURN(std::string chosen, StringField(object, "chosen"));
      ASSIGN_OR_RETURN(std::string rejected, StringField(object, "rejected"));
      if (chosen == rejected) {
        return absl::InvalidArgumentError("\"chosen\" and \"rejected\" are the same text: no preference");
      }
      comparison.responses.push_back({std::move(chosen), 1});
      comparison.responses.push_back({std::move(rejected), 2});
    } else {
      const json& responses = object.at("responses");
      if (!responses.is_array()) {
        return absl::InvalidArgumentError(
            absl::StrCat("field \"responses\" must be an array, got ", responses.type_name()));
      }
      // Checked before looking at the elements, so an oversized array costs nothing more.
      if (responses.size() > max_responses) {
        return absl::InvalidArgumentError(
            absl::StrCat("has ", responses.size(), " responses, more than the limit of ", max_responses));
      }
      for (size_t i = 0; i < responses.size(); ++i) {
        const std::string where = absl::StrCat("responses[", i, "]");
        const json& element = responses[i];
        if (!element.is_object()) {
          return absl::InvalidArgumentError(absl::StrCat(where, " must be an object, got ", element.type_name()));
        }
        RankedResponse response;
        ASSIGN_OR_RETURN(response.text, StringField(element, "text", where));
        ASSIGN_OR_RETURN(response.rank, RankField(element, where));
        comparison.responses.push_back(std::move(response));
      }
    }
    RETURN_IF_ERROR(ValidateComparison(comparison, max_responses));
    return comparison;
  }
};

struct PromptParser {
  absl::StatusOr<PromptRecord> operator()(const json& object) const {
    PromptRecord record;
    RETURN_IF_ERROR(PromptField(object, &record.prompt, &record.messages));
    RETURN_IF_ERROR(ValidatePromptRecord(record));
    return record;
  }
};

struct PretrainingParser {
  absl::StatusOr<PretrainingText> operator()(const json& object) const {
    PretrainingText text;
    ASSIGN_OR_RETURN(text.text, StringField(object, "text"));
    RETURN_IF_ERROR(ValidatePretrainingText(text));
    return text;
  }
};

// The record on one non-blank, well-formed UTF-8 line, or why there is none. No exception escapes.
template <typename Record, typename Parser>
absl::StatusOr<Record> ParseLine(const std::string& text, const Parser& parser) {
  json object;
  try {
    object = json::parse(text);
  } catch (const json::exception& e) {
    // The parser's text without the bytes it quotes: errors never echo a file's contents.
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON: ", util::JsonErrorText(e.what())));
  }
  if (!object.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("expected a JSON object, got ", object.type_name()));
  }
  try {
    return parser(object);
  } catch (const std::exception& e) {  // not expected: the parsers check types before every access
    return absl::InternalError(absl::StrCat("unexpected error reading the record: ", e.what()));
  }
}

template <typename Record, typename Parser>
absl::StatusOr<ReadResult<Record>> ReadJsonl(const std::string& path, const ReadOptions& options,
                                             const Parser& parser) {
  RETURN_IF_ERROR(ValidateReadOptions(options));
  ASSIGN_OR_RETURN(std::unique_ptr<LineReader> reader,
                   LineReader::Open(path, options.max_line_bytes, options.keep_going));
  ReadResult<Record> result;
  Line line;
  while (true) {
    ASSIGN_OR_RETURN(const bool more, reader->Next(&line));
    if (!more) break;
    ++result.num_lines;
    std::string problem;
    if (line.too_long) {
      problem = LineTooLongMessage(line, options);
    } else if (IsBlank(line.text)) {
      ++result.num_blank_lines;
      continue;
    } else {
      problem = Utf8Problem(line.text);
    }
    if (problem.empty()) {
      absl::StatusOr<Record> record = ParseLine<Record>(line.text, parser);
      if (record.ok()) {
        result.records.push_back(*std::move(record));
        continue;
      }
      if (!absl::IsInvalidArgument(record.status())) return record.status();
      problem = std::string(record.status().message());
    }
    RETURN_IF_ERROR(ReportBadRecord(path, line.number, std::move(problem), options, &result));
  }
  return result;
}

absl::StatusOr<PretrainingReadResult> ReadPlainText(const std::string& path, const ReadOptions& options) {
  RETURN_IF_ERROR(ValidateReadOptions(options));
  ASSIGN_OR_RETURN(std::unique_ptr<LineReader> reader,
                   LineReader::Open(path, options.max_line_bytes, options.keep_going));
  PretrainingReadResult result;
  std::string document;
  bool in_document = false;
  bool document_bad = false;  // already reported
  auto end_document = [&] {
    if (in_document && !document_bad) result.records.push_back({std::move(document)});
    document.clear();
    in_document = false;
    document_bad = false;
  };
  Line line;
  while (true) {
    ASSIGN_OR_RETURN(const bool more, reader->Next(&line));
    if (!more) break;
    ++result.num_lines;
    std::string problem;
    if (line.too_long) {
      problem = LineTooLongMessage(line, options);
    } else if (IsBlank(line.text)) {
      ++result.num_blank_lines;
      end_document();
      continue;
    } else {
      problem = Utf8Problem(line.text);
    }
    in_document = true;
    if (!problem.empty()) {
      if (!document_bad) {
        RETURN_IF_ERROR(ReportBadRecord(path, line.number, std::move(problem), options, &result));
        document_bad = true;
        document.clear();
      }
      continue;
    }
    if (document_bad) continue;
    if (!document.empty()) document += '\n';
    document += line.text;
  }
  end_document();
  return result;
}

}  // namespace

std::string RecordError::ToString() const { return absl::StrCat(path, ":", line, ": ", message); }

absl::StatusOr<SftReadResult> ReadSftExamples(const std::string& path, const ReadOptions& options) {
  return ReadJsonl<SftExample>(path, options, SftParser{});
}

absl::StatusOr<ComparisonReadResult> ReadComparisons(const std::string& path, const ReadOptions& options) {
  return ReadJsonl<Comparison>(path, options, ComparisonParser{options.max_responses_per_comparison});
}

absl::StatusOr<PromptReadResult> ReadPrompts(const std::string& path, const ReadOptions& options) {
  return ReadJsonl<PromptRecord>(path, options, PromptParser{});
}

absl::StatusOr<PretrainingReadResult> ReadPretrainingTexts(const std::string& path, const ReadOptions& options) {
  if (absl::EndsWith(path, ".jsonl")) return ReadJsonl<PretrainingText>(path, options, PretrainingParser{});
  if (absl::EndsWith(path, ".txt")) return ReadPlainText(path, options);
  return absl::InvalidArgumentError(
      absl::StrCat("cannot tell the format of pretraining file ", path, ": expected a .jsonl or .txt extension"));
}

}  // namespace rlhf::data
