#include "common/tokenizer/byte_tokenizer.h"

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/tokenizer/utf8.h"
#include "common/tokenizer/vocab_ids.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "common/util/json_errors.h"
#include "nlohmann/json.hpp"

namespace rlhf::tokenizer {
namespace {

using internal::QuoteForMessage;

// The id of the special token `name` (the option `field`), or an error.
absl::StatusOr<std::optional<int32_t>> FindSpecial(const std::vector<internal::SpecialToken>& specials,
                                                   const std::optional<std::string>& name, absl::string_view field) {
  if (!name.has_value()) return std::nullopt;
  for (const internal::SpecialToken& special : specials) {
    if (special.content == *name) return special.id;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, "=", QuoteForMessage(*name), " is not one of the special tokens"));
}

// Reads the optional string field `key` ("eos_token"/"pad_token"): absent or null -> nullopt.
absl::StatusOr<std::optional<std::string>> OptionalString(const nlohmann::json& json, const char* key) {
  const auto it = json.find(key);
  if (it == json.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": expected a string or null, got a JSON ", it->type_name()));
  }
  return it->get<std::string>();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ByteTokenizer>> ByteTokenizer::Create(ByteTokenizerOptions options) {
  std::unique_ptr<ByteTokenizer> tokenizer(new ByteTokenizer());
  absl::flat_hash_set<absl::string_view> contents;
  for (size_t i = 0; i < options.special_tokens.size(); ++i) {
    const std::string& content = options.special_tokens[i];
    if (content.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("special_tokens[", i, "] is empty"));
    }
    if (!internal::DecodeUtf8(content).has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("special_tokens[", i, "]=", QuoteForMessage(content), " is not valid UTF-8"));
    }
    if (!contents.insert(content).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("special_tokens[", i, "]=", QuoteForMessage(content), " appears more than once"));
    }
    tokenizer->specials_.push_back({content, kNumByteIds + static_cast<int32_t>(i)});
  }
  ASSIGN_OR_RETURN(tokenizer->eos_id_, FindSpecial(tokenizer->specials_, options.eos_token, "eos_token"));
  ASSIGN_OR_RETURN(tokenizer->pad_id_, FindSpecial(tokenizer->specials_, options.pad_token, "pad_token"));
  tokenizer->options_ = std::move(options);
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<ByteTokenizer>> ByteTokenizer::FromJson(absl::string_view json_text) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(json_text.begin(), json_text.end());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("not valid JSON: ", util::JsonErrorText(e.what())));
  }
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("expected a JSON object, got a JSON ", json.type_name()));
  }
  for (const auto& [key, value] : json.items()) {
    if (key != "type" && key != "version" && key != "special_tokens" && key != "eos_token" && key != "pad_token") {
      return absl::InvalidArgumentError(absl::StrCat("unknown field ", QuoteForMessage(key)));
    }
  }
  const auto type = json.find("type");
  if (type == json.end() || !type->is_string() || type->get<std::string>() != kByteKind) {
    return absl::InvalidArgumentError(absl::StrCat("type: expected \"", kByteKind, "\", got ",
                                                   type == json.end() ? "nothing" : QuoteForMessage(type->dump())));
  }
  if (const auto version = json.find("version"); version != json.end()) {
    if (!version->is_number_integer() || version->get<int64_t>() != kFormatVersion) {
      return absl::InvalidArgumentError(absl::StrCat("version: expected ", kFormatVersion, ", got ",
                                                     QuoteForMessage(version->dump())));
    }
  }
  ByteTokenizerOptions options;
  options.special_tokens.clear();
  if (const auto specials = json.find("special_tokens"); specials != json.end()) {
    if (!specials->is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat("special_tokens: expected an array, got a JSON ", specials->type_name()));
    }
    for (size_t i = 0; i < specials->size(); ++i) {
      const nlohmann::json& special = (*specials)[i];
      const std::string field = absl::StrCat("special_tokens[", i, "]");
      if (!special.is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": expected an object {\"id\", \"content\"}, got a JSON ", special.type_name()));
      }
      const auto id = special.find("id");
      const int64_t expected_id = kNumByteIds + static_cast<int64_t>(i);
      if (id == special.end() || !id->is_number_integer() || id->get<int64_t>() != expected_id) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ".id: expected ", expected_id, " (special tokens follow the 256 byte ids in order), got ",
            id == special.end() ? "nothing" : id->dump()));
      }
      const auto content = special.find("content");
      if (content == special.end() || !content->is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".content: expected a string"));
      }
      options.special_tokens.push_back(content->get<std::string>());
    }
  }
  ASSIGN_OR_RETURN(options.eos_token, OptionalString(json, "eos_token"));
  ASSIGN_OR_RETURN(options.pad_token, OptionalString(json, "pad_token"));
  return Create(std::move(options));
}

absl::StatusOr<std::unique_ptr<ByteTokenizer>> ByteTokenizer::Load(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string json, util::ReadFile(path));
  absl::StatusOr<std::unique_ptr<ByteTokenizer>> tokenizer = FromJson(json);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(), absl::StrCat(path, ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

std::string ByteTokenizer::ToJson() const {
  nlohmann::ordered_json json;
  json["type"] = kByteKind;
  json["version"] = kFormatVersion;
  json["special_tokens"] = nlohmann::ordered_json::array();
  for (const internal::SpecialToken& special : specials_) {
    json["special_tokens"].push_back({{"id", special.id}, {"content", special.content}});
  }
  json["eos_token"] = options_.eos_token.has_value() ? nlohmann::ordered_json(*options_.eos_token)
                                                      : nlohmann::ordered_json(nullptr);
  json["pad_token"] = options_.pad_token.has_value() ? nlohmann::ordered_json(*options_.pad_token)
                                                      : nlohmann::ordered_json(nullptr);
  // Create checked that every string here is valid UTF-8; `replace` only makes sure dump() cannot throw.
  return json.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

absl::Status ByteTokenizer::Save(const std::string& path) const {
  return util::WriteFileAtomically(path, ToJson());
}

absl::StatusOr<std::vector<int32_t>> ByteTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  RETURN_IF_ERROR(internal::SplitOnSpecialTokens(
      text, specials_,
      [&](absl::string_view piece) {
        for (const char c : piece) ids.push_back(static_cast<unsigned char>(c));
        return absl::OkStatus();
      },
      [&](int32_t id) { ids.push_back(id); }));
  return ids;
}

absl::StatusOr<std::vector<int32_t>> ByteTokenizer::EncodeOrdinary(absl::string_view text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

absl::StatusOr<std::string> ByteTokenizer::Decode(absl::Span<const int32_t> ids) const {
  RETURN_IF_ERROR(internal::CheckIdsInVocabulary(ids, VocabSize()));
  std::string text;
  text.reserve(ids.size());
  for (const int32_t id : ids) {
    if (id < kNumByteIds) {
      text.push_back(static_cast<char>(id));
    } else {
      text += specials_[id - kNumByteIds].content;
    }
  }
  return text;
}

}  // namespace rlhf::tokenizer
