// A byte-level tokenizer for tiny models: ids 0..255 are the bytes themselves, special tokens follow from 256.
#ifndef RLHF_COMMON_TOKENIZER_BYTE_TOKENIZER_H_
#define RLHF_COMMON_TOKENIZER_BYTE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/tokenizer/special_tokens.h"
#include "common/tokenizer/tokenizer.h"

namespace rlhf::tokenizer {

struct ByteTokenizerOptions {
  // Special tokens in id order: the first gets id 256, the next 257, and so on. Each non-empty, valid UTF-8 and
  // distinct.
  std::vector<std::string> special_tokens = {"<|endoftext|>", "<|pad|>"};
  // Which special token ends a text / pads a batch; unset for none. Must be one of `special_tokens`.
  std::optional<std::string> eos_token = "<|endoftext|>";
  std::optional<std::string> pad_token = "<|pad|>";
};

// Ids 0..255 are bytes, 256.. the special tokens. Any byte string round-trips exactly through Encode and Decode,
// invalid UTF-8 included (Encode turns special-token text into its id, which decodes back to the same text).
//
// Saved as `tokenizer.json` (ToJson / Save), which LoadTokenizer recognises by its "type":
//   {"type": "byte", "version": 1,
//    "special_tokens": [{"id": 256, "content": "<|endoftext|>"}, {"id": 257, "content": "<|pad|>"}],
//    "eos_token": "<|endoftext|>", "pad_token": "<|pad|>"}
// `version` may be left out (it means 1); `eos_token` and `pad_token` may be null or left out (none).
//
// Thread safety: immutable after creation; all methods may be called concurrently.
class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kNumByteIds = 256;
  static constexpr int kFormatVersion = 1;

  // InvalidArgument naming the field when `options` are inconsistent.
  static absl::StatusOr<std::unique_ptr<ByteTokenizer>> Create(ByteTokenizerOptions options = {});

  // Parses the tokenizer.json format above; InvalidArgument naming the field when it is malformed.
  static absl::StatusOr<std::unique_ptr<ByteTokenizer>> FromJson(absl::string_view json);

  // Reads and parses a tokenizer.json file; errors name the path.
  static absl::StatusOr<std::unique_ptr<ByteTokenizer>> Load(const std::string& path);

  // The tokenizer.json form of this tokenizer.
  std::string ToJson() const;

  // Writes ToJson() to `path` atomically (util::WriteFileAtomically).
  absl::Status Save(const std::string& path) const;

  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override;
  absl::StatusOr<std::vector<int32_t>> EncodeOrdinary(absl::string_view text) const override;
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const override;
  int32_t VocabSize() const override { return kNumByteIds + static_cast<int32_t>(specials_.size()); }
  std::optional<int32_t> EosId() const override { return eos_id_; }
  std::optional<int32_t> PadId() const override { return pad_id_; }
  std::string Kind() const override { return kByteKind; }

  const ByteTokenizerOptions& options() const { return options_; }

 private:
  ByteTokenizer() = default;

  ByteTokenizerOptions options_;
  std::vector<internal::SpecialToken> specials_;
  std::optional<int32_t> eos_id_;
  std::optional<int32_t> pad_id_;
};

}  // namespace rlhf::tokenizer

#endif  // RLHF_COMMON_TOKENIZER_BYTE_TOKENIZER_H_
