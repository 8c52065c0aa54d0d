// GPT-2's byte-level BPE tokenizer (Radford et al. 2019; openai/gpt-2 src/encoder.py), bit-exact with it.
#ifndef RLHF_COMMON_TOKENIZER_GPT2_BPE_TOKENIZER_H_
#define RLHF_COMMON_TOKENIZER_GPT2_BPE_TOKENIZER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/tokenizer/bpe_merge.h"
#include "common/tokenizer/gpt2_pretokenizer.h"
#include "common/tokenizer/special_tokens.h"
#include "common/tokenizer/tokenizer.h"

namespace rlhf::tokenizer {

// GPT-2's special end-of-text token; id 50256 in GPT-2's vocabulary.
inline constexpr char kEndOfText[] = "<|endoftext|>";

// Encode: text is cut into pieces by GPT-2's regex (gpt2_pretokenizer.h), each piece's bytes are mapped to GPT-2's
// byte alphabet (bytes_to_unicode) and merged by rank from vocab.bpe. "<|endoftext|>" in the text (Encode, not
// EncodeOrdinary) becomes its single id.
//
// Invalid UTF-8 never fails: bytes outside well-formed characters form pieces of their own and are encoded by the
// same merges (GPT-2 proper only ever sees valid text, so there is no reference to match there), and Decode gives
// back exactly the input bytes. Decode returns the tokens' bytes unchanged, also when they are not valid UTF-8 (a
// character split across a slice of ids), so that slices decoded one by one concatenate to the right text; apply
// ReplaceInvalidUtf8 for errors="replace" behaviour.
//
// Thread safety: immutable after Create (no mutable cache); all methods may be called concurrently.
class Gpt2BpeTokenizer final : public Tokenizer {
 public:
  // Builds the tokenizer from the contents of `encoder.json` (token -> id; ids must be distinct and cover
  // 0..size-1) and `vocab.bpe` (an optional "#version" first line, then one merge "left right" a line, highest
  // priority first). InvalidArgument naming the file, and the line or token, when either is malformed.
  static absl::StatusOr<std::unique_ptr<Gpt2BpeTokenizer>> Create(absl::string_view encoder_json,
                                                                  absl::string_view vocab_bpe);

  // Reads the two files and calls Create; errors name the path.
  static absl::StatusOr<std::unique_ptr<Gpt2BpeTokenizer>> Load(const std::string& encoder_json_path,
                                                                const std::string& vocab_bpe_path);

  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override;
  absl::StatusOr<std::vector<int32_t>> EncodeOrdinary(absl::string_view text) const override;
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const override;
  int32_t VocabSize() const override { return static_cast<int32_t>(id_to_bytes_.size()); }
  std::optional<int32_t> EosId() const override { return eos_id_; }
  std::optional<int32_t> PadId() const override { return std::nullopt; }
  std::string Kind() const override { return kGpt2BpeKind; }

  // The bytes token `id` stands for; empty when `id` is out of range.
  absl::string_view TokenBytes(int32_t id) const;

  // Number of merges loaded from vocab.bpe (50000 for GPT-2).
  size_t NumMerges() const { return merges_.size(); }

 private:
  Gpt2BpeTokenizer() = default;

  // Create, with errors prefixed by the given names of the two files.
  static absl::StatusOr<std::unique_ptr<Gpt2BpeTokenizer>> CreateNamed(absl::string_view encoder_json,
                                                                       absl::string_view vocab_bpe,
                                                                       absl::string_view encoder_name,
                                                                       absl::string_view vocab_name);

  absl::Status EncodeInto(absl::string_view text, bool allow_special, std::vector<int32_t>* ids) const;

  std::unique_ptr<internal::Gpt2PreTokenizer> pre_tokenizer_;
  internal::MergeTable merges_;
  std::array<int32_t, 256> byte_to_id_{};  // the single-byte token of each byte
  std::vector<std::string> id_to_bytes_;   // raw bytes of each token, indexed by id
  std::vector<internal::SpecialToken> specials_;
  std::optional<int32_t> eos_id_;
};

}  // namespace rlhf::tokenizer

#endif  // RLHF_COMMON_TOKENIZER_GPT2_BPE_TOKENIZER_H_
