#include "common/data/split.h"

#include "absl/strings/str_cat.h"

namespace rlhf::data {
namespace {

// FNV-1a, 64 bits: fixed by its specification, unlike std::hash or absl::Hash (salted per process).
uint64_t Fnv1a(uint64_t hash, absl::string_view bytes) {
  for (const char c : bytes) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

// SplitMix64's finaliser: spreads FNV's weak high bits over the whole word.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace

bool IsValidationPrompt(absl::string_view prompt, double validation_fraction, uint64_t seed) {
  char seed_bytes[8];
  for (int i = 0; i < 8; ++i) seed_bytes[i] = static_cast<char>((seed >> (8 * i)) & 0xFF);  // little-endian
  uint64_t hash = Fnv1a(0xcbf29ce484222325ULL, absl::string_view(seed_bytes, sizeof(seed_bytes)));
  hash = Mix(Fnv1a(hash, prompt));
  const double u = static_cast<double>(hash >> 11) * 0x1.0p-53;  // in [0, 1)
  return u < validation_fraction;
}

absl::Status ValidateValidationFraction(double validation_fraction) {
  if (validation_fraction >= 0.0 && validation_fraction <= 1.0) return absl::OkStatus();  // false for NaN
  return absl::InvalidArgumentError(absl::StrCat("validation_fraction must be in [0, 1], got ", validation_fraction));
}

}  // namespace rlhf::data
