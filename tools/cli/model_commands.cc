#include "tools/cli/model_commands.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cstdio>
#include <random>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/model/causal_lm.h"
#include "common/model/sampler.h"
#include "common/model/threads.h"
#include "common/tokenizer/byte_tokenizer.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"

ABSL_FLAG(std::string, model, "",
          "info/tokenize/generate/score: model folder (config.json, model.safetensors, tokenizer)");
ABSL_FLAG(std::string, out, "", "init-model, init-run-models: folder to write the new model(s) to");
ABSL_FLAG(std::string, model_type, "gpt2", "init-model: gpt2, llama, qwen2, qwen3 or mistral");
ABSL_FLAG(int64_t, n_layer, 2, "init-model: transformer blocks");
ABSL_FLAG(int64_t, n_embd, 128, "init-model: width (hidden_size)");
ABSL_FLAG(int64_t, n_head, 4, "init-model: attention heads");
ABSL_FLAG(int64_t, num_key_value_heads, 0,
          "init-model (Llama family): key/value heads of grouped-query attention; 0 means --n_head");
ABSL_FLAG(int64_t, head_dim, 0, "init-model (Llama family): width of a head; 0 means n_embd / n_head");
ABSL_FLAG(int64_t, intermediate_size, 0,
          "init-model: MLP width; 0 means the family's default (GPT-2 4 x n_embd, Llama 8/3 x n_embd)");
ABSL_FLAG(int64_t, n_positions, 256, "init-model: longest sequence (prompt + response) in tokens");
ABSL_FLAG(std::string, tokenizer, "byte",
          "init-model: byte (258 ids), gpt2 (50257 ids, from --gpt2_vocab_dir), or a folder whose tokenizer files "
          "(tokenizer.json, tokenizer_config.json with its chat template) the model takes, e.g. data/qwen3");
ABSL_FLAG(std::string, gpt2_vocab_dir, "data/gpt2", "init-model: folder with GPT-2's encoder.json and vocab.bpe");
ABSL_FLAG(bool, reward_head, false,
          "init-model: a reward model (*ForSequenceClassification): a scalar head initialised N(0, 0.02) as "
          "transformers does");
ABSL_FLAG(uint64_t, seed, 0, "init-model: initialisation seed; generate: sampling seed");
ABSL_FLAG(std::string, text, "", "tokenize: text to encode");
ABSL_FLAG(std::string, prompt, "", "generate/score: prompt text");
ABSL_FLAG(std::string, response, "", "score: response text");
ABSL_FLAG(int, num_samples, 1, "generate: samples of the prompt");
ABSL_FLAG(int, max_new_tokens, 32, "generate: tokens to sample at most");
ABSL_FLAG(double, temperature, 1.0, "generate: softmax temperature; 0 is greedy");
ABSL_FLAG(int, top_k, 0, "generate: keep the k most likely tokens (0 = all)");
ABSL_FLAG(double, top_p, 1.0, "generate: nucleus probability mass (1 = all)");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads (0 = LibTorch's default)");

namespace rlhf::cli {
namespace {

int Fail(const char* command, const absl::Status& status) {
  std::fprintf(stderr, "rlhf %s: %s\n", command, status.ToString().c_str());
  return 1;
}

struct LoadedModel {
  std::unique_ptr<model::CausalLm> model;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
};

absl::StatusOr<LoadedModel> Load(bool need_tokenizer) {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) return absl::InvalidArgumentError("--model is required");
  if (const int threads = absl::GetFlag(FLAGS_threads); threads > 0) RETURN_IF_ERROR(model::SetIntraOpThreads(threads));
  LoadedModel loaded;
  ASSIGN_OR_RETURN(loaded.model, model::LoadModel(dir));
  auto tokenizer = tokenizer::LoadTokenizer(dir);
  if (tokenizer.ok()) {
    loaded.tokenizer = *std::move(tokenizer);
  } else if (need_tokenizer || tokenizer.status().code() != absl::StatusCode::kNotFound) {
    return tokenizer.status();
  }
  return loaded;
}

std::string Ids(const std::vector<int32_t>& ids) { return absl::StrJoin(ids, " "); }

}  // namespace

absl::Status InitModel(const InitModelOptions& options) {
  if (options.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  RETURN_IF_ERROR(util::MakeDirectories(options.out_dir));
  ASSIGN_OR_RETURN(model::ModelConfig config, model::ModelConfig::ForModelType(options.model_type));
  config.SetShape(options.n_layer, options.n_embd, options.n_head, options.num_key_value_heads, options.head_dim,
                  options.intermediate_size);
  config.max_position_embeddings = options.n_positions;
  if (options.tokenizer == "byte") {
    ASSIGN_OR_RETURN(auto tokenizer, tokenizer::ByteTokenizer::Create());
    RETURN_IF_ERROR(tokenizer->Save(options.out_dir + "/tokenizer.json"));
    config.vocab_size = tokenizer->VocabSize();
    config.eos_token_ids = {*tokenizer->EosId()};
    config.bos_token_id = *tokenizer->EosId();
    config.pad_token_id = *tokenizer->PadId();
  } else if (options.tokenizer == "gpt2") {
    for (const char* name : {"encoder.json", "vocab.bpe"}) {
      ASSIGN_OR_RETURN(std::string contents, util::ReadFile(absl::StrCat(options.gpt2_vocab_dir, "/", name)));
      RETURN_IF_ERROR(util::WriteFileAtomically(absl::StrCat(options.out_dir, "/", name), contents));
    }
    config.vocab_size = 50257;
    config.eos_token_ids = {50256};
    config.bos_token_id = 50256;
  } else {
    // A model or tokenizer folder (Hugging Face tokenizer.json + tokenizer_config.json, or GPT-2's files): its
    // tokenizer and chat template come along, and its special tokens become the model's.
    auto tokenizer = tokenizer::LoadTokenizer(options.tokenizer);
    if (!tokenizer.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--tokenizer=", options.tokenizer,
                                                     " is not byte, gpt2 or a folder with a tokenizer: ",
                                                     tokenizer.status().message()));
    }
    RETURN_IF_ERROR(tokenizer::CopyTokenizerFiles(options.tokenizer, options.out_dir));
    config.vocab_size = (*tokenizer)->VocabSize();
    config.eos_token_ids.clear();
    if ((*tokenizer)->EosId()) config.eos_token_ids = {*(*tokenizer)->EosId()};
    if ((*tokenizer)->BosId()) config.bos_token_id = *(*tokenizer)->BosId();
    if ((*tokenizer)->PadId()) config.pad_token_id = *(*tokenizer)->PadId();
  }
  if (options.reward_head) config.architectures = {config.SequenceClassifierArchitecture()};
  RETURN_IF_ERROR(config.Validate());
  model::ModelOptions model_options;
  model_options.init_seed = options.seed;
  model_options.reward_head = options.reward_head;
  ASSIGN_OR_RETURN(auto model, model::CreateModel(config, model_options));
  if (options.reward_head) {
    // As transformers initialises a sequence classifier's `score` (N(0, 0.02)), so that a random reward model
    // already tells texts apart (the trainer starts its own reward models from a zero head instead).
    std::mt19937_64 rng(options.seed);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    at::Tensor weight = model->StateDict().at("score.weight");
    float* data = weight.data_ptr<float>();
    for (int64_t i = 0; i < weight.numel(); ++i) data[i] = normal(rng);
  }
  return model->Save(options.out_dir);
}

int RunInitModel() {
  InitModelOptions options;
  options.out_dir = absl::GetFlag(FLAGS_out);
  options.model_type = absl::GetFlag(FLAGS_model_type);
  options.n_layer = absl::GetFlag(FLAGS_n_layer);
  options.n_embd = absl::GetFlag(FLAGS_n_embd);
  options.n_head = absl::GetFlag(FLAGS_n_head);
  options.num_key_value_heads = absl::GetFlag(FLAGS_num_key_value_heads);
  options.head_dim = absl::GetFlag(FLAGS_head_dim);
  options.intermediate_size = absl::GetFlag(FLAGS_intermediate_size);
  options.n_positions = absl::GetFlag(FLAGS_n_positions);
  options.tokenizer = absl::GetFlag(FLAGS_tokenizer);
  options.gpt2_vocab_dir = absl::GetFlag(FLAGS_gpt2_vocab_dir);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.reward_head = absl::GetFlag(FLAGS_reward_head);
  if (absl::Status status = InitModel(options); !status.ok()) return Fail("init-model", status);
  std::printf("wrote a random %lldx%lld %s (%s tokenizer) to %s\n", static_cast<long long>(options.n_layer),
              static_cast<long long>(options.n_embd), options.model_type.c_str(), options.tokenizer.c_str(),
              options.out_dir.c_str());
  return 0;
}

int RunInfo() {
  auto loaded = Load(/*need_tokenizer=*/false);
  if (!loaded.ok()) return Fail("info", loaded.status());
  const model::ModelConfig& c = loaded->model->config();
  std::printf("model        %s\n", absl::GetFlag(FLAGS_model).c_str());
  std::printf("architecture %s\n", absl::StrJoin(c.architectures, ",").c_str());
  std::printf("model_type   %s (%s family)\n", c.model_type.c_str(),
              std::string(model::ModelFamilyName(c.family())).c_str());
  std::printf("layers       %lld\nhidden_size  %lld\nheads        %lld (key/value %lld, head_dim %lld)\n"
              "intermediate %lld\npositions    %lld\nvocab_size   %lld\n",
              static_cast<long long>(c.num_hidden_layers), static_cast<long long>(c.hidden_size),
              static_cast<long long>(c.num_attention_heads), static_cast<long long>(c.num_key_value_heads),
              static_cast<long long>(c.head_dim), static_cast<long long>(c.intermediate_size),
              static_cast<long long>(c.max_position_embeddings), static_cast<long long>(c.vocab_size));
  if (c.family() == model::ModelFamily::kLlama) {
    std::printf("rope         theta %g%s\n", c.rope_theta, c.rope_scaling.has_value() ? ", llama3 scaling" : "");
    std::printf("features     %s%s%s%s\n", c.tie_word_embeddings ? "tied head" : "untied head",
                c.attention_bias ? ", q/k/v biases" : "", c.qk_norm ? ", q/k norm" : "",
                c.num_key_value_heads < c.num_attention_heads ? ", grouped-query attention" : "");
  }
  std::printf("stored as    %s\n", c.torch_dtype.c_str());
  if (!c.eos_token_ids.empty()) std::printf("eos ids      %s\n", absl::StrJoin(c.eos_token_ids, " ").c_str());
  std::printf("parameters   %lld\n", static_cast<long long>(loaded->model->NumParameters()));
  std::printf("heads        lm%s%s\n", loaded->model->has_reward_head() ? ", reward" : "",
              loaded->model->has_value_head() ? ", value" : "");
  if (loaded->tokenizer) {
    std::printf("tokenizer    %s (%d ids)\n", loaded->tokenizer->Kind().c_str(), loaded->tokenizer->VocabSize());
  } else {
    std::printf("tokenizer    none (token ids only)\n");
  }
  return 0;
}

int RunTokenize() {
  auto loaded = Load(/*need_tokenizer=*/true);
  if (!loaded.ok()) return Fail("tokenize", loaded.status());
  auto ids = loaded->tokenizer->Encode(absl::GetFlag(FLAGS_text));
  if (!ids.ok()) return Fail("tokenize", ids.status());
  std::printf("%zu tokens: %s\n", ids->size(), Ids(*ids).c_str());
  for (int32_t id : *ids) {
    auto piece = loaded->tokenizer->Decode({id});
    std::printf("  %6d  \"%s\"\n", id, piece.ok() ? tokenizer::ReplaceInvalidUtf8(*piece).c_str() : "?");
  }
  return 0;
}

int RunGenerate() {
  auto loaded = Load(/*need_tokenizer=*/true);
  if (!loaded.ok()) return Fail("generate", loaded.status());
  auto prompt_ids = loaded->tokenizer->EncodeOrdinary(absl::GetFlag(FLAGS_prompt));
  if (!prompt_ids.ok()) return Fail("generate", prompt_ids.status());
  if (prompt_ids->empty()) return Fail("generate", absl::InvalidArgumentError("--prompt is empty"));
  model::SamplingOptions options;
  options.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  options.temperature = absl::GetFlag(FLAGS_temperature);
  options.top_k = absl::GetFlag(FLAGS_top_k);
  options.top_p = absl::GetFlag(FLAGS_top_p);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.eos_token_ids = loaded->model->config().eos_token_ids;
  if (auto eos = loaded->tokenizer->EosId()) options.eos_token_ids.push_back(*eos);
  std::vector<std::vector<int64_t>> prompts(static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_num_samples))),
                                            std::vector<int64_t>(prompt_ids->begin(), prompt_ids->end()));
  auto sampler = model::Sampler::Create(loaded->model.get());
  if (!sampler.ok()) return Fail("generate", sampler.status());
  auto samples = (*sampler)->Generate(prompts, options);
  if (!samples.ok()) return Fail("generate", samples.status());
  for (size_t i = 0; i < samples->size(); ++i) {
    const auto& sample = (*samples)[i];
    std::vector<int32_t> ids(sample.tokens.begin(), sample.tokens.end());
    auto text = loaded->tokenizer->Decode(ids);
    double logprob = 0;
    for (float lp : sample.logprobs) logprob += lp;
    std::printf("[%zu] finish=%s tokens=%zu logprob=%.3f\n%s\n", i,
                std::string(model::FinishReasonName(sample.finish_reason)).c_str(), ids.size(), logprob,
                text.ok() ? tokenizer::ReplaceInvalidUtf8(*text).c_str() : "");
  }
  return 0;
}

int RunScore() {
  auto loaded = Load(/*need_tokenizer=*/true);
  if (!loaded.ok()) return Fail("score", loaded.status());
  auto prompt = loaded->tokenizer->EncodeOrdinary(absl::GetFlag(FLAGS_prompt));
  auto response = loaded->tokenizer->EncodeOrdinary(absl::GetFlag(FLAGS_response));
  if (!prompt.ok() || !response.ok()) return Fail("score", prompt.ok() ? response.status() : prompt.status());
  if (prompt->empty()) return Fail("score", absl::InvalidArgumentError("--prompt is empty"));
  model::ScoreRequest row;
  row.prompt.assign(prompt->begin(), prompt->end());
  row.response.assign(response->begin(), response->end());
  auto logprobs = model::ScoreLogProbs(*loaded->model, {row});
  if (!logprobs.ok()) return Fail("score", logprobs.status());
  double sum = 0;
  for (float lp : (*logprobs)[0]) sum += lp;
  std::printf("response tokens  %zu\nlog-likelihood   %.4f nats\n", row.response.size(), sum);
  if (loaded->model->has_reward_head()) {
    std::vector<int64_t> ids = row.prompt;
    ids.insert(ids.end(), row.response.begin(), row.response.end());
    const at::Tensor input = at::tensor(ids, at::kLong).unsqueeze(0);
    model::ForwardOptions options;
    options.logits = false;
    options.rewards = true;
    auto out = loaded->model->Forward(input, at::ones_like(input), options);
    if (!out.ok()) return Fail("score", out.status());
    std::printf("reward           %.6f\n", out->rewards[0].item<float>());
  }
  return 0;
}

}  // namespace rlhf::cli
