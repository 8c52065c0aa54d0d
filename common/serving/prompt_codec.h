// How the model services turn a TextOrTokens into token ids: text with the model's tokenizer, token ids as given,
// and chat messages with the model's chat template. LibTorch-free, shared by the generation and reward services
// (and anything else that takes prompts from a request).
#ifndef RLHF_COMMON_SERVING_PROMPT_CODEC_H_
#define RLHF_COMMON_SERVING_PROMPT_CODEC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tokenizer/chat_template.h"
#include "common/tokenizer/tokenizer.h"
#include "rlhf/v1/common.pb.h"

namespace rlhf::serving {

// What a served model has to encode requests with. Pointers are borrowed (the store owns them) and may be null.
struct PromptCodec {
  const tokenizer::Tokenizer* tokenizer = nullptr;
  const tokenizer::ChatTemplate* chat_template = nullptr;
  // Why chat_template is null: the folder has none, or its template cannot be rendered (the loader's message).
  absl::Status chat_template_status = absl::NotFoundError("the model folder has no chat template");
  // The model's end-of-turn token (e.g. <|im_end|>, <|eot_id|>) when the template has one that is a single token.
  std::optional<int64_t> end_of_turn_id;

  // Fills end_of_turn_id from the template and the tokenizer (when both are present).
  void DeriveEndOfTurnId();
};

// The chat messages of a request's TextOrTokens `field` (e.g. "prompts[0]") as the template takes them.
// InvalidArgument naming the field ("prompts[0].messages[1].role: required") when there are none or a role is empty.
absl::StatusOr<std::vector<tokenizer::ChatMessage>> ChatMessagesFromProto(const v1::ChatMessages& messages,
                                                                          absl::string_view field);

// A prompt's ids. Text is encoded with EncodeOrdinary (special-token strings in it are ordinary text); token ids are
// used as given; messages are rendered with the chat template and its generation prompt (transformers'
// apply_chat_template(add_generation_prompt=True)) and encoded with Encode, so that the template's special tokens
// (and, as in transformers, any in the messages) become their ids. Errors name `field` ("prompts[2]"):
// InvalidArgument for text or messages without a tokenizer, a message without a role, an empty content case, or a
// template that refuses the conversation (e.g. roles that do not alternate); FailedPrecondition for messages to a
// model without a usable chat template.
absl::StatusOr<std::vector<int64_t>> EncodePrompt(const PromptCodec& codec, const v1::TextOrTokens& prompt,
                                                  absl::string_view field);

// A finished response to `prompt`, as a reward model scores it. Token ids are used as given. Text after a text or
// token-ids prompt is encoded with EncodeOrdinary and ends with `eos` (InvalidArgument when the model has none);
// text after chat messages is the assistant turn the template would contain, its end-of-turn marker included
// (ChatTemplate::RenderAssistantTurn), encoded with Encode. Messages are not a response (InvalidArgument).
absl::StatusOr<std::vector<int64_t>> EncodeResponse(const PromptCodec& codec, const v1::TextOrTokens& prompt,
                                                    const v1::TextOrTokens& response, std::optional<int64_t> eos,
                                                    absl::string_view field);

}  // namespace rlhf::serving

#endif  // RLHF_COMMON_SERVING_PROMPT_CODEC_H_
