// A word-level tokenizer with a fixed vocabulary, for tiny models on closed tasks (the built-in task).
#ifndef RLHF_COMMON_TOKENIZER_WORD_TOKENIZER_H_
#define RLHF_COMMON_TOKENIZER_WORD_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/tokenizer/special_tokens.h"
#include "common/tokenizer/tokenizer.h"

namespace rlhf::tokenizer {

struct WordTokenizerOptions {
  // Every token in id order: vocab[i] has id i. Each entry is non-empty, valid UTF-8, free of ASCII whitespace
  // (space, \t, \n, \v, \f, \r) and distinct.
  std::vector<std::string> vocab;
  // The entries of `vocab` that are special tokens. Encode turns their text into their id wherever it occurs;
  // EncodeOrdinary never produces them (their text becomes `unk_token` there).
  std::vector<std::string> special_tokens;
  // The out-of-vocabulary token: every word that is not in `vocab` encodes to it, so any byte string encodes.
  // Required; must be one of `special_tokens`.
  std::string unk_token = "<unk>";
  // End of text, padding and beginning of text; unset for none. Each must be one of `special_tokens`.
  std::optional<std::string> eos_token = "<eos>";
  std::optional<std::string> pad_token = "<pad>";
  std::optional<std::string> bos_token = "<bos>";
};

// Text is a sequence of words separated by ASCII whitespace; each word is one token.
//   - Encode: the text is first split at special-token text (found anywhere, also inside a word, as the byte
//     tokenizer does: "dog<eos>" -> dog, <eos>); the stretches between are split on whitespace, and each word maps to
//     its id, or to the unknown token when it is not an ordinary vocabulary word.
//   - EncodeOrdinary: split on whitespace only; a word spelled like a special token is out of vocabulary (unknown
//     token), so untrusted text cannot inject an end-of-text.
//   - Decode: the tokens' texts joined with single spaces (special tokens as their text; "" for no ids). So
//     Decode(Encode(t)) is t with its whitespace normalised, when every word of t is in the vocabulary.
//
// Saved as `tokenizer.json` (ToJson / Save), which LoadTokenizer recognises by its "type":
//   {"type": "word", "version": 1,
//    "vocab": ["<pad>", "<bos>", "<eos>", "<unk>", "hello", ...],
//    "special_tokens": ["<pad>", "<bos>", "<eos>", "<unk>"],
//    "unk_token": "<unk>", "eos_token": "<eos>", "pad_token": "<pad>", "bos_token": "<bos>"}
// `version` may be left out (it means 1); `eos_token`, `pad_token` and `bos_token` may be null or left out (none);
// `unk_token` is required.
//
// Thread safety: immutable after creation; all methods may be called concurrently.
class WordTokenizer final : public Tokenizer {
 public:
  static constexpr int kFormatVersion = 1;

  // InvalidArgument naming the field ("vocab[3]", "eos_token", ...) when `options` are inconsistent.
  static absl::StatusOr<std::unique_ptr<WordTokenizer>> Create(WordTokenizerOptions options);

  // Parses the tokenizer.json format above; InvalidArgument naming the field when it is malformed.
  static absl::StatusOr<std::unique_ptr<WordTokenizer>> FromJson(absl::string_view json);

  // Reads and parses a tokenizer.json file; errors name the path.
  static absl::StatusOr<std::unique_ptr<WordTokenizer>> Load(const std::string& path);

  // The tokenizer.json form of this tokenizer (deterministic: the same options give the same bytes).
  std::string ToJson() const;

  // Writes ToJson() to `path` atomically (util::WriteFileAtomically).
  absl::Status Save(const std::string& path) const;

  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override;
  absl::StatusOr<std::vector<int32_t>> EncodeOrdinary(absl::string_view text) const override;
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const override;
  int32_t VocabSize() const override { return static_cast<int32_t>(options_.vocab.size()); }
  std::optional<int32_t> EosId() const override { return eos_id_; }
  std::optional<int32_t> PadId() const override { return pad_id_; }
  std::optional<int32_t> BosId() const override { return bos_id_; }
  std::string Kind() const override { return kWordKind; }

  int32_t UnkId() const { return unk_id_; }
  // The id of an ordinary (non-special) vocabulary word; nullopt for other words and for special tokens.
  std::optional<int32_t> OrdinaryId(absl::string_view word) const;
  bool IsSpecial(int32_t id) const;

  const WordTokenizerOptions& options() const { return options_; }

 private:
  WordTokenizer() = default;

  void AppendWords(absl::string_view text, std::vector<int32_t>* ids) const;

  WordTokenizerOptions options_;
  absl::flat_hash_map<std::string, int32_t> ordinary_;
  std::vector<internal::SpecialToken> specials_;
  std::vector<bool> is_special_;
  int32_t unk_id_ = 0;
  std::optional<int32_t> eos_id_;
  std::optional<int32_t> pad_id_;
  std::optional<int32_t> bos_id_;
};

}  // namespace rlhf::tokenizer

#endif  // RLHF_COMMON_TOKENIZER_WORD_TOKENIZER_H_
