#include "common/tokenizer/chat_template.h"

#include <sys/stat.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/tokenizer/jinja.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "common/util/json_errors.h"
#include "nlohmann/json.hpp"

namespace rlhf::tokenizer {
namespace {

using Json = nlohmann::json;

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::StatusOr<Json> ReadJson(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, util::ReadFile(path));
  try {
    return Json::parse(text);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON: ", util::JsonErrorText(e.what())));
  }
}

// A special token of tokenizer_config.json: a string, or an object with "content" (an AddedToken); nullopt for
// null or absent.
absl::StatusOr<std::optional<std::string>> TokenContent(const Json& config, const char* key, const std::string& path) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return std::optional<std::string>((*it)["content"].get<std::string>());
  }
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": ", key, " is a JSON ", it->type_name(), ", expected a string or {\"content\": string}"));
}

absl::StatusOr<ChatTemplate::SpecialTokens> ReadSpecialTokens(const Json& config, const std::string& path) {
  ChatTemplate::SpecialTokens tokens;
  const std::pair<const char*, std::optional<std::string>*> fields[] = {
      {"bos_token", &tokens.bos_token},  {"eos_token", &tokens.eos_token}, {"unk_token", &tokens.unk_token},
      {"sep_token", &tokens.sep_token},  {"pad_token", &tokens.pad_token}, {"cls_token", &tokens.cls_token},
      {"mask_token", &tokens.mask_token}};
  for (const auto& [key, out] : fields) {
    ASSIGN_OR_RETURN(*out, TokenContent(config, key, path));
  }
  if (const auto it = config.find("additional_special_tokens"); it != config.end() && !it->is_null()) {
    if (!it->is_array())
      return absl::InvalidArgumentError(absl::StrCat(path, ": additional_special_tokens is not a list"));
    for (size_t i = 0; i < it->size(); ++i) {
      const Json& token = (*it)[i];
      if (token.is_string()) {
        tokens.additional_special_tokens.push_back(token.get<std::string>());
      } else if (token.is_object() && token.contains("content") && token["content"].is_string()) {
        tokens.additional_special_tokens.push_back(token["content"].get<std::string>());
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": additional_special_tokens[", i, "] is not a string or {\"content\": string}"));
      }
    }
  }
  if (const auto it = config.find("added_tokens_decoder"); it != config.end() && it->is_object()) {
    for (const auto& [id, token] : it->items()) {
      if (token.is_object() && token.contains("special") && token["special"] == true && token.contains("content") &&
          token["content"].is_string()) {
        tokens.special_contents.push_back(token["content"].get<std::string>());
      }
    }
  }
  for (const std::optional<std::string>* token :
       {&tokens.bos_token, &tokens.eos_token, &tokens.unk_token, &tokens.sep_token, &tokens.pad_token,
        &tokens.cls_token, &tokens.mask_token}) {
    if (token->has_value()) tokens.special_contents.push_back(**token);
  }
  for (const std::string& token : tokens.additional_special_tokens) tokens.special_contents.push_back(token);
  return tokens;
}

jinja::Value MessagesValue(absl::Span<const ChatMessage> messages) {
  std::vector<jinja::Value> items;
  items.reserve(messages.size());
  for (const ChatMessage& message : messages) {
    items.push_back(jinja::Value::Dict(
        {{"role", jinja::Value::String(message.role)}, {"content", jinja::Value::String(message.content)}}));
  }
  return jinja::Value::List(std::move(items));
}

// Probe texts for deriving the end-of-turn marker: plain words that no template changes.
constexpr char kProbeSystem[] = "rlhfprobesystem";
constexpr char kProbeUser[] = "rlhfprobeuser";
constexpr char kProbeResponse[] = "rlhfproberesponse";
constexpr char kProbeNextUser[] = "rlhfprobenext";

}  // namespace

ChatTemplate::~ChatTemplate() = default;

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Load(const std::string& model_dir, const Limits& limits) {
  // Every JSON value is type-checked before it is read; an exception here would be a bug, reported as a bad file.
  try {
    return LoadChecked(model_dir, limits);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(model_dir, ": unexpected JSON content: ", util::JsonErrorText(e.what())));
  }
}

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::LoadChecked(const std::string& model_dir,
                                                                        const Limits& limits) {
  const std::string config_path = absl::StrCat(model_dir, "/tokenizer_config.json");
  const std::string jinja_path = absl::StrCat(model_dir, "/chat_template.jinja");
  const std::string json_path = absl::StrCat(model_dir, "/chat_template.json");
  Json config = Json::object();
  if (FileExists(config_path)) {
    ASSIGN_OR_RETURN(config, ReadJson(config_path));
    if (!config.is_object()) return absl::InvalidArgumentError(absl::StrCat(config_path, ": expected a JSON object"));
  }
  ASSIGN_OR_RETURN(SpecialTokens special_tokens, ReadSpecialTokens(config, config_path));

  std::string source;
  std::string name;
  if (FileExists(jinja_path)) {
    ASSIGN_OR_RETURN(source, util::ReadFile(jinja_path));
    name = jinja_path;
  } else {
    Json holder = config;
    std::string holder_path = config_path;
    if (FileExists(json_path)) {
      ASSIGN_OR_RETURN(holder, ReadJson(json_path));
      holder_path = json_path;
      if (!holder.is_object()) return absl::InvalidArgumentError(absl::StrCat(json_path, ": expected a JSON object"));
    }
    const auto it = holder.find("chat_template");
    if (it == holder.end() || it->is_null()) {
      return absl::NotFoundError(absl::StrCat(model_dir,
                                              " has no chat template: looked for chat_template.jinja, "
                                              "chat_template.json and tokenizer_config.json's \"chat_template\""));
    }
    name = absl::StrCat(holder_path, ": chat_template");
    if (it->is_string()) {
      source = it->get<std::string>();
    } else if (it->is_array()) {
      bool found = false;
      for (const Json& entry : *it) {
        if (entry.is_object() && entry.contains("name") && entry["name"] == "default" && entry.contains("template") &&
            entry["template"].is_string()) {
          source = entry["template"].get<std::string>();
          found = true;
        }
      }
      if (!found) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, " is a list of named templates without a \"default\" one"));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(name, " is a JSON ", it->type_name(), ", expected a string"));
    }
  }
  return Create(source, std::move(special_tokens), name, limits);
}

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Create(absl::string_view source,
                                                                   SpecialTokens special_tokens, absl::string_view name,
                                                                   const Limits& limits) {
  std::unique_ptr<ChatTemplate> chat(new ChatTemplate());
  chat->name_ = std::string(name);
  chat->special_tokens_ = std::move(special_tokens);
  chat->limits_ = limits;
  absl::StatusOr<std::unique_ptr<jinja::Template>> parsed = jinja::Template::Parse(source);
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(), absl::StrCat(name, ": ", parsed.status().message()));
  }
  chat->template_ = *std::move(parsed);
  chat->end_of_turn_status_ = chat->DeriveEndOfTurn();
  return chat;
}

absl::StatusOr<std::string> ChatTemplate::Render(absl::Span<const ChatMessage> messages,
                                                 const RenderOptions& options) const {
  std::vector<std::pair<std::string, jinja::Value>> variables = {
      {"messages", MessagesValue(messages)},
      {"tools", jinja::Value::MakeNone()},
      {"documents", jinja::Value::MakeNone()},
      {"add_generation_prompt", jinja::Value::Bool(options.add_generation_prompt)}};
  const std::pair<const char*, const std::optional<std::string>*> tokens[] = {
      {"bos_token", &special_tokens_.bos_token},  {"eos_token", &special_tokens_.eos_token},
      {"unk_token", &special_tokens_.unk_token},  {"sep_token", &special_tokens_.sep_token},
      {"pad_token", &special_tokens_.pad_token},  {"cls_token", &special_tokens_.cls_token},
      {"mask_token", &special_tokens_.mask_token}};
  for (const auto& [key, value] : tokens) {
    if (value->has_value()) variables.emplace_back(key, jinja::Value::String(**value));
  }
  if (!special_tokens_.additional_special_tokens.empty()) {
    std::vector<jinja::Value> list;
    for (const std::string& token : special_tokens_.additional_special_tokens)
      list.push_back(jinja::Value::String(token));
    variables.emplace_back("additional_special_tokens", jinja::Value::List(std::move(list)));
  }
  if (options.enable_thinking.has_value()) {
    variables.emplace_back("enable_thinking", jinja::Value::Bool(*options.enable_thinking));
  }
  jinja::Limits limits;
  limits.max_output_bytes = limits_.max_output_bytes;
  limits.max_steps = limits_.max_steps;
  absl::StatusOr<std::string> text = template_->Render(variables, limits, options.now_unix_seconds);
  if (!text.ok()) return absl::Status(text.status().code(), absl::StrCat(name_, ": ", text.status().message()));
  return text;
}

absl::StatusOr<std::string> ChatTemplate::RenderPrompt(absl::Span<const ChatMessage> messages,
                                                       RenderOptions options) const {
  options.add_generation_prompt = true;
  return Render(messages, options);
}

absl::Status ChatTemplate::DeriveEndOfTurn() {
  // A conversation ending in the assistant's probe reply (A), and the same followed by a user turn (B); some
  // templates insist on a system message first, so that is tried too.
  const std::vector<std::vector<ChatMessage>> starts = {{{"user", kProbeUser}},
                                                        {{"system", kProbeSystem}, {"user", kProbeUser}}};
  absl::Status last_error;
  for (const std::vector<ChatMessage>& start : starts) {
    std::vector<ChatMessage> a = start;
    a.push_back({"assistant", kProbeResponse});
    std::vector<ChatMessage> b = a;
    b.push_back({"user", kProbeNextUser});
    RenderOptions options;
    options.now_unix_seconds = 0;
    absl::StatusOr<std::string> rendered_a = Render(a, options);
    absl::StatusOr<std::string> rendered_b = rendered_a.ok() ? Render(b, options) : rendered_a;
    if (!rendered_b.ok()) {
      last_error = rendered_b.status();
      continue;
    }
    const size_t at_a = rendered_a->rfind(kProbeResponse);
    const size_t at_b = rendered_b->rfind(kProbeResponse);
    if (at_a == std::string::npos || at_b == std::string::npos) {
      last_error = absl::FailedPreconditionError(
          absl::StrCat(name_, ": the template does not write an assistant message's content as it is"));
      continue;
    }
    const std::string after_a = rendered_a->substr(at_a + sizeof(kProbeResponse) - 1);
    const std::string after_b = rendered_b->substr(at_b + sizeof(kProbeResponse) - 1);
    size_t common = 0;
    while (common < after_a.size() && common < after_b.size() && after_a[common] == after_b[common]) ++common;
    std::string marker = after_a.substr(0, common);
    // Cut after the first special token: what follows it (Llama 3's "<|start_header_id|>") begins the next turn.
    size_t best_end = std::string::npos;
    size_t best_start = std::string::npos;
    for (const std::string& special : special_tokens_.special_contents) {
      if (special.empty()) continue;
      const size_t at = marker.find(special);
      if (at == std::string::npos) continue;
      if (at < best_start || (at == best_start && at + special.size() > best_end)) {
        best_start = at;
        best_end = at + special.size();
      }
    }
    if (best_end != std::string::npos) marker.resize(best_end);
    end_of_turn_ = marker;
    turn_tail_ = after_a.substr(marker.size());
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("the end-of-turn marker could not be derived: ", last_error.message()));
}

absl::StatusOr<std::string> ChatTemplate::EndOfTurn() const {
  if (!end_of_turn_status_.ok()) return end_of_turn_status_;
  return end_of_turn_;
}

absl::StatusOr<ChatTemplate::AssistantTurn> ChatTemplate::RenderAssistantTurn(absl::Span<const ChatMessage> messages,
                                                                              absl::string_view response,
                                                                              RenderOptions options) const {
  if (!end_of_turn_status_.ok()) return end_of_turn_status_;
  AssistantTurn turn;
  ASSIGN_OR_RETURN(turn.prompt, RenderPrompt(messages, options));
  std::vector<ChatMessage> with_reply(messages.begin(), messages.end());
  with_reply.push_back({"assistant", std::string(response)});
  options.add_generation_prompt = false;
  ASSIGN_OR_RETURN(const std::string full, Render(with_reply, options));
  if (!absl::StartsWith(full, turn.prompt)) {
    return absl::FailedPreconditionError(
        absl::StrCat(name_,
                     ": the conversation rendered with the reply does not start with the prompt rendered without "
                     "it, so the reply's turn cannot be told apart"));
  }
  const std::string expected_end = end_of_turn_ + turn_tail_;
  if (!absl::EndsWith(full, expected_end) || full.size() - expected_end.size() < turn.prompt.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        name_, ": the rendered reply does not end with the end-of-turn marker the template writes elsewhere"));
  }
  turn.completion = full.substr(turn.prompt.size(), full.size() - turn.prompt.size() - turn_tail_.size());
  return turn;
}

}  // namespace rlhf::tokenizer
