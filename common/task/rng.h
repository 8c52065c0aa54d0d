// Deterministic random numbers for the built-in task. Internal to common/task.
//
// std::mt19937_64 is specified bit for bit by the C++ standard, but the standard distributions are not (libstdc++
// and libc++ draw differently), so the few distributions the task needs are written out here: the same seed gives
// the same data files on every platform.
#ifndef RLHF_COMMON_TASK_RNG_H_
#define RLHF_COMMON_TASK_RNG_H_

#include <cstdint>
#include <initializer_list>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace rlhf::task::internal {

// SplitMix64's output function: a bijection of 64-bit words that spreads every input bit over the output.
inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// One seed from several parts (a base seed, a stream number, an index...), order-sensitive.
inline uint64_t MixSeed(std::initializer_list<uint64_t> parts) {
  uint64_t h = 0x6A09E667F3BCC908ull;
  for (const uint64_t part : parts) h = SplitMix64(h ^ SplitMix64(part));
  return h;
}

// FNV-1a over bytes: a stable hash of text (never std::hash, which differs between platforms).
inline uint64_t Fnv1a64(absl::string_view text) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (const char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001B3ull;
  }
  return h;
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(SplitMix64(seed)) {}

  // Uniform in [0, n); n > 0. Unbiased (rejection of the last partial block of 2^64).
  uint64_t Uniform(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x = engine_();
    while (x >= limit) x = engine_();
    return x % n;
  }

  // Uniform in [lo, hi], both inclusive; lo <= hi.
  int32_t UniformInt(int32_t lo, int32_t hi) {
    return lo + static_cast<int32_t>(Uniform(static_cast<uint64_t>(static_cast<int64_t>(hi) - lo + 1)));
  }

  // Uniform in [0, 1) with 53 random bits.
  double UniformDouble() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

  // True with probability p (p <= 0: never; p >= 1: always).
  bool Bernoulli(double p) { return UniformDouble() < p; }

  // `k` distinct values of [0, n) in random order; 0 <= k <= n.
  std::vector<int32_t> Sample(int32_t n, int32_t k) {
    std::vector<int32_t> all(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
    for (int32_t i = 0; i < k; ++i) {  // a partial Fisher-Yates shuffle
      const size_t j = static_cast<size_t>(i) + Uniform(static_cast<uint64_t>(n - i));
      std::swap(all[static_cast<size_t>(i)], all[j]);
    }
    all.resize(static_cast<size_t>(k));
    return all;
  }

 private:
  std::mt19937_64 engine_;
};

}  // namespace rlhf::task::internal

#endif  // RLHF_COMMON_TASK_RNG_H_
