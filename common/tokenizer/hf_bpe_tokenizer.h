// Hugging Face `tokenizer.json` byte-level BPE tokenizers (Qwen2 / Qwen3, Llama 3, GPT-2-style files), exact with
// Hugging Face's Rust `tokenizers` library (encode with add_special_tokens=false, decode keeping special tokens) for
// the features it supports; every other feature is refused at load.
#ifndef RLHF_COMMON_TOKENIZER_HF_BPE_TOKENIZER_H_
#define RLHF_COMMON_TOKENIZER_HF_BPE_TOKENIZER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/tokenizer/added_token_matcher.h"
#include "common/tokenizer/bpe_merge.h"
#include "common/tokenizer/regex_splitter.h"
#include "common/tokenizer/tokenizer.h"
#include "common/tokenizer/unicode_normalizer.h"

namespace rlhf::tokenizer {

// What a tokenizer.json may hold (anything else is refused with InvalidArgument naming the file and the JSON field):
//   - "normalizer": null, {"type": "NFC" | "NFD" | "NFKC" | "NFKD"}, or a "Sequence" of those ("normalizers");
//   - "pre_tokenizer": "Split" steps (a "Regex" in Oniguruma syntax, see regex_splitter.h for the constructs
//     translated, or a literal "String"; "behavior": "Isolated"; "invert": false), then one "ByteLevel" last
//     (any "add_prefix_space"; with "use_regex": true it also splits with GPT-2's pattern), alone or in a "Sequence";
//   - "model": "BPE" with "vocab" and "merges" ("a b" strings or ["a", "b"] pairs), "ignore_merges", "dropout"
//     null or 0, "byte_fallback" false, no "continuing_subword_prefix" / "end_of_word_suffix"; the vocabulary must
//     have the 256 single-byte tokens;
//   - "added_tokens" with "lstrip", "rstrip", "normalized" and "special" ("single_word": true is refused), whose ids
//     are the ones tokenizers would give them;
//   - "decoder": "ByteLevel"; "post_processor": null, "ByteLevel", "TemplateProcessing", "RobertaProcessing",
//     "BertProcessing" or a "Sequence" of them (only their single-sequence special tokens are used:
//     TextPrefixIds / TextSuffixIds); "truncation" and "padding" are per-call options and ignored.
//
// Encode, as tokenizers' encode(text, add_special_tokens=false): added tokens with "normalized": false are found in
// the raw text (leftmost-longest; lstrip / rstrip widen the match over white space); each stretch between them is
// normalised, then added tokens with "normalized": true are found in it; the rest is cut by the pre-tokenizer and
// each piece's bytes are merged by BPE (with "ignore_merges", a piece that is itself in the vocabulary is one
// token). EncodeOrdinary matches no added token at all (special or not): their text is encoded as ordinary text.
//
// Invalid UTF-8 never fails (tokenizers itself only takes valid strings): bytes outside well-formed characters are
// left alone by normalisation, match no part of a pre-tokenizer regex, and so form pieces of their own (each
// maximal run between two regex matches), which BPE encodes from their single-byte tokens; Decode gives the bytes
// back.
//
// Decode returns the exact bytes of the tokens: byte-level tokens map back through GPT-2's byte alphabet, added
// tokens give their content (as tokenizers' ByteLevel decoder does: mapped through the alphabet when every character
// is in it, else as is), special tokens included. No clean-up of spaces is applied.
//
// BosId / EosId / PadId come from tokenizer_config.json's "bos_token" / "eos_token" / "pad_token" (strings or
// {"content": ...} objects; null or absent: none), resolved to ids as tokenizers' token_to_id does.
//
// Thread safety: immutable after Create; all methods may be called concurrently.
class HfBpeTokenizer final : public Tokenizer {
 public:
  // Builds the tokenizer from the text of tokenizer.json and of tokenizer_config.json (empty: no config). Errors
  // name the files as `json_name` and `config_name`.
  static absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> Create(
      absl::string_view tokenizer_json, absl::string_view tokenizer_config_json,
      absl::string_view json_name = "tokenizer.json", absl::string_view config_name = "tokenizer_config.json");

  // Reads `model_dir`/tokenizer.json and, when it exists, `model_dir`/tokenizer_config.json. NotFound when
  // tokenizer.json is missing; errors name the paths.
  static absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> Load(const std::string& model_dir);

  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override;
  absl::StatusOr<std::vector<int32_t>> EncodeOrdinary(absl::string_view text) const override;
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const override;
  int32_t VocabSize() const override { return static_cast<int32_t>(id_to_bytes_.size()); }
  std::optional<int32_t> EosId() const override { return eos_id_; }
  std::optional<int32_t> PadId() const override { return pad_id_; }
  std::optional<int32_t> BosId() const override { return bos_id_; }
  std::string Kind() const override { return kHfBpeKind; }
  std::vector<int32_t> TextPrefixIds() const override { return prefix_ids_; }
  std::vector<int32_t> TextSuffixIds() const override { return suffix_ids_; }

  // The bytes token `id` decodes to; empty when `id` is out of range or has no token.
  absl::string_view TokenBytes(int32_t id) const;

  // The id of `token` as tokenizers' token_to_id finds it: an added token's content ("<|im_end|>") first, then a
  // vocabulary token in its byte-level spelling ("Ġthe"). nullopt when neither.
  std::optional<int32_t> TokenToId(absl::string_view token) const;

  // Whether `id` is an added token marked "special".
  bool IsSpecialToken(int32_t id) const;

  // Whether `id` is an added token (special or not).
  bool IsAddedToken(int32_t id) const;

  size_t NumMerges() const { return merges_.size(); }
  size_t NumAddedTokens() const { return added_by_content_.size(); }

 private:
  // A pre-tokenizer step: optionally prefix each piece with a space, then optionally split it with a regex.
  struct PreTokenizerStep {
    bool add_prefix_space = false;
    std::unique_ptr<internal::RegexSplitter> splitter;  // null: the piece is kept whole
  };
  struct EncodeState;
  struct Parser;

  HfBpeTokenizer() = default;

  absl::Status EncodeInto(absl::string_view text, bool match_added, std::vector<int32_t>* ids) const;
  absl::Status EncodeNormalized(absl::string_view text, bool match_added, EncodeState& state) const;
  absl::Status PreTokenize(absl::string_view piece, size_t step, EncodeState& state) const;
  void EncodePiece(absl::string_view piece, EncodeState& state) const;

  std::vector<internal::NormalizationForm> normalizers_;  // applied in order
  std::vector<PreTokenizerStep> pre_tokenizer_;           // applied in order; the last is the ByteLevel step
  internal::MergeTable merges_;
  bool ignore_merges_ = false;
  std::array<int32_t, 256> byte_to_id_{};                          // the single-byte token of each byte
  absl::flat_hash_map<std::string, int32_t> bytes_to_id_;          // vocabulary tokens by their bytes
  absl::flat_hash_map<std::string, int32_t> other_vocab_;          // vocabulary tokens outside the byte alphabet
  absl::flat_hash_map<std::string, int32_t> added_by_content_;     // added tokens by content
  std::unique_ptr<internal::AddedTokenMatcher> raw_added_;         // added tokens with "normalized": false
  std::unique_ptr<internal::AddedTokenMatcher> normalized_added_;  // with "normalized": true (normalised content)
  std::vector<std::string> id_to_bytes_;  // what each id decodes to; empty for ids without a token
  std::vector<bool> has_token_;           // false for ids no token has
  std::vector<bool> special_;             // added tokens marked special
  std::vector<bool> added_;               // added tokens
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
  std::optional<int32_t> pad_id_;
  std::vector<int32_t> prefix_ids_;
  std::vector<int32_t> suffix_ids_;
};

}  // namespace rlhf::tokenizer

#endif  // RLHF_COMMON_TOKENIZER_HF_BPE_TOKENIZER_H_
