// GPT-2's byte-level alphabet, shared by the GPT-2 and Hugging Face tokenizer.json BPE tokenizers. Internal to
// common/tokenizer.
#ifndef RLHF_COMMON_TOKENIZER_BYTE_LEVEL_H_
#define RLHF_COMMON_TOKENIZER_BYTE_LEVEL_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace rlhf::tokenizer::internal {

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100.. in order,
// so that every token is a printable string.
struct ByteAlphabet {
  static constexpr uint32_t kMaxCodePoint = 256 + 68;
  std::array<uint32_t, 256> byte_to_code_point{};
  std::array<int16_t, kMaxCodePoint> code_point_to_byte{};  // -1 for code points outside the alphabet

  ByteAlphabet();
};

const ByteAlphabet& GetByteAlphabet();

// The bytes a byte-level token string stands for, or nullopt when `token` is not valid UTF-8 or has a character
// outside the alphabet.
std::optional<std::string> ByteLevelToBytes(absl::string_view token);

// The byte-level string of `bytes` (each byte as its character of the alphabet, UTF-8 encoded).
std::string BytesToByteLevel(absl::string_view bytes);

}  // namespace rlhf::tokenizer::internal

#endif  // RLHF_COMMON_TOKENIZER_BYTE_LEVEL_H_
