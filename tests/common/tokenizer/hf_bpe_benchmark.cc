// Measures loading and encoding of Hugging Face tokenizer.json BPE tokenizers, and rendering of their chat
// templates (not part of the test suite).
//   hf_bpe_benchmark [--text=FILE] [model_dir ...]
// Default folders: RLHF_DATA_DIR/qwen3 and RLHF_DATA_DIR/llama3. For each: load time (best of 3), then Encode on
// 1 MiB of synthetic English and 1 MiB of mixed scripts (few distinct words, so the per-call cache of pieces helps;
// --text adds a file of real text) (best of 5), then the chat template's load time and a
// 20-turn conversation's render time (best of 20). Prints wall and CPU seconds: CPU time is the honest figure on a
// machine shared with other work.
#include <time.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/chat_template.h"
#include "common/tokenizer/hf_bpe_tokenizer.h"
#include "common/util/file_util.h"

namespace {

struct Times {
  double wall = 1e9;
  double cpu = 1e9;
};

double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

std::string SyntheticText(size_t bytes, const std::vector<std::string>& words) {
  std::string text;
  text.reserve(bytes + 64);
  uint64_t state = 12345;
  size_t sentence = 0;
  while (text.size() < bytes) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    text += sentence == 0 ? "" : " ";
    text += words[(state >> 33) % words.size()];
    if (++sentence > 8 + (state >> 60)) {
      text += (state >> 40) % 5 == 0 ? ".\n\n" : ". ";
      sentence = 0;
    }
  }
  // Cut at a character boundary.
  size_t n = bytes;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  text.resize(n);
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> dirs;
  std::string text_file;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--text=", 0) == 0) {
      text_file = arg.substr(7);
    } else {
      dirs.push_back(arg);
    }
  }
  if (dirs.empty()) {
    dirs = {absl::StrCat(RLHF_TEST_DEFAULT_DATA_DIR, "/qwen3"), absl::StrCat(RLHF_TEST_DEFAULT_DATA_DIR, "/llama3")};
  }
  // clang-format off
  const std::vector<std::string> english = {
      "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
      "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were",
      "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would",
      "model", "reward", "policy", "training", "language", "human", "feedback", "preference", "sample", "tokenizer",
      "gradient", "optimisation", "reinforcement", "learning", "instruction", "dataset", "2022", "1.3B", "175B"};
  const std::vector<std::string> mixed = {
      "the",        "model",    "naïve",   "café",    "日本語の", "テキスト", "你好", "世界",  "自然语言处理", "한국어",
      "문장입니다", "Ελληνικά", "русский", "العربية", "עברית",    "हिन्दी",    "ไทย",  "Tiếng", "Việt",         "🤖",
      "👍🏽",   "x=>x**2;", "{\"k\":", "12345",   "3.14159",  "  ",       "\t",   "\r\n",  "it's",         "DON'T"};
  // clang-format on
  std::vector<std::pair<std::string, std::string>> texts = {{"English", SyntheticText(1 << 20, english)},
                                                             {"mixed scripts", SyntheticText(1 << 20, mixed)}};
  if (!text_file.empty()) {
    auto contents = rlhf::util::ReadFile(text_file);
    if (!contents.ok()) {
      std::fprintf(stderr, "%s\n", contents.status().ToString().c_str());
      return 1;
    }
    texts.emplace_back(text_file, *std::move(contents));
  }
  for (const std::string& dir : dirs) {
    Times load;
    std::unique_ptr<rlhf::tokenizer::HfBpeTokenizer> tokenizer;
    for (int run = 0; run < 3; ++run) {
      const auto wall_start = std::chrono::steady_clock::now();
      const double cpu_start = CpuSeconds();
      auto loaded = rlhf::tokenizer::HfBpeTokenizer::Load(dir);
      const double cpu = CpuSeconds() - cpu_start;
      const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
      if (!loaded.ok()) {
        std::fprintf(stderr, "%s\n", loaded.status().ToString().c_str());
        return 1;
      }
      tokenizer = *std::move(loaded);
      load.wall = std::min(load.wall, wall);
      load.cpu = std::min(load.cpu, cpu);
    }
    std::printf("%s: load %.3f s wall, %.3f s CPU (best of 3; vocabulary %d, %zu merges)\n", dir.c_str(), load.wall,
                load.cpu, tokenizer->VocabSize(), tokenizer->NumMerges());
    for (const auto& [name, text] : texts) {
      Times encode;
      size_t tokens = 0;
      for (int run = 0; run < 5; ++run) {
        const auto wall_start = std::chrono::steady_clock::now();
        const double cpu_start = CpuSeconds();
        auto ids = tokenizer->Encode(text);
        const double cpu = CpuSeconds() - cpu_start;
        const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
        if (!ids.ok()) {
          std::fprintf(stderr, "%s\n", ids.status().ToString().c_str());
          return 1;
        }
        tokens = ids->size();
        encode.wall = std::min(encode.wall, wall);
        encode.cpu = std::min(encode.cpu, cpu);
      }
      std::printf("  encode %s, %zu bytes -> %zu tokens: %.4f s wall, %.4f s CPU (%.1f MB/s, %.0f tokens/s by CPU)\n",
                  name.c_str(), text.size(), tokens, encode.wall, encode.cpu, text.size() / encode.cpu / 1e6,
                  tokens / encode.cpu);
    }
    const double template_cpu_start = CpuSeconds();
    auto chat = rlhf::tokenizer::ChatTemplate::Load(dir);
    const double template_load_cpu = CpuSeconds() - template_cpu_start;
    if (!chat.ok()) {
      std::printf("  chat template: %s\n", chat.status().ToString().c_str());
      continue;
    }
    std::vector<rlhf::tokenizer::ChatMessage> conversation = {{"system", "You are a helpful assistant."}};
    for (int turn = 0; turn < 20; ++turn) {
      conversation.push_back({"user", absl::StrCat("Question number ", turn, ": what is ", turn, " + ", turn, "?")});
      conversation.push_back({"assistant", absl::StrCat("It is ", 2 * turn, ".")});
    }
    conversation.push_back({"user", "Thanks!"});
    Times render;
    size_t bytes = 0;
    for (int run = 0; run < 20; ++run) {
      const auto wall_start = std::chrono::steady_clock::now();
      const double cpu_start = CpuSeconds();
      auto text = (*chat)->RenderPrompt(conversation);
      const double cpu = CpuSeconds() - cpu_start;
      const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
      if (!text.ok()) {
        std::fprintf(stderr, "%s\n", text.status().ToString().c_str());
        return 1;
      }
      bytes = text->size();
      render.wall = std::min(render.wall, wall);
      render.cpu = std::min(render.cpu, cpu);
    }
    std::printf("  chat template: parse and probe %.4f s CPU; render %zu messages (%zu bytes) %.6f s wall, %.6f s CPU\n",
                template_load_cpu, conversation.size(), bytes, render.wall, render.cpu);
  }
  return 0;
}
