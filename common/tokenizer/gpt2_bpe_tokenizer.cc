#include "common/tokenizer/gpt2_bpe_tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/utf8.h"
#include "common/tokenizer/vocab_ids.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "common/util/json_errors.h"
#include "nlohmann/json.hpp"

namespace rlhf::tokenizer {
namespace {

using internal::ByteAlphabet;
using internal::GetByteAlphabet;
using internal::QuoteForMessage;

using TokenToId = absl::flat_hash_map<std::string, int32_t>;

// Parses encoder.json into `token_to_id` (keys in GPT-2's byte alphabet) and `id_to_bytes` (raw bytes by id).
absl::Status ParseEncoder(absl::string_view encoder_json, TokenToId* token_to_id,
                          std::vector<std::string>* id_to_bytes) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(encoder_json.begin(), encoder_json.end());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("not valid JSON: ", util::JsonErrorText(e.what())));
  }
  if (!json.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a JSON object mapping tokens to ids, got a JSON ", json.type_name()));
  }
  if (json.empty()) return absl::InvalidArgumentError("has no tokens");
  const int64_t size = static_cast<int64_t>(json.size());
  if (size > INT32_MAX) return absl::InvalidArgumentError(absl::StrCat("has too many tokens: ", size));
  const ByteAlphabet& alphabet = GetByteAlphabet();
  id_to_bytes->assign(static_cast<size_t>(size), std::string());
  std::vector<bool> seen(static_cast<size_t>(size), false);
  token_to_id->reserve(static_cast<size_t>(size));
  for (const auto& [token, value] : json.items()) {
    if (!value.is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat("token ", QuoteForMessage(token), " has id ",
                                                     QuoteForMessage(value.dump()), ", not an integer"));
    }
    const int64_t id = value.get<int64_t>();
    if (id < 0 || id >= size) {
      return absl::InvalidArgumentError(absl::StrCat("token ", QuoteForMessage(token), " has id ", id,
                                                     ", outside [0, ", size, ") (the ids of N tokens must be 0..N-1)"));
    }
    if (seen[id]) {
      return absl::InvalidArgumentError(
          absl::StrCat("id ", id, " belongs to more than one token (one is ", QuoteForMessage(token), ")"));
    }
    seen[id] = true;
    if (token.empty()) return absl::InvalidArgumentError(absl::StrCat("id ", id, " has an empty token"));
    const std::optional<std::vector<uint32_t>> code_points = internal::DecodeUtf8(token);
    if (!code_points.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("token ", QuoteForMessage(token), " is not valid UTF-8"));
    }
    std::string& bytes = (*id_to_bytes)[id];
    bytes.reserve(code_points->size());
    for (const uint32_t cp : *code_points) {
      if (cp >= ByteAlphabet::kMaxCodePoint || alphabet.code_point_to_byte[cp] < 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "token %s (id %d) has U+%04X, which is not in GPT-2's byte alphabet", QuoteForMessage(token), id, cp));
      }
      bytes.push_back(static_cast<char>(alphabet.code_point_to_byte[cp]));
    }
    token_to_id->emplace(token, static_cast<int32_t>(id));
  }
  return absl::OkStatus();
}

// Parses vocab.bpe into `merges`. Errors name the file (`name`) and line as "<name>:<line>: ...".
absl::Status ParseMerges(absl::string_view vocab_bpe, absl::string_view name, const TokenToId& token_to_id,
                         internal::MergeTable* merges) {
  if (vocab_bpe.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": is empty"));
  const auto lookup = [&](absl::string_view token) -> std::optional<int32_t> {
    const auto it = token_to_id.find(token);
    if (it == token_to_id.end()) return std::nullopt;
    return it->second;
  };
  int line_number = 0;
  int32_t rank = 0;
  for (absl::string_view line : absl::StrSplit(vocab_bpe, '\n')) {
    ++line_number;
    if (absl::EndsWith(line, "\r")) line.remove_suffix(1);
    if (line_number == 1 && absl::StartsWith(line, "#")) continue;  // "#version: 0.2"
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    if (space == absl::string_view::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ":", line_number, ": expected two tokens separated by one space, got ", QuoteForMessage(line)));
    }
    const absl::string_view left = line.substr(0, space);
    const absl::string_view right = line.substr(space + 1);
    const std::optional<int32_t> left_id = lookup(left);
    const std::optional<int32_t> right_id = lookup(right);
    const std::string merged = absl::StrCat(left, right);
    const std::optional<int32_t> merged_id = lookup(merged);
    for (const auto& [token, id] : {std::pair(left, left_id), std::pair(right, right_id),
                                    std::pair(absl::string_view(merged), merged_id)}) {
      if (!id.has_value()) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ":", line_number, ": token ", QuoteForMessage(token), " is not in the vocabulary"));
      }
    }
    // A repeated pair keeps its first (highest-priority) rank.
    merges->Add(*left_id, *right_id, rank++, *merged_id);
  }
  return absl::OkStatus();
}

absl::Status Annotate(const absl::Status& status, absl::string_view prefix) {
  return absl::Status(status.code(), absl::StrCat(prefix, status.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Gpt2BpeTokenizer>> Gpt2BpeTokenizer::Create(absl::string_view encoder_json,
                                                                           absl::string_view vocab_bpe) {
  return CreateNamed(encoder_json, vocab_bpe, "encoder.json", "vocab.bpe");
}

absl::StatusOr<std::unique_ptr<Gpt2BpeTokenizer>> Gpt2BpeTokenizer::CreateNamed(absl::string_view encoder_json,
                                                                                absl::string_view vocab_bpe,
                                                                                absl::string_view encoder_name,
                                                                                absl::string_view vocab_name) {
  std::unique_ptr<Gpt2BpeTokenizer> tokenizer(new Gpt2BpeTokenizer());
  TokenToId token_to_id;
  if (absl::Status s = ParseEncoder(encoder_json, &token_to_id, &tokenizer->id_to_bytes_); !s.ok()) {
    return Annotate(s, absl::StrCat(encoder_name, ": "));
  }
  const ByteAlphabet& alphabet = GetByteAlphabet();
  for (int b = 0; b < 256; ++b) {
    std::string token;
    internal::AppendUtf8(alphabet.byte_to_code_point[b], &token);
    const auto it = token_to_id.find(token);
    if (it == token_to_id.end()) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: lacks the token %s for byte 0x%02X", encoder_name,
                                                        QuoteForMessage(token), b));
    }
    tokenizer->byte_to_id_[b] = it->second;
  }
  if (const auto it = token_to_id.find(kEndOfText); it != token_to_id.end()) {
    tokenizer->specials_.push_back({kEndOfText, it->second});
    tokenizer->eos_id_ = it->second;
  }
  RETURN_IF_ERROR(ParseMerges(vocab_bpe, vocab_name, token_to_id, &tokenizer->merges_));
  ASSIGN_OR_RETURN(tokenizer->pre_tokenizer_, internal::Gpt2PreTokenizer::Create());
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Gpt2BpeTokenizer>> Gpt2BpeTokenizer::Load(const std::string& encoder_json_path,
                                                                         const std::string& vocab_bpe_path) {
  ASSIGN_OR_RETURN(const std::string encoder_json, util::ReadFile(encoder_json_path));
  ASSIGN_OR_RETURN(const std::string vocab_bpe, util::ReadFile(vocab_bpe_path));
  return CreateNamed(encoder_json, vocab_bpe, encoder_json_path, vocab_bpe_path);
}

absl::Status Gpt2BpeTokenizer::EncodeInto(absl::string_view text, bool allow_special,
                                          std::vector<int32_t>* ids) const {
  // Words repeat: within one call, a piece seen before copies the ids of its first encoding ([begin, end) in *ids).
  // The cache lives only as long as the call, so the tokenizer stays immutable and lock-free.
  absl::flat_hash_map<absl::string_view, std::pair<size_t, size_t>> seen;
  std::vector<int32_t> symbols;
  const auto encode_piece = [&](absl::string_view piece) {
    if (piece.size() == 1) {
      ids->push_back(byte_to_id_[static_cast<unsigned char>(piece[0])]);
      return;
    }
    const auto [it, inserted] = seen.try_emplace(piece);
    if (!inserted) {
      const auto [begin, end] = it->second;
      const size_t old_size = ids->size();
      ids->resize(old_size + (end - begin));  // grows geometrically; the copy below reads only [begin, end)
      std::copy(ids->begin() + begin, ids->begin() + end, ids->begin() + old_size);
      return;
    }
    symbols.clear();
    for (const char c : piece) symbols.push_back(byte_to_id_[static_cast<unsigned char>(c)]);
    internal::ApplyMerges(merges_, &symbols);
    it->second = {ids->size(), ids->size() + symbols.size()};
    ids->insert(ids->end(), symbols.begin(), symbols.end());
  };
  const auto encode_text = [&](absl::string_view segment) { return pre_tokenizer_->Split(segment, encode_piece); };
  if (!allow_special) return encode_text(text);
  return internal::SplitOnSpecialTokens(text, specials_, encode_text, [&](int32_t id) { ids->push_back(id); });
}

absl::StatusOr<std::vector<int32_t>> Gpt2BpeTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 1);
  RETURN_IF_ERROR(EncodeInto(text, /*allow_special=*/true, &ids));
  return ids;
}

absl::StatusOr<std::vector<int32_t>> Gpt2BpeTokenizer::EncodeOrdinary(absl::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 1);
  RETURN_IF_ERROR(EncodeInto(text, /*allow_special=*/false, &ids));
  return ids;
}

absl::StatusOr<std::string> Gpt2BpeTokenizer::Decode(absl::Span<const int32_t> ids) const {
  RETURN_IF_ERROR(internal::CheckIdsInVocabulary(ids, VocabSize()));
  return internal::ConcatTokenBytes(ids, id_to_bytes_);
}

absl::string_view Gpt2BpeTokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= VocabSize()) return {};
  return id_to_bytes_[id];
}

}  // namespace rlhf::tokenizer
