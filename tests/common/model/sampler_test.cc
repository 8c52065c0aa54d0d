#include "common/model/sampler.h"

#include <cmath>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/model/causal_lm.h"
#include "common/model/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/model/test_env.h"

namespace rlhf::model {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<CausalLm> TinyLm(const ModelOptions& options = {}) {
  auto model = LoadModel(testing::TinyLmDir(), options);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

// Random weights: nearly flat next-token distributions, so sampling paths see real choices.
std::unique_ptr<CausalLm> RandomLm(ModelOptions options = {}) {
  ModelConfig c;
  c.SetShape(2, 32, 4);
  c.max_position_embeddings = 48;
  c.vocab_size = 97;
  options.init_seed = 5;
  auto model = CreateModel(c, options);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

// Every decode kernel this CPU can run: the AVX-512 one when available, and BLAS with and without mv.
std::vector<std::pair<std::string, ModelOptions>> DecodeKernels() {
  std::vector<std::pair<std::string, ModelOptions>> kernels;
  ModelOptions blas;
  blas.decode_kernel = DecodeKernel::kBlas;
  blas.mv_max_batch = 1;
  kernels.emplace_back("blas+mv", blas);
  blas.mv_max_batch = 0;
  kernels.emplace_back("blas", blas);
  ModelOptions avx512;
  avx512.decode_kernel = DecodeKernel::kAvx512;
  ModelConfig probe;  // a minimal model, to ask whether this CPU runs the AVX-512 kernel
  probe.SetShape(1, 8, 8);
  probe.max_position_embeddings = probe.vocab_size = 8;
  if (CreateModel(probe, avx512).ok()) kernels.emplace_back("avx512", avx512);
  return kernels;
}

std::vector<std::vector<int64_t>> MixedPrompts() {
  return {{5, 17, 3}, {42, 8, 91, 33, 7, 61, 2, 12}, {70}, {11, 22, 33, 44, 55}};
}

std::vector<GeneratedSequence> GenerateOrDie(Sampler& sampler, const std::vector<std::vector<int64_t>>& prompts,
                                             const SamplingOptions& options, bool cache = true) {
  auto out = cache ? sampler.Generate(prompts, options) : sampler.GenerateWithoutCache(prompts, options);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : std::vector<GeneratedSequence>();
}

float MaxDifference(const std::vector<float>& a, const std::vector<float>& b) {
  float worst = a.size() == b.size() ? 0.0f : INFINITY;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

TEST(Sampler, GreedyDecodingReproducesHuggingFaceGenerate) {
  auto model = TinyLm();
  ASSERT_NE(model, nullptr);
  const std::string expected = testing::TinyLmDir() + "/expected.safetensors";
  at::Tensor prompt = testing::ReadTensor(expected, "greedy_prompt");
  at::Tensor output = testing::ReadTensor(expected, "greedy_output");
  const int64_t p = prompt.size(1);
  std::vector<int64_t> prompt_ids(prompt.data_ptr<int64_t>(), prompt.data_ptr<int64_t>() + p);
  std::vector<int64_t> want(output.data_ptr<int64_t>() + p, output.data_ptr<int64_t>() + output.size(1));
  auto sampler = *Sampler::Create(model.get());
  SamplingOptions options;
  options.temperature = 0;
  options.max_new_tokens = static_cast<int64_t>(want.size());
  auto out = GenerateOrDie(*sampler, {prompt_ids}, options);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].tokens, want);
  EXPECT_EQ(out[0].finish_reason, FinishReason::kLength);
}

// A row nobody waits for leaves the batch at the next step; the other rows sample exactly what they would have.
TEST(Sampler, AbandonedRowsLeaveTheBatchWithoutChangingTheOthers) {
  auto model = RandomLm();
  ASSERT_NE(model, nullptr);
  auto sampler = *Sampler::Create(model.get());
  SamplingOptions options;
  options.max_new_tokens = 20;
  options.seed = 11;
  options.eos_token_ids = {};
  const auto full = GenerateOrDie(*sampler, MixedPrompts(), options);
  int asked_about_row_1 = 0;
  options.abandoned = [&](int64_t row) { return row == 1 && ++asked_about_row_1 >= 3; };
  const auto cut = GenerateOrDie(*sampler, MixedPrompts(), options);
  ASSERT_EQ(cut.size(), full.size());
  EXPECT_EQ(cut[1].finish_reason, FinishReason::kAbandoned);
  EXPECT_EQ(cut[1].tokens.size(), 3u);  // asked after each of its first three tokens
  EXPECT_EQ(asked_about_row_1, 3);      // and never again
  EXPECT_EQ(FinishReasonName(cut[1].finish_reason), "abandoned");
  for (size_t i : {0u, 2u, 3u}) {
    EXPECT_EQ(cut[i].tokens, full[i].tokens) << "row " << i;
    EXPECT_EQ(cut[i].finish_reason, full[i].finish_reason) << "row " << i;
  }
}

TEST(Sampler, CachedDecodingMatchesFullRecomputationWithEveryKernel) {
  for (const auto& [kernel, kernel_options] : DecodeKernels())
  for (bool random_model : {false, true}) {
    auto model = random_model ? RandomLm(kernel_options) : TinyLm(kernel_options);
    ASSERT_NE(model, nullptr);
    auto sampler = *Sampler::Create(model.get());
    for (double temperature : {0.0, 1.0}) {
      SamplingOptions options;
      options.temperature = temperature;
      options.max_new_tokens = 24;
      options.seed = 11;
      options.eos_token_ids = {1, 2, 3, 4};  // rows finish at different steps
      auto cached = GenerateOrDie(*sampler, MixedPrompts(), options, true);
      auto full = GenerateOrDie(*sampler, MixedPrompts(), options, false);
      ASSERT_EQ(cached.size(), full.size());
      for (size_t i = 0; i < cached.size(); ++i) {
        SCOPED_TRACE(absl::StrCat(kernel, " random_model=", random_model, " temperature=", temperature, " row=", i));
        EXPECT_EQ(cached[i].tokens, full[i].tokens);
        EXPECT_LT(MaxDifference(cached[i].logprobs, full[i].logprobs), 1e-5);
        EXPECT_EQ(cached[i].finish_reason, full[i].finish_reason);
      }
    }
  }
}

TEST(Sampler, RowsOfMixedBatchMatchRowsSampledAloneWithEveryKernel) {
  for (const auto& [kernel, kernel_options] : DecodeKernels())
  for (const auto& [top_k, top_p] : {std::pair<int64_t, double>{0, 1.0}, {20, 0.9}}) {
    SCOPED_TRACE(kernel);
    auto model = RandomLm(kernel_options);
    ASSERT_NE(model, nullptr);
    auto sampler = *Sampler::Create(model.get());
    const uint64_t kSeed = 123;
    SamplingOptions options;
    options.temperature = 0.8;
    options.top_k = top_k;
    options.top_p = top_p;
    options.max_new_tokens = 30;
    options.seed = kSeed;
    options.eos_token_ids = {1, 2, 3, 4, 5};
    const auto prompts = MixedPrompts();
    auto batch = GenerateOrDie(*sampler, prompts, options);
    ASSERT_EQ(batch.size(), prompts.size());
    std::set<size_t> lengths;
    for (size_t i = 0; i < prompts.size(); ++i) {
      SamplingOptions alone = options;
      alone.row_seeds = {RowSeed(kSeed, static_cast<int64_t>(i))};
      auto single = GenerateOrDie(*sampler, {prompts[i]}, alone);
      ASSERT_EQ(single.size(), 1u);
      EXPECT_EQ(single[0].tokens, batch[i].tokens) << "row " << i << " top_k " << top_k;
      EXPECT_LT(MaxDifference(single[0].logprobs, batch[i].logprobs), 1e-5);
      lengths.insert(batch[i].tokens.size());
    }
    EXPECT_GT(lengths.size(), 1u) << "rows should finish at different steps to exercise batch compaction";
  }
}

TEST(Sampler, DecodingFollowsInPlaceWeightUpdatesWithEveryKernel) {
  for (const auto& [kernel, kernel_options] : DecodeKernels()) {
    SCOPED_TRACE(kernel);
    auto model = RandomLm(kernel_options);
    ASSERT_NE(model, nullptr);
    auto sampler = *Sampler::Create(model.get());
    SamplingOptions options;
    options.temperature = 0;
    options.max_new_tokens = 12;
    const auto before = GenerateOrDie(*sampler, {{7, 8, 9}}, options);  // builds the kernels' weight copies
    {
      at::NoGradGuard no_grad;  // what an optimiser step does: in-place updates
      for (NamedTensor& p : model->NamedParameters()) {
        if (p.name.find("wte") != std::string::npos || p.name.find("c_fc.weight") != std::string::npos ||
            p.name.find("c_attn.weight") != std::string::npos) {
          p.tensor.mul_(-3.0);
        }
      }
    }
    const auto cached = GenerateOrDie(*sampler, {{7, 8, 9}}, options);
    const auto full = GenerateOrDie(*sampler, {{7, 8, 9}}, options, /*cache=*/false);
    EXPECT_EQ(cached[0].tokens, full[0].tokens);
    EXPECT_LT(MaxDifference(cached[0].logprobs, full[0].logprobs), 1e-5);
    EXPECT_NE(cached[0].logprobs, before[0].logprobs);
  }
}

TEST(Sampler, DecodingFollowsLoadWeights) {
  for (const auto& [kernel, kernel_options] : DecodeKernels()) {
    SCOPED_TRACE(kernel);
    auto model = TinyLm(kernel_options);
    ASSERT_NE(model, nullptr);
    auto sampler = *Sampler::Create(model.get());
    SamplingOptions options;
    options.temperature = 0;
    options.max_new_tokens = 10;
    const auto before = GenerateOrDie(*sampler, {{7, 8, 9}}, options);  // builds the kernels' weight copies
    std::map<std::string, at::Tensor> changed = model->StateDict();
    for (auto& [name, tensor] : changed) tensor = tensor.detach() * (name.find("c_fc") != std::string::npos ? -2 : 1);
    changed["transformer.wte.weight"] = changed["transformer.wte.weight"].flip(0);
    auto bytes = SerializeSafetensors(changed);
    ASSERT_TRUE(bytes.ok());
    auto file = SafetensorsFile::Parse(*bytes, "update");
    ASSERT_TRUE(file.ok());
    const std::unique_ptr<WeightSource> weights = WeightSource::FromFile(*std::move(file));
    ASSERT_TRUE(model->LoadWeights(*weights).ok());
    const auto cached = GenerateOrDie(*sampler, {{7, 8, 9}}, options);
    // Reference: a fresh model that never built weight copies, given the same weights.
    auto fresh = TinyLm(kernel_options);
    ASSERT_TRUE(fresh->LoadWeights(*weights).ok());
    auto fresh_sampler = *Sampler::Create(fresh.get());
    const auto want = GenerateOrDie(*fresh_sampler, {{7, 8, 9}}, options);
    EXPECT_EQ(cached[0].tokens, want[0].tokens);
    EXPECT_LT(MaxDifference(cached[0].logprobs, want[0].logprobs), 1e-6);
    EXPECT_NE(cached[0].logprobs, before[0].logprobs);
  }
}

TEST(Sampler, SameSeedRepeatsAndAnotherSeedDiffers) {
  auto model = RandomLm();
  ASSERT_NE(model, nullptr);
  auto sampler = *Sampler::Create(model.get());
  SamplingOptions options;
  options.max_new_tokens = 20;
  options.seed = 9;
  auto a = GenerateOrDie(*sampler, MixedPrompts(), options);
  auto b = GenerateOrDie(*sampler, MixedPrompts(), options);
  options.seed = 10;
  auto c = GenerateOrDie(*sampler, MixedPrompts(), options);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].tokens, b[i].tokens);
    EXPECT_NE(a[i].tokens, c[i].tokens);
  }
}

TEST(Sampler, ScoreLogProbsEqualsSampledLogProbs) {
  auto model = TinyLm();
  ASSERT_NE(model, nullptr);
  auto sampler = *Sampler::Create(model.get());
  SamplingOptions options;
  options.temperature = 0.7;
  options.top_k = 40;  // truncation does not change the reported log-probs: full tempered distribution
  options.max_new_tokens = 16;
  options.seed = 3;
  const auto prompts = MixedPrompts();
  auto generated = GenerateOrDie(*sampler, prompts, options);
  std::vector<ScoreRequest> rows;
  for (size_t i = 0; i < prompts.size(); ++i) rows.push_back({prompts[i], generated[i].tokens});
  rows.push_back({{9, 9}, {}});  // an empty response scores to an empty list
  ScoreOptions score;
  score.temperature = 0.7;
  auto logprobs = ScoreLogProbs(*model, rows, score);
  ASSERT_TRUE(logprobs.ok()) << logprobs.status();
  ASSERT_EQ(logprobs->size(), rows.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_LT(MaxDifference((*logprobs)[i], generated[i].logprobs), 1e-5) << "row " << i;
  }
  EXPECT_TRUE(logprobs->back().empty());
}

TEST(Sampler, TopKOneAndTinyTopPEqualGreedy) {
  auto model = RandomLm();
  ASSERT_NE(model, nullptr);
  auto sampler = *Sampler::Create(model.get());
  SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 20;
  auto want = GenerateOrDie(*sampler, MixedPrompts(), greedy);
  SamplingOptions top_k = greedy;
  top_k.temperature = 1.0;
  top_k.top_k = 1;
  SamplingOptions top_p = top_k;
  top_p.top_k = 0;
  top_p.top_p = 1e-6;
  for (const SamplingOptions& options : {top_k, top_p}) {
    auto got = GenerateOrDie(*sampler, MixedPrompts(), options);
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i].tokens, want[i].tokens) << "row " << i;
  }
}

TEST(Sampler, StopsAtEosTokenStopSequenceAndStopString) {
  auto model = RandomLm();
  ASSERT_NE(model, nullptr);
  auto sampler = *Sampler::Create(model.get());
  SamplingOptions options;
  options.temperature = 0;
  options.max_new_tokens = 20;
  const std::vector<int64_t> prompt = {11, 22, 33};
  const std::vector<int64_t> full = GenerateOrDie(*sampler, {prompt}, options)[0].tokens;
  ASSERT_EQ(full.size(), 20u);
  // The first step at which a token is new: stopping there must cut the response right after it.
  size_t k = 3;
  while (std::find(full.begin(), full.begin() + k, full[k]) != full.begin() + k) ++k;
  ASSERT_LT(k, full.size());
  const std::vector<int64_t> head(full.begin(), full.begin() + k + 1);

  SamplingOptions eos = options;
  eos.eos_token_ids = {full[k]};
  auto by_eos = GenerateOrDie(*sampler, {prompt}, eos)[0];
  EXPECT_EQ(by_eos.tokens, head);
  EXPECT_EQ(by_eos.finish_reason, FinishReason::kEos);
  EXPECT_EQ(by_eos.logprobs.size(), head.size());

  SamplingOptions sequence = options;
  sequence.stop_token_sequences = {{full[k - 1], full[k]}};
  auto by_sequence = GenerateOrDie(*sampler, {prompt}, sequence)[0];
  EXPECT_EQ(by_sequence.tokens, head);  // full[k] is new at step k, so the pair first ends there
  EXPECT_EQ(by_sequence.finish_reason, FinishReason::kStopSequence);

  SamplingOptions text = options;
  text.decode = [](const std::vector<int64_t>& tokens) {
    std::string s;
    for (int64_t t : tokens) absl::StrAppend(&s, "<", t, ">");
    return s;
  };
  text.stop_strings = {absl::StrCat("<", full[k], ">")};
  auto by_string = GenerateOrDie(*sampler, {prompt}, text)[0];
  EXPECT_EQ(by_string.tokens, head);
  EXPECT_EQ(by_string.finish_reason, FinishReason::kStopSequence);
  EXPECT_EQ(FinishReasonName(by_string.finish_reason), "stop");
}

TEST(Sampler, RespectsMaxNewTokens) {
  auto model = RandomLm();
  ASSERT_NE(model, nullptr);
  auto sampler = *Sampler::Create(model.get());
  for (int64_t max_new : {1, 7}) {
    SamplingOptions options;
    options.max_new_tokens = max_new;
    auto out = GenerateOrDie(*sampler, MixedPrompts(), options);
    for (const GeneratedSequence& seq : out) {
      EXPECT_EQ(static_cast<int64_t>(seq.tokens.size()), max_new);
      EXPECT_EQ(seq.logprobs.size(), seq.tokens.size());
      EXPECT_EQ(seq.finish_reason, FinishReason::kLength);
      for (float lp : seq.logprobs) EXPECT_LE(lp, 0.0f);
    }
  }
}

TEST(Sampler, RejectsBadRequestsWithClearErrors) {
  auto model = RandomLm();
  ASSERT_NE(model, nullptr);
  auto sampler = *Sampler::Create(model.get());
  SamplingOptions options;
  options.max_new_tokens = 10;
  struct Case {
    std::vector<std::vector<int64_t>> prompts;
    SamplingOptions options;
    std::string message;
  };
  SamplingOptions long_run = options;
  long_run.max_new_tokens = 46;
  SamplingOptions seeds = options;
  seeds.row_seeds = {1, 2};
  SamplingOptions stop = options;
  stop.stop_strings = {"x"};
  SamplingOptions top_p = options;
  top_p.top_p = 0;
  const Case cases[] = {
      {{}, options, "no prompts"},
      {{{1}, {}}, options, "prompts[1] is empty"},
      {{{1, 97}}, options, "prompts[0][1]=97 is outside the vocabulary [0, 97)"},
      {{{1, 2, 3}}, long_run, "prompts[0] has 3 tokens; with max_new_tokens 46 that exceeds max_position_embeddings 48"},
      {{{1}}, seeds, "row_seeds has 2 seeds for 1 prompts"},
      {{{1}}, stop, "stop_strings need a decode function"},
      {{{1}}, top_p, "top_p must be in (0, 1]"},
  };
  for (const Case& c : cases) {
    auto out = sampler->Generate(c.prompts, c.options);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(out.status().message(), HasSubstr(c.message));
  }
  auto no_prompt = ScoreLogProbs(*model, {{{}, {1}}});
  EXPECT_THAT(no_prompt.status().message(), HasSubstr("rows[0].prompt is empty"));
  auto bad_token = ScoreLogProbs(*model, {{{1}, {1, -1}}});
  EXPECT_THAT(bad_token.status().message(), HasSubstr("rows[0].response[1]=-1 is outside the vocabulary"));
}

}  // namespace
}  // namespace rlhf::model
