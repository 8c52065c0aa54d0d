// Input: the bytes of a safetensors file (common/model/safetensors.h), as a checkpoint folder or an UpdateWeights
// stream delivers them. Parse must accept it or refuse it with InvalidArgument; every tensor of an accepted file
// must materialise with the shape and byte size its header declares, in each conversion the loaders use.
#include <ATen/ops/empty.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/model/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using rlhf::fuzz::Expect;
using rlhf::fuzz::ExpectOkOr;
using rlhf::model::SafetensorsConversion;
using rlhf::model::SafetensorsFile;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = SafetensorsFile::Parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!file.ok()) {
    ExpectOkOr(file.status(), "SafetensorsFile::Parse", {absl::StatusCode::kInvalidArgument});
    return 0;
  }
  for (const std::string& name : (*file)->Names()) {
    auto entry = (*file)->Entry(name);
    Expect(entry.ok(), "Entry of a listed name");
    auto stored = (*file)->Get(name);
    if (!stored.ok()) rlhf::fuzz::Fail(absl::StrCat("Get('", name, "') of an accepted file"), stored.status());
    Expect(stored->sizes().vec() == entry->shape, "Get's shape differs from the header's");
    Expect(static_cast<uint64_t>(stored->nbytes()) == entry->end - entry->begin,
           "Get's byte size differs from data_offsets");
    for (SafetensorsConversion conversion : {SafetensorsConversion::kFloat32, SafetensorsConversion::kInt64}) {
      rlhf::model::SafetensorsGetOptions options;
      options.conversion = conversion;
      options.expected_shape = entry->shape;
      auto converted = (*file)->Get(name, options);
      if (converted.ok()) {
        Expect(converted->sizes().vec() == entry->shape, "converted shape differs from the header's");
      } else {
        ExpectOkOr(converted.status(), "Get with a conversion", {absl::StatusCode::kInvalidArgument});
      }
    }
    at::Tensor copy = at::empty(entry->shape, stored->options());
    ExpectOkOr((*file)->ReadInto(name, copy), "ReadInto a tensor of the same shape and dtype", {});
    Expect(
        copy.nbytes() == 0 || std::memcmp(copy.data_ptr(), stored->data_ptr(), static_cast<size_t>(copy.nbytes())) == 0,
        "ReadInto's bytes differ from Get's");
  }
  return 0;
}
