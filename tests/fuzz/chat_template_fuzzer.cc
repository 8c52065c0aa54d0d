// Input: the text of a model's chat template (a Jinja template from tokenizer_config.json, chat_template.jinja or
// chat_template.json). ChatTemplate::Create must accept it or refuse it with InvalidArgument; an accepted template
// renders a fixed set of conversations or refuses them with InvalidArgument or FailedPrecondition, within its
// limits (no crash, no hang, no output beyond max_output_bytes), and EndOfTurn and RenderAssistantTurn answer with a
// documented code.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/tokenizer/chat_template.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using rlhf::fuzz::Expect;
using rlhf::fuzz::ExpectOkOr;
using rlhf::tokenizer::ChatMessage;
using rlhf::tokenizer::ChatTemplate;
using Code = absl::StatusCode;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(reinterpret_cast<const char*>(data), size);
  ChatTemplate::SpecialTokens special;
  special.bos_token = "<|bos|>";
  special.eos_token = "<|eos|>";
  special.special_contents = {"<|bos|>", "<|eos|>", "<|im_end|>", "<|eot_id|>"};
  ChatTemplate::Limits limits;
  limits.max_output_bytes = size_t{1} << 20;
  limits.max_steps = 200'000;
  auto chat = ChatTemplate::Create(source, special, "fuzz/chat_template", limits);
  if (!chat.ok()) {
    ExpectOkOr(chat.status(), "ChatTemplate::Create", {Code::kInvalidArgument});
    return 0;
  }
  const std::vector<std::vector<ChatMessage>> conversations = {
      {{"user", "Hello!"}},
      {{"system", "Be brief."}, {"user", "2+2?"}, {"assistant", "4"}, {"user", "3+3?"}},
      {{"assistant", ""}},
  };
  for (const auto& messages : conversations) {
    for (const bool generation_prompt : {false, true}) {
      rlhf::tokenizer::ChatRenderOptions options;
      options.add_generation_prompt = generation_prompt;
      options.now_unix_seconds = 0;
      auto text = (*chat)->Render(messages, options);
      if (text.ok()) {
        Expect(text->size() <= limits.max_output_bytes, "a render longer than max_output_bytes");
      } else {
        ExpectOkOr(text.status(), "Render", {Code::kInvalidArgument, Code::kFailedPrecondition});
      }
    }
    auto turn = (*chat)->RenderAssistantTurn(messages, "reply");
    if (!turn.ok()) ExpectOkOr(turn.status(), "RenderAssistantTurn", {Code::kInvalidArgument, Code::kFailedPrecondition});
  }
  auto end = (*chat)->EndOfTurn();
  if (!end.ok()) ExpectOkOr(end.status(), "EndOfTurn", {Code::kFailedPrecondition});
  return 0;
}
