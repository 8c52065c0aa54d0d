#include "common/serving/prompt_codec.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"

namespace rlhf::serving {
namespace {

std::vector<int64_t> Widen(const std::vector<int32_t>& ids) { return std::vector<int64_t>(ids.begin(), ids.end()); }

absl::Status NoTokenizer(absl::string_view field) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": this model has no tokenizer; send token_ids"));
}

absl::Status NoChatTemplate(const PromptCodec& codec, absl::string_view field) {
  return absl::FailedPreconditionError(
      absl::StrCat(field, ": chat messages need the model's chat template: ", codec.chat_template_status.message()));
}

// The template's refusal of a conversation is the caller's input at fault.
absl::Status Refused(absl::string_view field, const absl::Status& status) {
  const absl::StatusCode code = absl::IsFailedPrecondition(status) ? absl::StatusCode::kFailedPrecondition
                                                                    : absl::StatusCode::kInvalidArgument;
  return absl::Status(code, absl::StrCat(field, ": ", status.message()));
}

}  // namespace

void PromptCodec::DeriveEndOfTurnId() {
  end_of_turn_id.reset();
  if (tokenizer == nullptr || chat_template == nullptr) return;
  absl::StatusOr<std::string> marker = chat_template->EndOfTurn();
  if (!marker.ok()) return;
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(*marker);
  if (ids.ok() && ids->size() == 1) end_of_turn_id = ids->front();
}

absl::StatusOr<std::vector<tokenizer::ChatMessage>> ChatMessagesFromProto(const v1::ChatMessages& messages,
                                                                          absl::string_view field) {
  if (messages.messages().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".messages: at least one message is required"));
  }
  std::vector<tokenizer::ChatMessage> out;
  out.reserve(static_cast<size_t>(messages.messages_size()));
  for (int i = 0; i < messages.messages_size(); ++i) {
    const v1::ChatMessage& m = messages.messages(i);
    if (m.role().empty()) return absl::InvalidArgumentError(absl::StrCat(field, ".messages[", i, "].role: required"));
    out.push_back({m.role(), m.content()});
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> EncodePrompt(const PromptCodec& codec, const v1::TextOrTokens& prompt,
                                                  absl::string_view field) {
  switch (prompt.content_case()) {
    case v1::TextOrTokens::kText: {
      if (codec.tokenizer == nullptr) return NoTokenizer(absl::StrCat(field, ".text"));
      ASSIGN_OR_RETURN(std::vector<int32_t> ids, codec.tokenizer->EncodeOrdinary(prompt.text()));
      return Widen(ids);
    }
    case v1::TextOrTokens::kTokenIds:
      return std::vector<int64_t>(prompt.token_ids().ids().begin(), prompt.token_ids().ids().end());
    case v1::TextOrTokens::kMessages: {
      const std::string where = absl::StrCat(field, ".messages");
      if (codec.tokenizer == nullptr) return NoTokenizer(where);
      if (codec.chat_template == nullptr) return NoChatTemplate(codec, where);
      ASSIGN_OR_RETURN(std::vector<tokenizer::ChatMessage> messages, ChatMessagesFromProto(prompt.messages(), field));
      absl::StatusOr<std::string> text = codec.chat_template->RenderPrompt(messages);
      if (!text.ok()) return Refused(where, text.status());
      ASSIGN_OR_RETURN(std::vector<int32_t> ids, codec.tokenizer->Encode(*text));
      return Widen(ids);
    }
    case v1::TextOrTokens::CONTENT_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat(field, " has neither text, token_ids nor messages"));
}

absl::StatusOr<std::vector<int64_t>> EncodeResponse(const PromptCodec& codec, const v1::TextOrTokens& prompt,
                                                    const v1::TextOrTokens& response, std::optional<int64_t> eos,
                                                    absl::string_view field) {
  switch (response.content_case()) {
    case v1::TextOrTokens::kTokenIds:
      return std::vector<int64_t>(response.token_ids().ids().begin(), response.token_ids().ids().end());
    case v1::TextOrTokens::kText:
      break;
    case v1::TextOrTokens::kMessages:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".messages: a response is text or token_ids (the conversation goes in the prompt)"));
    case v1::TextOrTokens::CONTENT_NOT_SET:
      return absl::InvalidArgumentError(absl::StrCat(field, " has neither text nor token_ids"));
  }
  const std::string where = absl::StrCat(field, ".text");
  if (codec.tokenizer == nullptr) return NoTokenizer(where);
  if (prompt.content_case() != v1::TextOrTokens::kMessages) {
    if (!eos.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": this model has no EOS token to end a text response; send token_ids"));
    }
    ASSIGN_OR_RETURN(std::vector<int32_t> ids, codec.tokenizer->EncodeOrdinary(response.text()));
    std::vector<int64_t> out = Widen(ids);
    out.push_back(*eos);  // a text response is a finished one, as a sampled response that stopped is
    return out;
  }
  if (codec.chat_template == nullptr) return NoChatTemplate(codec, where);
  ASSIGN_OR_RETURN(std::vector<tokenizer::ChatMessage> messages, ChatMessagesFromProto(prompt.messages(), field));
  absl::StatusOr<tokenizer::ChatTemplate::AssistantTurn> turn =
      codec.chat_template->RenderAssistantTurn(messages, response.text());
  if (!turn.ok()) return Refused(where, turn.status());
  ASSIGN_OR_RETURN(std::vector<int32_t> ids, codec.tokenizer->Encode(turn->completion));
  return Widen(ids);
}

}  // namespace rlhf::serving
