// Input: text to tokenize, for one tokenizer kind: the tokenizer LoadTokenizer finds in RLHF_FUZZ_TOKENIZER_DIR
// (a model folder; CMakeLists.txt has one line per kind). Encode and EncodeOrdinary accept any bytes and give ids in
// [0, VocabSize()) that decode; for kinds marked round-trip (byte-level ones) the decoded bytes are the input. The
// input read as little-endian int32 ids must decode, or be refused with InvalidArgument exactly when an id is out
// of range.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

#ifndef RLHF_FUZZ_TOKENIZER_ROUND_TRIP
#define RLHF_FUZZ_TOKENIZER_ROUND_TRIP 0
#endif

namespace {

using rlhf::fuzz::Expect;
using rlhf::fuzz::Fail;
using rlhf::tokenizer::Tokenizer;

const Tokenizer& TheTokenizer() {
  static const Tokenizer* tokenizer = [] {
    std::string dir = RLHF_FUZZ_TOKENIZER_DIR;
    // A path relative to the data folder (the GPT-2 vocabulary) follows RLHF_DATA_DIR.
    if (dir.rfind("data:", 0) == 0) dir = rlhf::fuzz::DataDir() + "/" + dir.substr(5);
    auto loaded = rlhf::tokenizer::LoadTokenizer(dir);
    if (!loaded.ok()) Fail(absl::StrCat("cannot load the tokenizer of ", dir), loaded.status());
    return loaded->release();
  }();
  return *tokenizer;
}

void CheckEncoding(const Tokenizer& tokenizer, const std::string& text, bool ordinary) {
  const std::string what = ordinary ? "EncodeOrdinary" : "Encode";
  auto ids = ordinary ? tokenizer.EncodeOrdinary(text) : tokenizer.Encode(text);
  if (!ids.ok()) Fail(what + " failed (it accepts any bytes)", ids.status());
  for (int32_t id : *ids) Expect(id >= 0 && id < tokenizer.VocabSize(), what + " gave an id outside the vocabulary");
  if (ordinary && tokenizer.EosId().has_value()) {
    // Untrusted text cannot inject an end-of-text token.
    for (int32_t id : *ids) Expect(id != *tokenizer.EosId(), "EncodeOrdinary produced the end-of-text id");
  }
  auto decoded = tokenizer.Decode(*ids);
  if (!decoded.ok()) Fail("Decode of " + what + "'s ids", decoded.status());
  if (RLHF_FUZZ_TOKENIZER_ROUND_TRIP) Expect(*decoded == text, "Decode(" + what + "(text)) != text");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  TheTokenizer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizer& tokenizer = TheTokenizer();
  const std::string text(reinterpret_cast<const char*>(data), size);
  CheckEncoding(tokenizer, text, /*ordinary=*/false);
  CheckEncoding(tokenizer, text, /*ordinary=*/true);

  std::vector<int32_t> ids(size / sizeof(int32_t));
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * sizeof(int32_t));
  bool in_range = true;
  for (int32_t id : ids) in_range = in_range && id >= 0 && id < tokenizer.VocabSize();
  auto decoded = tokenizer.Decode(ids);
  if (in_range && !decoded.ok()) Fail("Decode of ids inside the vocabulary", decoded.status());
  if (!in_range) {
    Expect(!decoded.ok() && decoded.status().code() == absl::StatusCode::kInvalidArgument,
           "Decode of an id outside the vocabulary did not give InvalidArgument");
  }
  return 0;
}
