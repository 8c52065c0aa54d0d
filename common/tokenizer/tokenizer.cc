#include "common/tokenizer/tokenizer.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/byte_tokenizer.h"
#include "common/tokenizer/gpt2_bpe_tokenizer.h"
#include "common/tokenizer/hf_bpe_tokenizer.h"
#include "common/tokenizer/utf8.h"
#include "common/tokenizer/word_tokenizer.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "common/util/json_errors.h"
#include "nlohmann/json.hpp"

namespace rlhf::tokenizer {
namespace {

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// What a tokenizer.json holds: our byte or word tokenizer's (top-level "type"), a Hugging Face tokenizers file
// (top-level "model" object), or something else.
struct TokenizerJsonKind {
  bool is_byte = false;
  bool is_word = false;
  bool is_hugging_face = false;
  std::string description;  // e.g. `"type": "BPE"` or `no "type" field`
};

// Reads the top-level keys of a JSON document without building it, stopping at a top-level "model" object, so that
// telling the kinds apart costs little even for a Hugging Face file of many megabytes.
class TopLevelScanner : public nlohmann::json_sax<nlohmann::json> {
 public:
  bool null() override { return Value("null"); }
  bool boolean(bool) override { return Value("boolean"); }
  bool number_integer(number_integer_t) override { return Value("number"); }
  bool number_unsigned(number_unsigned_t) override { return Value("number"); }
  bool number_float(number_float_t, const string_t&) override { return Value("number"); }
  bool binary(binary_t&) override { return Value("binary"); }
  bool string(string_t& value) override {
    if (AtType()) type_ = value;
    return Value("string");
  }
  bool start_object(std::size_t) override {
    if (depth_ == 0) top_is_object_ = true;
    if (depth_ == 1 && key_ == "model") {
      has_model_ = true;
      return false;  // enough is known: stop reading
    }
    Value("object");
    ++depth_;
    return true;
  }
  bool end_object() override {
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    Value("array");
    ++depth_;
    return true;
  }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool key(string_t& key) override {
    if (depth_ == 1) key_ = key;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    error_ = util::JsonErrorText(e.what());
    return false;
  }

  bool top_is_object_ = false;
  bool has_model_ = false;
  std::optional<std::string> type_;  // the top-level "type" when it is a string
  std::string type_kind_;            // the JSON type of the top-level "type" when it is there
  std::string error_;

 private:
  bool AtType() const { return depth_ == 1 && key_ == "type"; }
  bool Value(const char* kind) {
    if (AtType() && type_kind_.empty()) type_kind_ = kind;
    return true;
  }

  int depth_ = 0;
  std::string key_;
};

absl::StatusOr<TokenizerJsonKind> ReadTokenizerJsonKind(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, util::ReadFile(path));
  TopLevelScanner scanner;
  nlohmann::json::sax_parse(text, &scanner);
  if (!scanner.has_model_ && !scanner.error_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON: ", scanner.error_));
  }
  if (!scanner.top_is_object_) return absl::InvalidArgumentError(absl::StrCat(path, ": expected a JSON object"));
  TokenizerJsonKind kind;
  if (scanner.has_model_) {
    kind.is_hugging_face = true;
    return kind;
  }
  if (!scanner.type_.has_value()) {
    kind.description =
        scanner.type_kind_.empty() ? "no \"type\" field" : absl::StrCat("a JSON ", scanner.type_kind_, " as \"type\"");
    return kind;
  }
  kind.is_byte = *scanner.type_ == kByteKind;
  kind.is_word = *scanner.type_ == kWordKind;
  kind.description = absl::StrCat("\"type\": ", internal::QuoteForMessage(*scanner.type_, 40));
  return kind;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGpt2Tokenizer(const std::string& encoder_json_path,
                                                             const std::string& vocab_bpe_path) {
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Gpt2BpeTokenizer::Load(encoder_json_path, vocab_bpe_path));
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir) {
  if (!IsDirectory(model_dir)) {
    return absl::NotFoundError(absl::StrCat("model directory ", model_dir, " does not exist or is not a directory"));
  }
  const std::string encoder_json = absl::StrCat(model_dir, "/encoder.json");
  const std::string vocab_bpe = absl::StrCat(model_dir, "/vocab.bpe");
  const std::string tokenizer_json = absl::StrCat(model_dir, "/tokenizer.json");
  const bool has_encoder = IsRegularFile(encoder_json);
  const bool has_vocab = IsRegularFile(vocab_bpe);
  if (has_encoder && has_vocab) return LoadGpt2Tokenizer(encoder_json, vocab_bpe);

  std::string found;
  if (has_encoder) found = "; found encoder.json without vocab.bpe";
  if (has_vocab) found = "; found vocab.bpe without encoder.json";
  if (IsRegularFile(tokenizer_json)) {
    ASSIGN_OR_RETURN(const TokenizerJsonKind kind, ReadTokenizerJsonKind(tokenizer_json));
    if (kind.is_byte) {
      ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, ByteTokenizer::Load(tokenizer_json));
      return tokenizer;
    }
    if (kind.is_word) {
      ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, WordTokenizer::Load(tokenizer_json));
      return tokenizer;
    }
    if (kind.is_hugging_face) {
      ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, HfBpeTokenizer::Load(model_dir));
      return tokenizer;
    }
    absl::StrAppend(&found, "; found tokenizer.json with ", kind.description, ", which is not a tokenizer of ours");
  }
  return absl::NotFoundError(absl::StrCat("no tokenizer in ", model_dir,
                                          ": looked for encoder.json + vocab.bpe (GPT-2 BPE) or tokenizer.json "
                                          "with \"type\": \"byte\" (byte-level) or a Hugging Face \"model\"",
                                          found));
}

const std::vector<std::string>& TokenizerFileNames() {
  static const auto* const kNames =
      new std::vector<std::string>{"tokenizer.json",     "tokenizer_config.json", "chat_template.jinja",
                                   "chat_template.json", "encoder.json",          "vocab.bpe"};
  return *kNames;
}

absl::Status CopyTokenizerFiles(const std::string& from_dir, const std::string& to_dir) {
  for (const std::string& name : TokenizerFileNames()) {
    const std::string from = absl::StrCat(from_dir, "/", name);
    if (!util::PathExists(from)) continue;
    RETURN_IF_ERROR(util::CopyFileAtomically(from, absl::StrCat(to_dir, "/", name)));
  }
  return absl::OkStatus();
}

std::string ReplaceInvalidUtf8(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    const internal::Utf8Char c = internal::NextUtf8Char(bytes, pos);
    if (c.valid) {
      out.append(bytes.data() + pos, static_cast<size_t>(c.length));
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
    }
    pos += static_cast<size_t>(c.length);
  }
  return out;
}

}  // namespace rlhf::tokenizer
