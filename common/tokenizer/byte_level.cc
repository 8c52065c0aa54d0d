#include "common/tokenizer/byte_level.h"

#include "common/tokenizer/utf8.h"

namespace rlhf::tokenizer::internal {

ByteAlphabet::ByteAlphabet() {
  code_point_to_byte.fill(-1);
  uint32_t next_extra = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    byte_to_code_point[b] = printable ? b : next_extra++;
    code_point_to_byte[byte_to_code_point[b]] = static_cast<int16_t>(b);
  }
}

const ByteAlphabet& GetByteAlphabet() {
  static const ByteAlphabet* const alphabet = new ByteAlphabet();
  return *alphabet;
}

std::optional<std::string> ByteLevelToBytes(absl::string_view token) {
  const ByteAlphabet& alphabet = GetByteAlphabet();
  std::string bytes;
  bytes.reserve(token.size());
  for (size_t pos = 0; pos < token.size();) {
    const Utf8Char c = NextUtf8Char(token, pos);
    if (!c.valid || c.code_point >= ByteAlphabet::kMaxCodePoint || alphabet.code_point_to_byte[c.code_point] < 0) {
      return std::nullopt;
    }
    bytes.push_back(static_cast<char>(alphabet.code_point_to_byte[c.code_point]));
    pos += static_cast<size_t>(c.length);
  }
  return bytes;
}

std::string BytesToByteLevel(absl::string_view bytes) {
  const ByteAlphabet& alphabet = GetByteAlphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char b : bytes) AppendUtf8(alphabet.byte_to_code_point[static_cast<unsigned char>(b)], &out);
  return out;
}

}  // namespace rlhf::tokenizer::internal
