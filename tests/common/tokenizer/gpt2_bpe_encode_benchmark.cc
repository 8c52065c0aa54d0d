// Measures GPT-2 BPE encoding throughput on a large text (not part of the test suite).
//   gpt2_bpe_encode_benchmark [text_file] [vocab_dir]
// Without a file it encodes 1 MiB of English made from the README-style text below, varied so that the per-call
// word cache does not see one sentence repeated.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/gpt2_bpe_tokenizer.h"
#include "common/util/file_util.h"

namespace {

std::string SyntheticEnglish(size_t bytes) {
  const char* const words[] = {
      "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
      "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were",
      "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would", "who",
      "so", "no", "model", "reward", "policy", "training", "language", "human", "feedback", "preference", "sample",
      "tokenizer", "gradient", "optimisation", "reinforcement", "learning", "instruction", "following", "dataset",
      "evaluation", "labelers", "comparison", "distribution", "InstructGPT", "GPT-3", "2022", "1.3B", "175B"};
  const size_t n = sizeof(words) / sizeof(words[0]);
  std::string text;
  text.reserve(bytes + 64);
  uint64_t state = 12345;
  size_t sentence = 0;
  while (text.size() < bytes) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    const size_t i = (state >> 33) % n;
    text += sentence == 0 ? "" : " ";
    text += words[i];
    if (++sentence > 8 + (state >> 60)) {
      text += (state >> 40) % 5 == 0 ? ".\n\n" : ". ";
      sentence = 0;
    }
  }
  text.resize(bytes);
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string vocab_dir =
      argc > 2 ? argv[2] : absl::StrCat(RLHF_TEST_DEFAULT_DATA_DIR, "/gpt2");
  auto load_start = std::chrono::steady_clock::now();
  auto tokenizer =
      rlhf::tokenizer::Gpt2BpeTokenizer::Load(vocab_dir + "/encoder.json", vocab_dir + "/vocab.bpe");
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
    return 1;
  }
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  std::string text;
  if (argc > 1) {
    auto contents = rlhf::util::ReadFile(argv[1]);
    if (!contents.ok()) {
      std::fprintf(stderr, "%s\n", contents.status().ToString().c_str());
      return 1;
    }
    text = *std::move(contents);
  } else {
    text = SyntheticEnglish(size_t{1} << 20);
  }
  double best = 1e9;
  size_t tokens = 0;
  for (int run = 0; run < 5; ++run) {
    const auto start = std::chrono::steady_clock::now();
    auto ids = (*tokenizer)->Encode(text);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!ids.ok()) {
      std::fprintf(stderr, "%s\n", ids.status().ToString().c_str());
      return 1;
    }
    tokens = ids->size();
    if (seconds < best) best = seconds;
  }
  std::printf("load %.3f s; encode %zu bytes -> %zu tokens: best of 5 %.4f s (%.1f MB/s)\n", load_seconds,
              text.size(), tokens, best, text.size() / best / 1e6);
  return 0;
}
