// Input: the bytes of a model folder's tokenizer.json (any kind LoadTokenizer reads from it). LoadTokenizer accepts
// it, refuses it with InvalidArgument, or finds no tokenizer it reads (NotFound: a tokenizer.json of another "type",
// as its contract says); an accepted tokenizer encodes and decodes text with ids inside its vocabulary.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using rlhf::fuzz::Expect;
using rlhf::fuzz::ExpectOkOr;
using rlhf::fuzz::Fail;

constexpr char kSample[] = "Hello world <|endoftext|> <eos> list 3 animal : caf\xc3\xa9 \xff\xfe";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = rlhf::fuzz::FreshScratchDir("model");
  rlhf::fuzz::WriteScratchFile("model/tokenizer.json", std::string(reinterpret_cast<const char*>(data), size));
  auto tokenizer = rlhf::tokenizer::LoadTokenizer(dir);
  if (!tokenizer.ok()) {
    ExpectOkOr(tokenizer.status(), "LoadTokenizer", {absl::StatusCode::kInvalidArgument, absl::StatusCode::kNotFound});
    return 0;
  }
  Expect((*tokenizer)->VocabSize() > 0, "an accepted tokenizer has no vocabulary");
  for (bool ordinary : {false, true}) {
    auto ids = ordinary ? (*tokenizer)->EncodeOrdinary(kSample) : (*tokenizer)->Encode(kSample);
    if (!ids.ok()) Fail("Encode with an accepted tokenizer", ids.status());
    for (int32_t id : *ids) Expect(id >= 0 && id < (*tokenizer)->VocabSize(), "an id outside the vocabulary");
    auto decoded = (*tokenizer)->Decode(*ids);
    if (!decoded.ok()) Fail("Decode with an accepted tokenizer", decoded.status());
  }
  for (auto id : {(*tokenizer)->EosId(), (*tokenizer)->PadId(), (*tokenizer)->BosId()}) {
    if (id.has_value()) Expect(*id >= 0 && *id < (*tokenizer)->VocabSize(), "a special id outside the vocabulary");
  }
  return 0;
}
