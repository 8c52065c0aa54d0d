#include "common/tokenizer/word_tokenizer.h"

#include <utility>

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

bool IsAsciiWhitespace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

// The id of special token `name` (the option `field`), or an error.
absl::StatusOr<int32_t> FindSpecial(const std::vector<internal::SpecialToken>& specials, const std::string& name,
                                    absl::string_view field) {
  for (const internal::SpecialToken& special : specials) {
    if (special.content == name) return special.id;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, "=", QuoteForMessage(name), " is not one of the special tokens"));
}

absl::StatusOr<std::optional<int32_t>> FindOptionalSpecial(const std::vector<internal::SpecialToken>& specials,
                                                           const std::optional<std::string>& name,
                                                           absl::string_view field) {
  if (!name.has_value()) return std::nullopt;
  ASSIGN_OR_RETURN(const int32_t id, FindSpecial(specials, *name, field));
  return id;
}

// Reads the optional string field `key`: absent or null -> nullopt.
absl::StatusOr<std::optional<std::string>> OptionalString(const nlohmann::json& json, const char* key) {
  const auto it = json.find(key);
  if (it == json.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": expected a string or null, got a JSON ", it->type_name()));
  }
  return it->get<std::string>();
}

// Reads the array of strings `key` (required).
absl::StatusOr<std::vector<std::string>> StringArray(const nlohmann::json& json, const char* key) {
  const auto it = json.find(key);
  if (it == json.end()) return absl::InvalidArgumentError(absl::StrCat(key, ": missing (an array of strings)"));
  if (!it->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, ": expected an array of strings, got a JSON ", it->type_name()));
  }
  std::vector<std::string> out;
  out.reserve(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    const nlohmann::json& item = (*it)[i];
    if (!item.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(key, "[", i, "]: expected a string, got a JSON ", item.type_name()));
    }
    out.push_back(item.get<std::string>());
  }
  return out;
}

nlohmann::ordered_json OptionalJson(const std::optional<std::string>& value) {
  return value.has_value() ? nlohmann::ordered_json(*value) : nlohmann::ordered_json(nullptr);
}

}  // namespace

absl::StatusOr<std::unique_ptr<WordTokenizer>> WordTokenizer::Create(WordTokenizerOptions options) {
  std::unique_ptr<WordTokenizer> tokenizer(new WordTokenizer());
  if (options.vocab.empty()) return absl::InvalidArgumentError("vocab is empty");
  if (options.vocab.size() > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab has ", options.vocab.size(), " entries; at most ", INT32_MAX));
  }
  absl::flat_hash_map<absl::string_view, int32_t> index;
  for (size_t i = 0; i < options.vocab.size(); ++i) {
    const std::string& word = options.vocab[i];
    if (word.empty()) return absl::InvalidArgumentError(absl::StrCat("vocab[", i, "] is empty"));
    if (!internal::DecodeUtf8(word).has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("vocab[", i, "]=", QuoteForMessage(word), " is not valid UTF-8"));
    }
    for (const char c : word) {
      if (IsAsciiWhitespace(c)) {
        return absl::InvalidArgumentError(
            absl::StrCat("vocab[", i, "]=", QuoteForMessage(word), " contains whitespace (words are split on it)"));
      }
    }
    if (!index.emplace(word, static_cast<int32_t>(i)).second) {
      return absl::InvalidArgumentError(absl::StrCat("vocab[", i, "]=", QuoteForMessage(word),
                                                     " appears more than once (first at vocab[", index[word], "])"));
    }
  }
  tokenizer->is_special_.assign(options.vocab.size(), false);
  for (size_t i = 0; i < options.special_tokens.size(); ++i) {
    const std::string& content = options.special_tokens[i];
    const auto it = index.find(content);
    if (it == index.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("special_tokens[", i, "]=", QuoteForMessage(content), " is not in vocab"));
    }
    if (tokenizer->is_special_[it->second]) {
      return absl::InvalidArgumentError(
          absl::StrCat("special_tokens[", i, "]=", QuoteForMessage(content), " appears more than once"));
    }
    tokenizer->is_special_[it->second] = true;
    tokenizer->specials_.push_back({content, it->second});
  }
  for (size_t i = 0; i < options.vocab.size(); ++i) {
    if (!tokenizer->is_special_[i]) tokenizer->ordinary_.emplace(options.vocab[i], static_cast<int32_t>(i));
  }
  if (options.unk_token.empty()) {
    return absl::InvalidArgumentError("unk_token is empty: a word tokenizer needs an unknown token");
  }
  ASSIGN_OR_RETURN(tokenizer->unk_id_, FindSpecial(tokenizer->specials_, options.unk_token, "unk_token"));
  ASSIGN_OR_RETURN(tokenizer->eos_id_, FindOptionalSpecial(tokenizer->specials_, options.eos_token, "eos_token"));
  ASSIGN_OR_RETURN(tokenizer->pad_id_, FindOptionalSpecial(tokenizer->specials_, options.pad_token, "pad_token"));
  ASSIGN_OR_RETURN(tokenizer->bos_id_, FindOptionalSpecial(tokenizer->specials_, options.bos_token, "bos_token"));
  tokenizer->options_ = std::move(options);
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<WordTokenizer>> WordTokenizer::FromJson(absl::string_view json_text) {
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
    if (key != "type" && key != "version" && key != "vocab" && key != "special_tokens" && key != "unk_token" &&
        key != "eos_token" && key != "pad_token" && key != "bos_token") {
      return absl::InvalidArgumentError(absl::StrCat("unknown field ", QuoteForMessage(key)));
    }
  }
  const auto type = json.find("type");
  if (type == json.end() || !type->is_string() || type->get<std::string>() != kWordKind) {
    return absl::InvalidArgumentError(absl::StrCat("type: expected \"", kWordKind, "\", got ",
                                                   type == json.end() ? "nothing" : QuoteForMessage(type->dump())));
  }
  if (const auto version = json.find("version"); version != json.end()) {
    if (!version->is_number_integer() || version->get<int64_t>() != kFormatVersion) {
      return absl::InvalidArgumentError(
          absl::StrCat("version: expected ", kFormatVersion, ", got ", QuoteForMessage(version->dump())));
    }
  }
  WordTokenizerOptions options;
  ASSIGN_OR_RETURN(options.vocab, StringArray(json, "vocab"));
  ASSIGN_OR_RETURN(options.special_tokens, StringArray(json, "special_tokens"));
  ASSIGN_OR_RETURN(const std::optional<std::string> unk, OptionalString(json, "unk_token"));
  if (!unk.has_value()) return absl::InvalidArgumentError("unk_token: missing (a word tokenizer needs one)");
  options.unk_token = *unk;
  ASSIGN_OR_RETURN(options.eos_token, OptionalString(json, "eos_token"));
  ASSIGN_OR_RETURN(options.pad_token, OptionalString(json, "pad_token"));
  ASSIGN_OR_RETURN(options.bos_token, OptionalString(json, "bos_token"));
  return Create(std::move(options));
}

absl::StatusOr<std::unique_ptr<WordTokenizer>> WordTokenizer::Load(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string json, util::ReadFile(path));
  absl::StatusOr<std::unique_ptr<WordTokenizer>> tokenizer = FromJson(json);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(), absl::StrCat(path, ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

std::string WordTokenizer::ToJson() const {
  nlohmann::ordered_json json;
  json["type"] = kWordKind;
  json["version"] = kFormatVersion;
  json["vocab"] = options_.vocab;
  json["special_tokens"] = options_.special_tokens;
  json["unk_token"] = options_.unk_token;
  json["eos_token"] = OptionalJson(options_.eos_token);
  json["pad_token"] = OptionalJson(options_.pad_token);
  json["bos_token"] = OptionalJson(options_.bos_token);
  // Create checked that every string here is valid UTF-8; `replace` only makes sure dump() cannot throw.
  return json.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

absl::Status WordTokenizer::Save(const std::string& path) const { return util::WriteFileAtomically(path, ToJson()); }

std::optional<int32_t> WordTokenizer::OrdinaryId(absl::string_view word) const {
  const auto it = ordinary_.find(word);
  if (it == ordinary_.end()) return std::nullopt;
  return it->second;
}

bool WordTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < VocabSize() && is_special_[static_cast<size_t>(id)];
}

void WordTokenizer::AppendWords(absl::string_view text, std::vector<int32_t>* ids) const {
  size_t pos = 0;
  while (pos < text.size()) {
    while (pos < text.size() && IsAsciiWhitespace(text[pos])) ++pos;
    const size_t begin = pos;
    while (pos < text.size() && !IsAsciiWhitespace(text[pos])) ++pos;
    if (pos > begin) ids->push_back(OrdinaryId(text.substr(begin, pos - begin)).value_or(unk_id_));
  }
}

absl::StatusOr<std::vector<int32_t>> WordTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  RETURN_IF_ERROR(internal::SplitOnSpecialTokens(
      text, specials_,
      [&](absl::string_view piece) {
        AppendWords(piece, &ids);
        return absl::OkStatus();
      },
      [&](int32_t id) { ids.push_back(id); }));
  return ids;
}

absl::StatusOr<std::vector<int32_t>> WordTokenizer::EncodeOrdinary(absl::string_view text) const {
  std::vector<int32_t> ids;
  AppendWords(text, &ids);
  return ids;
}

absl::StatusOr<std::string> WordTokenizer::Decode(absl::Span<const int32_t> ids) const {
  RETURN_IF_ERROR(internal::CheckIdsInVocabulary(ids, VocabSize()));
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) text.push_back(' ');
    text += options_.vocab[static_cast<size_t>(ids[i])];
  }
  return text;
}

}  // namespace rlhf::tokenizer
