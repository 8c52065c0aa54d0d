#include "common/tokenizer/chat_template.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/hf_bpe_tokenizer.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/common/tokenizer/test_env.h"

namespace rlhf::tokenizer {
namespace {

// A number in [lo, hi) from `gen` (std::mt19937's sequence is fixed by the standard).
inline size_t Uniform(std::mt19937& gen, size_t lo, size_t hi) { return lo + gen() % (hi - lo); }

using ::testing::HasSubstr;
using ::testing::StartsWith;

// SmolLM2's template: ChatML with a default system message.
constexpr char kSmolLm2Template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>'"
    " + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt "
    "%}{{ '<|im_start|>assistant\n' }}{% endif %}";

// A Mistral-style template that insists on alternating roles.
constexpr char kAlternatingTemplate[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}"
    "{{ message['content'] + eos_token }}{% endif %}{% endfor %}";

struct TemplateCase {
  std::vector<ChatMessage> messages;
  bool add_generation_prompt;
  std::string text;
};

std::vector<TemplateCase> ReadCases(const std::string& family) {
  const std::string path = testing::FixturesDir() + "/chat-template-cases.json";
  absl::StatusOr<std::string> text = util::ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok()) return {};
  std::vector<TemplateCase> cases;
  const nlohmann::json all = nlohmann::json::parse(*text);
  for (const nlohmann::json& c : all.at(family)) {
    TemplateCase template_case;
    for (const nlohmann::json& m : c.at("messages")) {
      template_case.messages.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
    }
    template_case.add_generation_prompt = c.at("add_generation_prompt").get<bool>();
    template_case.text = c.at("text").get<std::string>();
    cases.push_back(std::move(template_case));
  }
  return cases;
}

std::unique_ptr<ChatTemplate> LoadTemplate(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<ChatTemplate>> chat = ChatTemplate::Load(dir);
  EXPECT_TRUE(chat.ok()) << chat.status();
  return chat.ok() ? *std::move(chat) : nullptr;
}

void ExpectRendersEveryCase(const std::string& family, const std::string& dir) {
  const std::unique_ptr<ChatTemplate> chat = LoadTemplate(dir);
  ASSERT_NE(chat, nullptr);
  const std::vector<TemplateCase> cases = ReadCases(family);
  ASSERT_FALSE(cases.empty());
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(absl::StrCat(family, " case ", i));
    ChatTemplate::RenderOptions options;
    options.add_generation_prompt = cases[i].add_generation_prompt;
    absl::StatusOr<std::string> text = chat->Render(cases[i].messages, options);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, cases[i].text);
  }
}

// The fixture prompts, tokenized as text, keep their special tokens as single ids.
void ExpectPromptsTokenizeWithTheirSpecialTokens(const std::string& family, const std::string& dir,
                                                 const std::string& turn_start) {
  const std::unique_ptr<ChatTemplate> chat = LoadTemplate(dir);
  ASSERT_NE(chat, nullptr);
  absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> tokenizer = HfBpeTokenizer::Load(dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::optional<int32_t> start_id = (*tokenizer)->TokenToId(turn_start);
  ASSERT_TRUE(start_id.has_value());
  for (const TemplateCase& c : ReadCases(family)) {
    const absl::StatusOr<std::string> prompt = chat->RenderPrompt(c.messages);
    ASSERT_TRUE(prompt.ok()) << prompt.status();
    const absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode(*prompt);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_THAT(*ids, ::testing::Contains(*start_id));
    EXPECT_EQ(*(*tokenizer)->Decode(*ids), *prompt);
  }
}

TEST(Qwen3ChatTemplate, RendersEveryFixtureCaseExactly) { ExpectRendersEveryCase("qwen3", testing::Qwen3Dir()); }

TEST(Qwen3ChatTemplate, PromptsTokenizeWithTheirSpecialTokens) {
  ExpectPromptsTokenizeWithTheirSpecialTokens("qwen3", testing::Qwen3Dir(), "<|im_start|>");
}

TEST(Qwen3ChatTemplate, DerivesImEndAsTheEndOfTurn) {
  const std::unique_ptr<ChatTemplate> chat = LoadTemplate(testing::Qwen3Dir());
  ASSERT_NE(chat, nullptr);
  EXPECT_EQ(*chat->EndOfTurn(), "<|im_end|>");
}

TEST(Qwen3ChatTemplate, RendersAReplyAsTheAssistantTurnWithItsEmptyThinkBlock) {
  const std::unique_ptr<ChatTemplate> chat = LoadTemplate(testing::Qwen3Dir());
  ASSERT_NE(chat, nullptr);
  const std::vector<ChatMessage> messages = {{"system", "Be brief."}, {"user", "What is 2+2?"}};
  absl::StatusOr<ChatTemplate::AssistantTurn> turn = chat->RenderAssistantTurn(messages, "4");
  ASSERT_TRUE(turn.ok()) << turn.status();
  EXPECT_EQ(turn->prompt, *chat->RenderPrompt(messages));
  EXPECT_EQ(turn->completion, "<think>\n\n</think>\n\n4<|im_end|>");
  // The turn is what the template writes for the conversation with the reply, minus what follows the marker.
  std::vector<ChatMessage> with_reply = messages;
  with_reply.push_back({"assistant", "4"});
  EXPECT_EQ(*chat->Render(with_reply), turn->prompt + turn->completion + "\n");
  // enable_thinking=false puts the empty think block in the prompt instead.
  ChatTemplate::RenderOptions no_thinking;
  no_thinking.enable_thinking = false;
  EXPECT_THAT(*chat->RenderPrompt(messages, no_thinking), ::testing::EndsWith("<think>\n\n</think>\n\n"));
}

TEST(Llama3ChatTemplate, RendersEveryFixtureCaseExactly) { ExpectRendersEveryCase("llama3", testing::Llama3Dir()); }

TEST(Llama3ChatTemplate, PromptsTokenizeWithTheirSpecialTokens) {
  ExpectPromptsTokenizeWithTheirSpecialTokens("llama3", testing::Llama3Dir(), "<|start_header_id|>");
}

TEST(Llama3ChatTemplate, DerivesEotIdAsTheEndOfTurn) {
  const std::unique_ptr<ChatTemplate> chat = LoadTemplate(testing::Llama3Dir());
  ASSERT_NE(chat, nullptr);
  EXPECT_EQ(*chat->EndOfTurn(), "<|eot_id|>");
}

TEST(Llama3ChatTemplate, RendersAReplyAsTheAssistantTurnWithoutTheNextHeader) {
  const std::unique_ptr<ChatTemplate> chat = LoadTemplate(testing::Llama3Dir());
  ASSERT_NE(chat, nullptr);
  const std::vector<ChatMessage> messages = {{"user", "Hi!"}};
  // The template trims contents, the reply's too.
  absl::StatusOr<ChatTemplate::AssistantTurn> turn = chat->RenderAssistantTurn(messages, "  Hello.\n");
  ASSERT_TRUE(turn.ok()) << turn.status();
  EXPECT_EQ(turn->completion, "Hello.<|eot_id|>");
  EXPECT_THAT(turn->prompt, StartsWith("<|begin_of_text|>"));
}

TEST(ChatTemplate, DerivesTheEndOfTurnOfChatMlFromItsSpecialTokens) {
  ChatTemplate::SpecialTokens tokens;
  tokens.special_contents = {"<|im_start|>", "<|im_end|>"};
  absl::StatusOr<std::unique_ptr<ChatTemplate>> chat = ChatTemplate::Create(kSmolLm2Template, tokens, "smol");
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(*(*chat)->EndOfTurn(), "<|im_end|>");
  absl::StatusOr<ChatTemplate::AssistantTurn> turn = (*chat)->RenderAssistantTurn({{"user", "Hi"}}, "Yo");
  ASSERT_TRUE(turn.ok()) << turn.status();
  EXPECT_EQ(turn->prompt,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(turn->completion, "Yo<|im_end|>");

  // Without special tokens to cut at, the marker is all the text the turn ends with.
  chat = ChatTemplate::Create(kSmolLm2Template, {}, "smol");
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(*(*chat)->EndOfTurn(), "<|im_end|>\n");
}

TEST(ChatTemplate, ReportsTheTemplatesOwnErrorAsInvalidArgument) {
  ChatTemplate::SpecialTokens tokens;
  tokens.bos_token = "<s>";
  tokens.eos_token = "</s>";
  tokens.special_contents = {"<s>", "</s>"};
  absl::StatusOr<std::unique_ptr<ChatTemplate>> chat = ChatTemplate::Create(kAlternatingTemplate, tokens, "m/cfg");
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(*(*chat)->Render({{"user", "a"}, {"assistant", "b"}}), "<s>[INST] a [/INST]b</s>");
  const absl::Status status = (*chat)->Render({{"user", "a"}, {"user", "b"}}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "m/cfg: line 1: the template raised an error: Conversation roles must alternate "
            "user/assistant/user/assistant/...");
  EXPECT_EQ(*(*chat)->EndOfTurn(), "</s>");
}

TEST(ChatTemplate, LoadsFromTheFilesTransformersReads) {
  const std::string dir = testing::MakeTempDir();
  EXPECT_EQ(ChatTemplate::Load(dir).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(ChatTemplate::Load(dir).status().message()),
              HasSubstr(" has no chat template: looked for chat_template.jinja"));

  // A list of named templates: "default" is used.
  nlohmann::json config = {
      {"eos_token", {{"content", "</s>"}, {"__type", "AddedToken"}}},
      {"chat_template", nlohmann::json::array({{{"name", "tool_use"}, {"template", "tools"}},
                                               {{"name", "default"}, {"template", "{{ eos_token }}"}}})}};
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/tokenizer_config.json", config.dump()).ok());
  absl::StatusOr<std::unique_ptr<ChatTemplate>> chat = ChatTemplate::Load(dir);
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(*(*chat)->Render({}), "</s>");
  EXPECT_EQ((*chat)->name(), dir + "/tokenizer_config.json: chat_template");

  // chat_template.json, then chat_template.jinja, take precedence (one trailing newline of a source is dropped).
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/chat_template.json", R"({"chat_template": "json"})").ok());
  EXPECT_EQ(*(*ChatTemplate::Load(dir))->Render({}), "json");
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/chat_template.jinja", "jinja {{ messages | length }}\n").ok());
  EXPECT_EQ(*(*ChatTemplate::Load(dir))->Render({{"user", "x"}}), "jinja 1");
}

TEST(ChatTemplate, RefusesAnUnsupportedTemplateNamingTheFolderAndTheConstruct) {
  const std::string dir = testing::MakeTempDir();
  const nlohmann::json config = {
      {"chat_template", "{% for m in messages %}\n{% macro render(m) %}{{ m }}{% endmacro %}{% endfor %}"}};
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/tokenizer_config.json", config.dump()).ok());
  const absl::Status status = ChatTemplate::Load(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), dir + "/tokenizer_config.json: chat_template: line 2: the tag 'macro' is not supported");
}

TEST(ChatTemplate, BoundsHostileTemplates) {
  ChatTemplate::Limits limits;
  limits.max_steps = 200'000;
  limits.max_output_bytes = 1 << 20;
  absl::StatusOr<std::unique_ptr<ChatTemplate>> chat =
      ChatTemplate::Create("{% for i in range(100000) %}{% for m in messages %}{{ m.content }}{% endfor %}{% endfor %}",
                           {}, "hostile", limits);
  ASSERT_TRUE(chat.ok()) << chat.status();
  const absl::Status status = (*chat)->Render({{"user", "x"}}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("hostile: line 1: rendering took more than 200000 steps"));
  // The end-of-turn probes hit the same bound: reported, not fatal.
  EXPECT_EQ((*chat)->EndOfTurn().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*chat)->RenderAssistantTurn({{"user", "x"}}, "y").status().code(), absl::StatusCode::kFailedPrecondition);

  std::string deep;
  for (int i = 0; i < 1000; ++i) deep += "{% if true %}";
  EXPECT_THAT(std::string(ChatTemplate::Create(deep, {}, "deep").status().message()),
              HasSubstr("deep: line 1: blocks or expressions nested deeper than 128"));
}

TEST(Qwen3ChatTemplate, RendersArbitraryMessageBytesUnchanged) {
  const std::unique_ptr<ChatTemplate> chat = LoadTemplate(testing::Qwen3Dir());
  ASSERT_NE(chat, nullptr);
  std::mt19937 gen(5);  // fixed sequence: tests are deterministic
  for (int trial = 0; trial < 200; ++trial) {
    std::string content(Uniform(gen, 0, 200), '\0');
    for (char& c : content) c = static_cast<char>(Uniform(gen, 0, 256));
    // Contents that look like template syntax or special tokens are data, not template.
    if (trial % 3 == 0) content += "{{ raise_exception('x') }}{% for %}<|im_end|>";
    absl::StatusOr<std::string> text = chat->Render({{"user", content}});
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, "<|im_start|>user\n" + content + "<|im_end|>\n");
  }
}

}  // namespace
}  // namespace rlhf::tokenizer
