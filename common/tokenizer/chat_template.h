// Chat templates: a conversation of {role, content} messages rendered to the prompt text a chat model expects, as
// Hugging Face transformers' apply_chat_template renders the model's Jinja `chat_template` (see jinja.h for the
// Jinja subset supported; a template using anything else is refused when it is loaded, or when rendering reaches it).
#ifndef RLHF_COMMON_TOKENIZER_CHAT_TEMPLATE_H_
#define RLHF_COMMON_TOKENIZER_CHAT_TEMPLATE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace rlhf::tokenizer {

namespace jinja {
class Template;
}

// One message of a conversation: role "system", "user", "assistant" (or whatever the template knows) and its text.
struct ChatMessage {
  std::string role;
  std::string content;
};

// Bounds on one render of a chat template.
struct ChatTemplateLimits {
  size_t max_output_bytes = size_t{16} << 20;  // of the rendered text and of any string made on the way
  int64_t max_steps = 5'000'000;               // evaluation steps of one render
};

struct ChatRenderOptions {
  bool add_generation_prompt = false;
  std::optional<bool> enable_thinking;      // passed as `enable_thinking` when set (Qwen3's switch)
  std::optional<int64_t> now_unix_seconds;  // the time strftime_now() formats; nullopt: the current time
};

// Renders one model's chat template. Immutable after Create; all methods may be called from many threads at once.
//
// A render sees the variables transformers passes: `messages` (a list of {"role", "content"} dicts),
// `add_generation_prompt`, `tools` and `documents` (none), the tokenizer_config.json special tokens that are set
// (`bos_token`, `eos_token`, `unk_token`, `sep_token`, `pad_token`, `cls_token`, `mask_token` as strings,
// `additional_special_tokens` as a list), and `enable_thinking` when RenderOptions sets it.
//
// Rendering is bounded (ChatTemplateLimits): hostile templates or messages get InvalidArgument, never a crash or a
// hang.
class ChatTemplate {
 public:
  using Limits = ChatTemplateLimits;
  using RenderOptions = ChatRenderOptions;

  // What tokenizer_config.json gives a template: the special-token strings, and every token marked special (used to
  // find the end-of-turn marker).
  struct SpecialTokens {
    std::optional<std::string> bos_token, eos_token, unk_token, sep_token, pad_token, cls_token, mask_token;
    std::vector<std::string> additional_special_tokens;
    std::vector<std::string> special_contents;  // added tokens marked "special"
  };

  // Loads the chat template of a Hugging Face model folder, as transformers finds it: `chat_template.jinja`, else
  // `chat_template.json`'s "chat_template", else tokenizer_config.json's "chat_template" (a string, or a list of
  // {"name", "template"} of which "default" is used); special tokens from tokenizer_config.json when present.
  // NotFound when the folder has no template; InvalidArgument naming the file (and line) when a file is malformed
  // or the template uses something unsupported.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Load(const std::string& model_dir, const Limits& limits = {});

  // From the template's text; `name` prefixes error messages (e.g. "models/qwen3/tokenizer_config.json:
  // chat_template").
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Create(absl::string_view source, SpecialTokens special_tokens,
                                                              absl::string_view name = "chat_template",
                                                              const Limits& limits = {});
  ~ChatTemplate();

  // The template applied to `messages`. InvalidArgument "<name>: line N: ..." when rendering fails, including the
  // template's own raise_exception (e.g. roles that do not alternate).
  absl::StatusOr<std::string> Render(absl::Span<const ChatMessage> messages, const RenderOptions& options = {}) const;

  // Render with add_generation_prompt: the text a model continues with the assistant's reply.
  absl::StatusOr<std::string> RenderPrompt(absl::Span<const ChatMessage> messages, RenderOptions options = {}) const;

  // A reply as the assistant turn the template would contain, to score or train on it in context:
  //   prompt     = RenderPrompt(messages);
  //   completion = what follows `prompt` in Render(messages + {"assistant", response}) up to and including the
  //                end-of-turn marker (Qwen3: "<think>\n\n</think>\n\n" + response + "<|im_end|>"; Llama 3:
  //                response + "<|eot_id|>"), without what the template puts after the turn.
  // FailedPrecondition when the end-of-turn marker could not be derived, or when this conversation's rendering
  // does not have the prompt as its start and the marker after the reply.
  struct AssistantTurn {
    std::string prompt;
    std::string completion;
  };
  absl::StatusOr<AssistantTurn> RenderAssistantTurn(absl::Span<const ChatMessage> messages, absl::string_view response,
                                                    RenderOptions options = {}) const;

  // The end-of-turn marker the template writes after an assistant's content ("<|im_end|>", "<|eot_id|>"). Derived
  // when the template is created by rendering a probe conversation with and without a following user turn: the
  // text they share after the assistant's content, cut after its first special token (when it has one).
  // FailedPrecondition with the reason when the probes could not be rendered.
  absl::StatusOr<std::string> EndOfTurn() const;

  const std::string& name() const { return name_; }

 private:
  ChatTemplate() = default;
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> LoadChecked(const std::string& model_dir, const Limits& limits);
  absl::Status DeriveEndOfTurn();

  std::string name_;
  std::unique_ptr<jinja::Template> template_;
  SpecialTokens special_tokens_;
  Limits limits_;
  absl::Status end_of_turn_status_;
  std::string end_of_turn_;  // e.g. "<|im_end|>"
  std::string turn_tail_;    // what the template writes after the marker when the turn ends the conversation
};

}  // namespace rlhf::tokenizer

#endif  // RLHF_COMMON_TOKENIZER_CHAT_TEMPLATE_H_
