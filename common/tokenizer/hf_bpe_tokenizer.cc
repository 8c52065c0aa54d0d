#include "common/tokenizer/hf_bpe_tokenizer.h"

#include <sys/stat.h>

#include <algorithm>
#include <deque>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/utf8.h"
#include "common/tokenizer/vocab_ids.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "common/util/json_errors.h"
#include "nlohmann/json.hpp"

namespace rlhf::tokenizer {

using internal::QuoteForMessage;
using Json = nlohmann::json;

namespace {

// Ids are int32; the largest one accepted keeps VocabSize() = max id + 1 representable.
constexpr int64_t kMaxTokenId = std::numeric_limits<int32_t>::max() - 1;

std::string Quoted(absl::string_view text) { return QuoteForMessage(text, 80); }

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

// Parsing of tokenizer.json and tokenizer_config.json into a tokenizer; errors name the file and the JSON field.
struct HfBpeTokenizer::Parser {
  HfBpeTokenizer& t;
  std::string json_name;
  std::string config_name;
  int64_t model_vocab_entries = 0;  // number of tokens in model.vocab (tokenizers' get_vocab_size)

  absl::Status Error(absl::string_view path, absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(json_name, ": ", path, " ", message));
  }
  absl::Status ConfigError(absl::string_view path, absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(config_name, ": ", path, " ", message));
  }

  static std::string Describe(const Json& value) {
    if (value.is_string()) return Quoted(value.get<std::string>());
    return absl::StrCat("a JSON ", value.type_name());
  }

  // node["type"] as a string; `path` names node.
  absl::StatusOr<std::string> TypeOf(const Json& node, absl::string_view path) const {
    if (!node.is_object()) return Error(path, absl::StrCat("is ", Describe(node), ", expected an object"));
    const auto it = node.find("type");
    if (it == node.end()) return Error(path, "has no \"type\"");
    if (!it->is_string()) return Error(absl::StrCat(path, ".type"), absl::StrCat("is ", Describe(*it)));
    return it->get<std::string>();
  }

  // node[key] as a bool; `fallback` when absent or null.
  absl::StatusOr<bool> Bool(const Json& node, const char* key, absl::string_view path, bool fallback) const {
    const auto it = node.find(key);
    if (it == node.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) {
      return Error(absl::StrCat(path, ".", key), absl::StrCat("is ", Describe(*it), ", expected true or false"));
    }
    return it->get<bool>();
  }

  // The id of a vocabulary token given in its byte-level spelling.
  std::optional<int32_t> VocabId(absl::string_view token) const {
    if (const std::optional<std::string> bytes = internal::ByteLevelToBytes(token); bytes.has_value()) {
      const auto it = t.bytes_to_id_.find(*bytes);
      if (it != t.bytes_to_id_.end()) return it->second;
      return std::nullopt;
    }
    const auto it = t.other_vocab_.find(token);
    if (it != t.other_vocab_.end()) return it->second;
    return std::nullopt;
  }

  absl::Status ParseModel(const Json& model) {
    ASSIGN_OR_RETURN(const std::string type, TypeOf(model, "model"));
    if (type != "BPE") return Error("model.type", absl::StrCat("is ", Quoted(type), "; only \"BPE\" is supported"));
    ASSIGN_OR_RETURN(const bool byte_fallback, Bool(model, "byte_fallback", "model", false));
    if (byte_fallback) return Error("model.byte_fallback", "is true; byte fallback is not supported");
    if (const auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
      if (!it->is_number() || it->get<double>() != 0.0) {
        return Error("model.dropout",
                     absl::StrCat("is ", it->dump(), "; only null or 0 (no BPE dropout) is supported"));
      }
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      const auto it = model.find(key);
      if (it == model.end() || it->is_null() || (it->is_string() && it->get<std::string>().empty())) continue;
      return Error(absl::StrCat("model.", key), absl::StrCat("is ", Describe(*it), "; only null or \"\" is supported"));
    }
    ASSIGN_OR_RETURN(t.ignore_merges_, Bool(model, "ignore_merges", "model", false));

    const auto vocab = model.find("vocab");
    if (vocab == model.end() || !vocab->is_object()) return Error("model.vocab", "is missing or not an object");
    if (vocab->empty()) return Error("model.vocab", "is empty");
    model_vocab_entries = static_cast<int64_t>(vocab->size());
    std::vector<std::pair<int32_t, const std::string*>> entries;
    entries.reserve(vocab->size());
    int64_t max_id = -1;
    for (const auto& [token, value] : vocab->items()) {
      if (!value.is_number_integer()) {
        return Error(absl::StrCat("model.vocab[", Quoted(token), "]"),
                     absl::StrCat("is ", Describe(value), ", expected an integer id"));
      }
      const int64_t id = value.get<int64_t>();
      if (id < 0 || id > kMaxTokenId) {
        return Error(absl::StrCat("model.vocab[", Quoted(token), "]"),
                     absl::StrCat("is ", id, ", outside [0, ", kMaxTokenId, "]"));
      }
      if (token.empty()) return Error("model.vocab", absl::StrCat("has an empty token (id ", id, ")"));
      max_id = std::max(max_id, id);
      entries.emplace_back(static_cast<int32_t>(id), &token);
    }
    // Ids index a table: refuse a vocabulary whose ids are far sparser than its tokens (a corrupt file).
    if (max_id >= static_cast<int64_t>(entries.size()) + (int64_t{1} << 20)) {
      return Error("model.vocab", absl::StrCat("has ids up to ", max_id, " for only ", entries.size(), " tokens"));
    }
    t.id_to_bytes_.assign(static_cast<size_t>(max_id + 1), std::string());
    t.has_token_.assign(static_cast<size_t>(max_id + 1), false);
    t.bytes_to_id_.reserve(entries.size());
    for (const auto& [id, token] : entries) {
      if (t.has_token_[id]) {
        return Error("model.vocab",
                     absl::StrCat("gives id ", id, " to more than one token (one is ", Quoted(*token), ")"));
      }
      t.has_token_[id] = true;
      if (std::optional<std::string> bytes = internal::ByteLevelToBytes(*token); bytes.has_value()) {
        t.id_to_bytes_[id] = *bytes;
        t.bytes_to_id_.emplace(std::move(*bytes), id);
      } else {
        // tokenizers' ByteLevel decoder gives such a token's text unchanged.
        t.id_to_bytes_[id] = *token;
        t.other_vocab_.emplace(*token, id);
      }
    }
    const internal::ByteAlphabet& alphabet = internal::GetByteAlphabet();
    for (int b = 0; b < 256; ++b) {
      const auto it = t.bytes_to_id_.find(std::string(1, static_cast<char>(b)));
      if (it == t.bytes_to_id_.end()) {
        std::string token;
        internal::AppendUtf8(alphabet.byte_to_code_point[b], &token);
        return Error(
            "model.vocab",
            absl::StrFormat("lacks the byte-level token %s for byte 0x%02X (every byte needs one)", Quoted(token), b));
      }
      t.byte_to_id_[b] = it->second;
    }

    const auto merges = model.find("merges");
    if (merges == model.end() || !merges->is_array()) return Error("model.merges", "is missing or not an array");
    t.merges_.Reserve(merges->size());
    int32_t rank = 0;
    for (size_t i = 0; i < merges->size(); ++i) {
      const Json& merge = (*merges)[i];
      const std::string path = absl::StrCat("model.merges[", i, "]");
      std::string left, right;
      if (merge.is_string()) {
        const std::string& line = merge.get_ref<const std::string&>();
        if (absl::StartsWith(line, "#version")) continue;
        const size_t space = line.find(' ');
        if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
          return Error(path, absl::StrCat("is ", Quoted(line), ", expected two tokens separated by one space"));
        }
        left = line.substr(0, space);
        right = line.substr(space + 1);
      } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
        left = merge[0].get<std::string>();
        right = merge[1].get<std::string>();
      } else {
        return Error(path, absl::StrCat("is ", merge.dump().substr(0, 80), ", expected \"a b\" or [\"a\", \"b\"]"));
      }
      const std::optional<int32_t> left_id = VocabId(left);
      const std::optional<int32_t> right_id = VocabId(right);
      const std::string merged = left + right;
      const std::optional<int32_t> merged_id = VocabId(merged);
      for (const auto& [token, id] : {std::pair<const std::string&, const std::optional<int32_t>&>(left, left_id),
                                      {right, right_id},
                                      {merged, merged_id}}) {
        if (!id.has_value())
          return Error(path, absl::StrCat("uses the token ", Quoted(token), ", which is not in model.vocab"));
      }
      // A repeated pair takes its last rank, as tokenizers' merge map does.
      t.merges_.Put(*left_id, *right_id, rank++, *merged_id);
    }
    return absl::OkStatus();
  }

  absl::Status ParseNormalizer(const Json& node, const std::string& path) {
    if (node.is_null()) return absl::OkStatus();
    ASSIGN_OR_RETURN(const std::string type, TypeOf(node, path));
    if (type == "Sequence") {
      const auto list = node.find("normalizers");
      if (list == node.end() || !list->is_array())
        return Error(absl::StrCat(path, ".normalizers"), "is missing or not an array");
      for (size_t i = 0; i < list->size(); ++i) {
        RETURN_IF_ERROR(ParseNormalizer((*list)[i], absl::StrCat(path, ".normalizers[", i, "]")));
      }
      return absl::OkStatus();
    }
    const std::optional<internal::NormalizationForm> form = internal::NormalizationFormByName(type);
    if (!form.has_value()) {
      return Error(absl::StrCat(path, ".type"),
                   absl::StrCat("is ", Quoted(type), "; supported normalizers: NFC, NFD, NFKC, NFKD and Sequence"));
    }
    t.normalizers_.push_back(*form);
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Normalize(absl::string_view text) const {
    std::string out(text);
    for (const internal::NormalizationForm form : t.normalizers_) {
      ASSIGN_OR_RETURN(out, internal::NormalizeUnicode(out, form));
    }
    return out;
  }

  absl::Status ParsePreTokenizer(const Json& node, const std::string& path, bool* saw_byte_level) {
    ASSIGN_OR_RETURN(const std::string type, TypeOf(node, path));
    if (type == "Sequence") {
      const auto list = node.find("pretokenizers");
      if (list == node.end() || !list->is_array()) {
        return Error(absl::StrCat(path, ".pretokenizers"), "is missing or not an array");
      }
      for (size_t i = 0; i < list->size(); ++i) {
        RETURN_IF_ERROR(ParsePreTokenizer((*list)[i], absl::StrCat(path, ".pretokenizers[", i, "]"), saw_byte_level));
      }
      return absl::OkStatus();
    }
    if (*saw_byte_level) {
      return Error(path, absl::StrCat("(", Quoted(type),
                                      ") comes after the ByteLevel pre-tokenizer; only Split steps "
                                      "before one ByteLevel step are supported"));
    }
    if (type == "Split") {
      const auto behavior = node.find("behavior");
      if (behavior == node.end() || !behavior->is_string() || behavior->get<std::string>() != "Isolated") {
        return Error(absl::StrCat(path, ".behavior"),
                     absl::StrCat("is ", behavior == node.end() ? "missing" : Describe(*behavior),
                                  "; only \"Isolated\" is supported"));
      }
      ASSIGN_OR_RETURN(const bool invert, Bool(node, "invert", path, false));
      if (invert) return Error(absl::StrCat(path, ".invert"), "is true; only false is supported");
      const auto pattern = node.find("pattern");
      if (pattern == node.end() || !pattern->is_object() || pattern->size() != 1) {
        return Error(absl::StrCat(path, ".pattern"), "is missing or not {\"Regex\": ...} / {\"String\": ...}");
      }
      const auto regex = pattern->find("Regex");
      const auto literal = pattern->find("String");
      std::string pcre2;
      std::string description;
      if (regex != pattern->end() && regex->is_string()) {
        description = absl::StrCat(json_name, ": ", path, ".pattern.Regex");
        absl::StatusOr<std::string> translated = internal::OnigurumaToPcre2(regex->get<std::string>());
        if (!translated.ok())
          return absl::InvalidArgumentError(absl::StrCat(description, ": ", translated.status().message()));
        pcre2 = *std::move(translated);
      } else if (literal != pattern->end() && literal->is_string()) {
        description = absl::StrCat(json_name, ": ", path, ".pattern.String");
        pcre2 = internal::QuotePcre2(literal->get<std::string>());
      } else {
        return Error(absl::StrCat(path, ".pattern"), "is not {\"Regex\": string} or {\"String\": string}");
      }
      ASSIGN_OR_RETURN(std::unique_ptr<internal::RegexSplitter> splitter,
                       internal::RegexSplitter::Create(pcre2, description));
      t.pre_tokenizer_.push_back({false, std::move(splitter)});
      return absl::OkStatus();
    }
    if (type == "ByteLevel") {
      *saw_byte_level = true;
      PreTokenizerStep step;
      ASSIGN_OR_RETURN(step.add_prefix_space, Bool(node, "add_prefix_space", path, true));
      ASSIGN_OR_RETURN(const bool use_regex, Bool(node, "use_regex", path, true));
      if (use_regex) {
        ASSIGN_OR_RETURN(const std::string pcre2, internal::OnigurumaToPcre2(internal::kByteLevelPattern));
        ASSIGN_OR_RETURN(step.splitter, internal::RegexSplitter::Create(pcre2, "the ByteLevel pattern"));
      }
      t.pre_tokenizer_.push_back(std::move(step));
      return absl::OkStatus();
    }
    return Error(absl::StrCat(path, ".type"),
                 absl::StrCat("is ", Quoted(type), "; supported pre-tokenizers: Split, ByteLevel and Sequence"));
  }

  absl::Status ParseAddedTokens(const Json& list) {
    if (list.is_null()) return absl::OkStatus();
    if (!list.is_array()) return Error("added_tokens", absl::StrCat("is ", Describe(list), ", expected an array"));
    std::vector<internal::AddedTokenPattern> raw, normalized;
    int64_t next_id = model_vocab_entries;  // tokenizers numbers added tokens from the model's vocabulary size
    for (size_t i = 0; i < list.size(); ++i) {
      const Json& token = list[i];
      const std::string path = absl::StrCat("added_tokens[", i, "]");
      if (!token.is_object()) return Error(path, absl::StrCat("is ", Describe(token), ", expected an object"));
      const auto content_it = token.find("content");
      if (content_it == token.end() || !content_it->is_string())
        return Error(absl::StrCat(path, ".content"), "is missing or not a string");
      const std::string content = content_it->get<std::string>();
      if (content.empty()) continue;  // tokenizers ignores empty added tokens
      const auto id_it = token.find("id");
      if (id_it == token.end() || !id_it->is_number_integer())
        return Error(absl::StrCat(path, ".id"), "is missing or not an integer");
      const int64_t id = id_it->get<int64_t>();
      ASSIGN_OR_RETURN(const bool special, Bool(token, "special", path, false));
      ASSIGN_OR_RETURN(const bool single_word, Bool(token, "single_word", path, false));
      ASSIGN_OR_RETURN(const bool lstrip, Bool(token, "lstrip", path, false));
      ASSIGN_OR_RETURN(const bool rstrip, Bool(token, "rstrip", path, false));
      ASSIGN_OR_RETURN(const bool is_normalized, Bool(token, "normalized", path, true));
      if (single_word)
        return Error(absl::StrCat(path, ".single_word"), "is true; single-word added tokens are not supported");
      if (t.added_by_content_.contains(content)) {
        return Error(path, absl::StrCat("repeats the content ", Quoted(content), " of an earlier added token"));
      }
      // The id tokenizers gives it: the vocabulary's when the content is a vocabulary token, else the next free one.
      const std::optional<int32_t> vocab_id = VocabId(content);
      const int64_t expected = vocab_id.has_value() ? *vocab_id : next_id++;
      if (id != expected) {
        return Error(absl::StrCat(path, ".id"),
                     absl::StrCat("is ", id, " but tokenizers would give ", Quoted(content), " the id ", expected));
      }
      if (id > kMaxTokenId) return Error(absl::StrCat(path, ".id"), absl::StrCat("is ", id, ", too large"));
      if (static_cast<size_t>(id) >= t.id_to_bytes_.size()) {
        t.id_to_bytes_.resize(static_cast<size_t>(id) + 1);
        t.has_token_.resize(static_cast<size_t>(id) + 1, false);
      }
      if (!vocab_id.has_value() && t.has_token_[id]) {
        return Error(absl::StrCat(path, ".id"), absl::StrCat("is ", id, ", which a token of model.vocab already has"));
      }
      std::string match = content;
      if (is_normalized) {
        ASSIGN_OR_RETURN(match, Normalize(content));
      }
      // tokenizers decodes an added token from its (normalised) content with the ByteLevel decoder: through the
      // byte alphabet when every character is in it, else unchanged.
      std::optional<std::string> bytes = internal::ByteLevelToBytes(match);
      t.id_to_bytes_[id] = bytes.has_value() ? *std::move(bytes) : match;
      t.has_token_[id] = true;
      if (t.added_.size() <= static_cast<size_t>(id)) {
        t.added_.resize(static_cast<size_t>(id) + 1, false);
        t.special_.resize(static_cast<size_t>(id) + 1, false);
      }
      t.added_[id] = true;
      t.special_[id] = special;
      t.added_by_content_.emplace(content, static_cast<int32_t>(id));
      (is_normalized ? normalized : raw).push_back({match, static_cast<int32_t>(id), lstrip, rstrip});
    }
    if (!raw.empty()) t.raw_added_ = std::make_unique<internal::AddedTokenMatcher>(std::move(raw));
    if (!normalized.empty()) t.normalized_added_ = std::make_unique<internal::AddedTokenMatcher>(std::move(normalized));
    return absl::OkStatus();
  }

  absl::Status ParseDecoder(const Json& node) {
    if (node.is_null()) return Error("decoder", "is null; a ByteLevel decoder is required");
    ASSIGN_OR_RETURN(const std::string type, TypeOf(node, "decoder"));
    if (type != "ByteLevel")
      return Error("decoder.type", absl::StrCat("is ", Quoted(type), "; only \"ByteLevel\" is supported"));
    return absl::OkStatus();
  }

  absl::StatusOr<int32_t> CheckedId(const Json& value, const std::string& path) const {
    if (!value.is_number_integer()) return Error(path, absl::StrCat("is ", Describe(value), ", expected a token id"));
    const int64_t id = value.get<int64_t>();
    if (id < 0 || id >= t.VocabSize() || !t.has_token_[id])
      return Error(path, absl::StrCat("is ", id, ", which no token has"));
    return static_cast<int32_t>(id);
  }

  // Wraps the single-sequence template built so far in what `node` adds around it.
  absl::Status ParsePostProcessor(const Json& node, const std::string& path) {
    if (node.is_null()) return absl::OkStatus();
    ASSIGN_OR_RETURN(const std::string type, TypeOf(node, path));
    if (type == "ByteLevel") return absl::OkStatus();  // offsets only
    if (type == "Sequence") {
      const auto list = node.find("processors");
      if (list == node.end() || !list->is_array())
        return Error(absl::StrCat(path, ".processors"), "is missing or not an array");
      for (size_t i = 0; i < list->size(); ++i) {
        RETURN_IF_ERROR(ParsePostProcessor((*list)[i], absl::StrCat(path, ".processors[", i, "]")));
      }
      return absl::OkStatus();
    }
    std::vector<int32_t> prefix, suffix;
    if (type == "RobertaProcessing" || type == "BertProcessing") {
      for (const char* key : {"cls", "sep"}) {
        const auto it = node.find(key);
        const std::string field = absl::StrCat(path, ".", key);
        if (it == node.end() || !it->is_array() || it->size() != 2)
          return Error(field, "is missing or not [token, id]");
        ASSIGN_OR_RETURN(const int32_t id, CheckedId((*it)[1], absl::StrCat(field, "[1]")));
        (std::string(key) == "cls" ? prefix : suffix).push_back(id);
      }
    } else if (type == "TemplateProcessing") {
      const auto single = node.find("single");
      const auto specials = node.find("special_tokens");
      if (single == node.end() || !single->is_array())
        return Error(absl::StrCat(path, ".single"), "is missing or not an array");
      bool saw_sequence = false;
      for (size_t i = 0; i < single->size(); ++i) {
        const Json& piece = (*single)[i];
        const std::string piece_path = absl::StrCat(path, ".single[", i, "]");
        if (piece.is_object() && piece.contains("Sequence")) {
          const Json& sequence = piece["Sequence"];
          if (saw_sequence || !sequence.is_object() || !sequence.contains("id") || sequence["id"] != "A") {
            return Error(piece_path, "must be the one {\"Sequence\": {\"id\": \"A\"}} of the single template");
          }
          saw_sequence = true;
          continue;
        }
        if (!piece.is_object() || !piece.contains("SpecialToken") || !piece["SpecialToken"].is_object() ||
            !piece["SpecialToken"].contains("id") || !piece["SpecialToken"]["id"].is_string()) {
          return Error(piece_path, "is neither {\"SpecialToken\": {\"id\": ...}} nor {\"Sequence\": ...}");
        }
        const std::string name = piece["SpecialToken"]["id"].get<std::string>();
        if (specials == node.end() || !specials->is_object() || !specials->contains(name) ||
            !(*specials)[name].is_object() || !(*specials)[name].contains("ids") ||
            !(*specials)[name]["ids"].is_array()) {
          return Error(absl::StrCat(path, ".special_tokens"),
                       absl::StrCat("lacks ", Quoted(name), " with its \"ids\""));
        }
        const Json& ids = (*specials)[name]["ids"];
        for (size_t k = 0; k < ids.size(); ++k) {
          ASSIGN_OR_RETURN(const int32_t id,
                           CheckedId(ids[k], absl::StrCat(path, ".special_tokens[", Quoted(name), "].ids[", k, "]")));
          (saw_sequence ? suffix : prefix).push_back(id);
        }
      }
      if (!saw_sequence) return Error(absl::StrCat(path, ".single"), "has no {\"Sequence\": {\"id\": \"A\"}}");
    } else {
      return Error(absl::StrCat(path, ".type"),
                   absl::StrCat("is ", Quoted(type),
                                "; supported post-processors: ByteLevel, TemplateProcessing, RobertaProcessing, "
                                "BertProcessing and Sequence"));
    }
    prefix.insert(prefix.end(), t.prefix_ids_.begin(), t.prefix_ids_.end());
    t.prefix_ids_ = std::move(prefix);
    t.suffix_ids_.insert(t.suffix_ids_.end(), suffix.begin(), suffix.end());
    return absl::OkStatus();
  }

  absl::Status ParseConfig(absl::string_view text) {
    Json config;
    try {
      config = Json::parse(text.begin(), text.end());
    } catch (const Json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(config_name, ": not valid JSON: ", util::JsonErrorText(e.what())));
    }
    if (!config.is_object())
      return ConfigError("(the top level)", absl::StrCat("is ", Describe(config), ", expected an object"));
    const auto resolve = [&](const char* key, std::optional<int32_t>* out) -> absl::Status {
      const auto it = config.find(key);
      if (it == config.end() || it->is_null()) return absl::OkStatus();
      std::string content;
      if (it->is_string()) {
        content = it->get<std::string>();
      } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
        content = (*it)["content"].get<std::string>();
      } else {
        return ConfigError(key, absl::StrCat("is ", Describe(*it), ", expected a string or {\"content\": string}"));
      }
      *out = t.TokenToId(content);
      if (!out->has_value()) {
        return ConfigError(
            key, absl::StrCat("is ", Quoted(content), ", which is neither an added token nor in the vocabulary"));
      }
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(resolve("bos_token", &t.bos_id_));
    RETURN_IF_ERROR(resolve("eos_token", &t.eos_id_));
    RETURN_IF_ERROR(resolve("pad_token", &t.pad_id_));
    return absl::OkStatus();
  }
};

absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> HfBpeTokenizer::Create(absl::string_view tokenizer_json,
                                                                       absl::string_view tokenizer_config_json,
                                                                       absl::string_view json_name,
                                                                       absl::string_view config_name) {
  std::unique_ptr<HfBpeTokenizer> tokenizer(new HfBpeTokenizer());
  Parser parser{*tokenizer, std::string(json_name), std::string(config_name)};
  Json json;
  try {
    json = Json::parse(tokenizer_json.begin(), tokenizer_json.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(json_name, ": not valid JSON: ", util::JsonErrorText(e.what())));
  }
  if (!json.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(json_name, ": expected a JSON object, got a JSON ", json.type_name()));
  }
  const auto field = [&](const char* key) -> const Json& {
    static const Json* const kNull = new Json(nullptr);
    const auto it = json.find(key);
    return it == json.end() ? *kNull : *it;
  };
  // The parser checks every type before reading a value; a JSON exception escaping it would be a bug, reported
  // as a malformed file rather than let out of this API.
  try {
    if (field("model").is_null()) return parser.Error("model", "is missing");
    RETURN_IF_ERROR(parser.ParseModel(field("model")));
    RETURN_IF_ERROR(parser.ParseNormalizer(field("normalizer"), "normalizer"));
    if (field("pre_tokenizer").is_null())
      return parser.Error("pre_tokenizer", "is null; a ByteLevel pre-tokenizer is required");
    bool saw_byte_level = false;
    RETURN_IF_ERROR(parser.ParsePreTokenizer(field("pre_tokenizer"), "pre_tokenizer", &saw_byte_level));
    if (!saw_byte_level) return parser.Error("pre_tokenizer", "has no ByteLevel step; a byte-level BPE needs one");
    RETURN_IF_ERROR(parser.ParseAddedTokens(field("added_tokens")));
    RETURN_IF_ERROR(parser.ParseDecoder(field("decoder")));
    RETURN_IF_ERROR(parser.ParsePostProcessor(field("post_processor"), "post_processor"));
    if (!tokenizer_config_json.empty()) RETURN_IF_ERROR(parser.ParseConfig(tokenizer_config_json));
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(json_name, ": unexpected JSON content: ", util::JsonErrorText(e.what())));
  }
  tokenizer->special_.resize(tokenizer->id_to_bytes_.size(), false);
  tokenizer->added_.resize(tokenizer->id_to_bytes_.size(), false);
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> HfBpeTokenizer::Load(const std::string& model_dir) {
  const std::string json_path = absl::StrCat(model_dir, "/tokenizer.json");
  const std::string config_path = absl::StrCat(model_dir, "/tokenizer_config.json");
  ASSIGN_OR_RETURN(const std::string json, util::ReadFile(json_path));
  std::string config;
  if (FileExists(config_path)) {
    ASSIGN_OR_RETURN(config, util::ReadFile(config_path));
  }
  return Create(json, config, json_path, config_path);
}

// What one Encode call keeps: strings made along the way (normalised text, prefixed pieces), which the cache of
// pieces already encoded points into.
struct HfBpeTokenizer::EncodeState {
  std::vector<int32_t>* ids;
  std::deque<std::string> arena;
  absl::flat_hash_map<absl::string_view, std::pair<size_t, size_t>> seen;  // piece -> [begin, end) in *ids
  std::vector<int32_t> symbols;
};

absl::Status HfBpeTokenizer::EncodeInto(absl::string_view text, bool match_added, std::vector<int32_t>* ids) const {
  EncodeState state{ids, {}, {}, {}};
  const auto push_id = [ids](int32_t id) { ids->push_back(id); };
  const auto encode_raw = [&](absl::string_view segment) -> absl::Status {
    if (normalizers_.empty()) return EncodeNormalized(segment, match_added, state);
    std::string normalized(segment);
    for (const internal::NormalizationForm form : normalizers_) {
      ASSIGN_OR_RETURN(normalized, internal::NormalizeUnicode(normalized, form));
    }
    state.arena.push_back(std::move(normalized));
    return EncodeNormalized(state.arena.back(), match_added, state);
  };
  if (match_added && raw_added_ != nullptr) return raw_added_->Split(text, encode_raw, push_id);
  return encode_raw(text);
}

absl::Status HfBpeTokenizer::EncodeNormalized(absl::string_view text, bool match_added, EncodeState& state) const {
  const auto pre_tokenize = [&](absl::string_view segment) { return PreTokenize(segment, 0, state); };
  if (match_added && normalized_added_ != nullptr) {
    return normalized_added_->Split(text, pre_tokenize, [&state](int32_t id) { state.ids->push_back(id); });
  }
  return pre_tokenize(text);
}

absl::Status HfBpeTokenizer::PreTokenize(absl::string_view piece, size_t step, EncodeState& state) const {
  if (piece.empty()) return absl::OkStatus();
  if (step == pre_tokenizer_.size()) {
    EncodePiece(piece, state);
    return absl::OkStatus();
  }
  const PreTokenizerStep& s = pre_tokenizer_[step];
  if (s.add_prefix_space && piece.front() != ' ') {
    state.arena.push_back(absl::StrCat(" ", piece));
    piece = state.arena.back();
  }
  if (s.splitter == nullptr) return PreTokenize(piece, step + 1, state);
  absl::Status inner;
  RETURN_IF_ERROR(s.splitter->Split(piece, [&](absl::string_view sub) {
    if (inner.ok()) inner = PreTokenize(sub, step + 1, state);
  }));
  return inner;
}

void HfBpeTokenizer::EncodePiece(absl::string_view piece, EncodeState& state) const {
  std::vector<int32_t>& ids = *state.ids;
  if (piece.size() == 1) {
    ids.push_back(byte_to_id_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  // Words repeat: a piece seen before in this call copies the ids of its first encoding.
  const auto [it, inserted] = state.seen.try_emplace(piece);
  if (!inserted) {
    const auto [begin, end] = it->second;
    const size_t old_size = ids.size();
    ids.resize(old_size + (end - begin));
    std::copy(ids.begin() + begin, ids.begin() + end, ids.begin() + old_size);
    return;
  }
  const size_t begin = ids.size();
  const auto whole = ignore_merges_ ? bytes_to_id_.find(piece) : bytes_to_id_.end();
  if (whole != bytes_to_id_.end()) {
    ids.push_back(whole->second);
  } else {
    state.symbols.clear();
    for (const char c : piece) state.symbols.push_back(byte_to_id_[static_cast<unsigned char>(c)]);
    // tokenizers merges with a priority queue ordered by (rank, position): ApplyMergesHeap's order.
    internal::ApplyMergesHeap(merges_, &state.symbols);
    ids.insert(ids.end(), state.symbols.begin(), state.symbols.end());
  }
  it->second = {begin, ids.size()};
}

absl::StatusOr<std::vector<int32_t>> HfBpeTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 1);
  RETURN_IF_ERROR(EncodeInto(text, /*match_added=*/true, &ids));
  return ids;
}

absl::StatusOr<std::vector<int32_t>> HfBpeTokenizer::EncodeOrdinary(absl::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 1);
  RETURN_IF_ERROR(EncodeInto(text, /*match_added=*/false, &ids));
  return ids;
}

absl::StatusOr<std::string> HfBpeTokenizer::Decode(absl::Span<const int32_t> ids) const {
  RETURN_IF_ERROR(internal::CheckIdsInVocabulary(ids, VocabSize()));
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!has_token_[ids[i]]) {
      return absl::InvalidArgumentError(
          absl::StrCat("ids[", i, "]=", ids[i], " is an id no token of the vocabulary has"));
    }
  }
  return internal::ConcatTokenBytes(ids, id_to_bytes_);
}

absl::string_view HfBpeTokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= VocabSize()) return {};
  return id_to_bytes_[id];
}

std::optional<int32_t> HfBpeTokenizer::TokenToId(absl::string_view token) const {
  if (const auto it = added_by_content_.find(token); it != added_by_content_.end()) return it->second;
  if (const std::optional<std::string> bytes = internal::ByteLevelToBytes(token); bytes.has_value()) {
    if (const auto it = bytes_to_id_.find(*bytes); it != bytes_to_id_.end()) return it->second;
    return std::nullopt;
  }
  if (const auto it = other_vocab_.find(token); it != other_vocab_.end()) return it->second;
  return std::nullopt;
}

bool HfBpeTokenizer::IsSpecialToken(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < special_.size() && special_[id];
}

bool HfBpeTokenizer::IsAddedToken(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < added_.size() && added_[id];
}

}  // namespace rlhf::tokenizer
