// A tiny random GPT-2 on disk (tests/testing/tiny_model.h: 2 layers, width 32, byte tokenizer) for the fuzz
// targets of the model services, and a way to wait for an engine's callback.
#ifndef RLHF_TESTS_FUZZ_MODEL_SERVICE_FIXTURE_H_
#define RLHF_TESTS_FUZZ_MODEL_SERVICE_FIXTURE_H_

#include <future>
#include <string>

#include "absl/status/statusor.h"
#include "common/util/file_util.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/testing/tiny_model.h"

namespace rlhf::fuzz {

inline constexpr char kTinyChatTemplate[] =
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}";

// The folder of a tiny model written once per process (with a reward head when `reward_head`).
inline const std::string& TinyModelDir(bool reward_head = false) {
  static const std::string* dirs[2] = {nullptr, nullptr};
  const std::string*& dir = dirs[reward_head ? 1 : 0];
  if (dir == nullptr) {
    auto* path = new std::string(FreshScratchDir(reward_head ? "tiny-rm" : "tiny-lm"));
    testing::TinyModelOptions options;
    options.n_positions = 48;
    options.reward_head = reward_head;
    if (absl::Status written = testing::WriteTinyModel(*path, options); !written.ok()) {
      Fail("writing the tiny model", written);
    }
    // A chat template, so that chat-message prompts are rendered and encoded too (a turn ends with a newline).
    if (absl::Status written = util::WriteFileAtomically(*path + "/chat_template.jinja", kTinyChatTemplate);
        !written.ok()) {
      Fail("writing the tiny model's chat template", written);
    }
    dir = path;
  }
  return *dir;
}

// Calls `submit(done)` and waits for `done` to be called with the result.
template <typename Result, typename Submit>
absl::StatusOr<Result> Await(Submit submit) {
  std::promise<absl::StatusOr<Result>> promise;
  std::future<absl::StatusOr<Result>> future = promise.get_future();
  submit([&promise](absl::StatusOr<Result> result) { promise.set_value(std::move(result)); });
  return future.get();
}

}  // namespace rlhf::fuzz

#endif  // RLHF_TESTS_FUZZ_MODEL_SERVICE_FIXTURE_H_
