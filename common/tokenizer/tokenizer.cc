#include "common/tokenizer/tokenizer.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/byte_tokenizer.h"
#include "common/tokenizer/gpt2_bpe_tokenizer.h"
#include "common/tokenizer/utf8.h"
#include "common/tokenizer/word_tokenizer.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
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

// What a tokenizer.json holds: whether it is our byte or word tokenizer's, and if not, what its type is.
struct TokenizerJsonKind {
  bool is_byte;
  std::string description;  // e.g. `"type": "BPE"` or `no "type" field`
  bool is_word = false;
};

absl::StatusOr<TokenizerJsonKind> ReadTokenizerJsonKind(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, util::ReadFile(path));
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON: ", e.what()));
  }
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a JSON object, got a JSON ", json.type_name()));
  }
  const auto type = json.find("type");
  if (type == json.end()) {
    return TokenizerJsonKind{
        false, json.contains("model") ? "no \"type\" field (a Hugging Face tokenizers file?)" : "no \"type\" field"};
  }
  if (!type->is_string()) return TokenizerJsonKind{false, absl::StrCat("a JSON ", type->type_name(), " as \"type\"")};
  const std::string name = type->get<std::string>();
  return TokenizerJsonKind{name == kByteKind, absl::StrCat("\"type\": ", internal::QuoteForMessage(name, 40)),
                           name == kWordKind};
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
    absl::StrAppend(&found, "; found tokenizer.json with ", kind.description, ", which is not a tokenizer of ours");
  }
  return absl::NotFoundError(absl::StrCat("no tokenizer in ", model_dir,
                                          ": looked for encoder.json + vocab.bpe (GPT-2 BPE) or tokenizer.json "
                                          "with \"type\": \"byte\" (byte-level)",
                                          found));
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
