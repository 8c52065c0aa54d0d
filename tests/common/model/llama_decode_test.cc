// The Llama family's fast CPU paths (the fused one-token decode step, inference forwards through the [out, in]
// matrix kernel) against the generic path of LibTorch ops, on every fixture and on random models that exercise
// grouped-query attention (down to one key/value head), biases, q/k norms, Llama 3 RoPE scaling and sizes that are
// not multiples of the vector width, at batch sizes 1..33 and with every decode kernel.
// Suite names contain Llama or Qwen so that `ctest -R 'Llama|Qwen'` selects them.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/model/causal_lm.h"
#include "common/model/cpu_kernels.h"
#include "common/model/llama.h"
#include "common/model/sampler.h"
#include "gtest/gtest.h"
#include "tests/common/model/test_env.h"

namespace rlhf::model {
namespace {

// Every decode kernel option this CPU runs: auto, avx512 (when the CPU has AVX-512F), blas with mv at batch 1 and
// blas with addmm only.
std::vector<std::pair<std::string, ModelOptions>> DecodeKernels() {
  std::vector<std::pair<std::string, ModelOptions>> kernels;
  kernels.emplace_back("auto", ModelOptions{});
  if (internal::CpuHasAvx512()) {
    ModelOptions avx512;
    avx512.decode_kernel = DecodeKernel::kAvx512;
    kernels.emplace_back("avx512", avx512);
  }
  ModelOptions blas;
  blas.decode_kernel = DecodeKernel::kBlas;
  blas.mv_max_batch = 1;
  kernels.emplace_back("blas+mv", blas);
  blas.mv_max_batch = 0;
  kernels.emplace_back("blas", blas);
  return kernels;
}

// Overwrites every parameter with N(0, 0.1) (norm weights 1 + N(0, 0.1)) from a fixed seed, so that biases and
// norms are not trivially zero or one and greedy choices are far from ties.
void RandomizeParameters(CausalLm& model, uint64_t seed) {
  c10::InferenceMode inference(false);
  at::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  for (const NamedTensor& p : model.NamedParameters()) {
    at::Tensor noise = at::randn(p.tensor.sizes(), gen, p.tensor.options().requires_grad(false)) * 0.1;
    if (absl::StrContains(p.name, "norm")) noise += 1.0;
    p.tensor.copy_(noise);
  }
}

std::unique_ptr<CausalLm> RandomModel(const ModelConfig& config, const ModelOptions& options) {
  auto model = CreateModel(config, options);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return nullptr;
  RandomizeParameters(**model, 11);
  return std::move(*model);
}

struct RandomCase {
  std::string name;
  ModelConfig config;
};

// Small models of each layout; hidden sizes and head_dims are not multiples of 16.
std::vector<RandomCase> RandomCases() {
  std::vector<RandomCase> cases;
  {
    // One key/value head for four query heads, Llama 3 RoPE scaling, every bias, untied head.
    ModelConfig c = *ModelConfig::ForModelType("llama");
    c.SetShape(2, 40, 4, 1, 10, 72);
    c.vocab_size = 37;
    c.max_position_embeddings = 64;
    c.tie_word_embeddings = false;
    c.attention_bias = c.o_proj_bias = c.mlp_bias = true;
    c.rope_scaling = Llama3RopeScaling{4.0, 1.0, 4.0, 16};
    cases.push_back({"llama_gqa1_odd", c});
  }
  {
    // Qwen2: q/k/v biases, 3 query heads per key/value head, head_dim 18.
    ModelConfig c = *ModelConfig::ForModelType("qwen2");
    c.SetShape(2, 54, 3, 1, 18, 100);
    c.vocab_size = 53;
    c.max_position_embeddings = 64;
    cases.push_back({"qwen2_bias", c});
  }
  {
    // Qwen3: q/k norms, head_dim apart from hidden / heads, tied head.
    ModelConfig c = *ModelConfig::ForModelType("qwen3");
    c.SetShape(2, 33, 6, 2, 22, 70);
    c.vocab_size = 61;
    c.max_position_embeddings = 64;
    cases.push_back({"qwen3_qknorm", c});
  }
  {
    // Wider than 64 with tails everywhere, no GQA.
    ModelConfig c = *ModelConfig::ForModelType("mistral");
    c.SetShape(1, 100, 5, 5, 20, 150);
    c.vocab_size = 131;
    c.max_position_embeddings = 64;
    cases.push_back({"mistral_wide", c});
  }
  return cases;
}

// Left-padded ids, mask and position ids (cumsum(mask) - 1 clamped at 0) of `prompts`.
struct Batch {
  at::Tensor ids, mask, positions;
};
Batch LeftPadded(const std::vector<std::vector<int64_t>>& prompts) {
  const int64_t b = static_cast<int64_t>(prompts.size());
  size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, p.size());
  Batch out;
  out.ids = at::zeros({b, static_cast<int64_t>(longest)}, at::kLong);
  out.mask = at::zeros({b, static_cast<int64_t>(longest)}, at::kLong);
  out.positions = at::zeros({b, static_cast<int64_t>(longest)}, at::kLong);
  for (int64_t r = 0; r < b; ++r) {
    const auto& p = prompts[r];
    const int64_t pad = static_cast<int64_t>(longest - p.size());
    for (size_t i = 0; i < p.size(); ++i) {
      out.ids[r][pad + static_cast<int64_t>(i)] = p[i];
      out.mask[r][pad + static_cast<int64_t>(i)] = 1;
      out.positions[r][pad + static_cast<int64_t>(i)] = static_cast<int64_t>(i);
    }
  }
  return out;
}

// Greedy decoding of `prompts` through Extend (a prefill, then `steps` one-token steps: the fast step on CPU),
// each step's logits checked against the generic path recomputing the whole sequence (Forward while recording
// gradients runs LibTorch's ops only): logits within 1e-4 and the same greedy token.
void ExpectDecodingMatchesRecomputation(const CausalLm& model, const std::vector<std::vector<int64_t>>& prompts,
                                        int steps, const std::string& what) {
  Batch batch = LeftPadded(prompts);
  const int64_t b = batch.ids.size(0);
  KvCache cache;
  ASSERT_TRUE(model.ResetKvCache(b, batch.ids.size(1) + steps, &cache).ok()) << what;
  at::Tensor ids = batch.ids, mask = batch.mask;
  at::Tensor last_pos = batch.positions.select(1, batch.positions.size(1) - 1).clone();
  auto logits = model.Extend(batch.ids, batch.positions, batch.mask, &cache);
  ASSERT_TRUE(logits.ok()) << what << ": " << logits.status();
  at::Tensor fast = logits->clone();
  for (int step = 0;; ++step) {
    auto full = model.Forward(ids, mask);  // gradients recorded: the generic path
    ASSERT_TRUE(full.ok()) << what << ": " << full.status();
    at::Tensor want = full->logits.select(1, ids.size(1) - 1).detach();
    ASSERT_EQ(fast.sizes(), want.sizes()) << what;
    EXPECT_LT((fast - want).abs().max().item<float>(), 1e-4) << what << " step " << step;
    at::Tensor next = fast.argmax(1);
    EXPECT_TRUE(next.equal(want.argmax(1))) << what << " step " << step;
    if (step == steps) break;
    last_pos += 1;
    ids = at::cat({ids, next.view({b, 1})}, 1);
    mask = at::cat({mask, at::ones({b, 1}, at::kLong)}, 1);
    logits = model.Extend(next.view({b, 1}), last_pos.view({b, 1}), at::ones({b, 1}, at::kLong), &cache);
    ASSERT_TRUE(logits.ok()) << what << ": " << logits.status();
    fast = logits->clone();
  }
}

// Deterministic prompts of lengths 1..6 with ids below `vocab`.
std::vector<std::vector<int64_t>> Prompts(int64_t batch, int64_t vocab, int64_t salt = 0) {
  std::vector<std::vector<int64_t>> prompts(batch);
  for (int64_t r = 0; r < batch; ++r) {
    const int64_t length = 1 + (r * 7 + salt) % 6;
    for (int64_t i = 0; i < length; ++i) prompts[r].push_back((r * 31 + i * 17 + salt * 5 + 3) % vocab);
  }
  return prompts;
}

// ---------------------------------------------------------------------------------------------------------------
// Fixtures.

class LlamaFastDecode : public ::testing::TestWithParam<std::string> {
 protected:
  std::string Dir() const { return testing::FixturesDir() + "/" + GetParam(); }
};

TEST_P(LlamaFastDecode, EveryKernelMatchesTheGenericPathAndTransformersGreedyOutput) {
  const std::string expected = Dir() + "/expected.safetensors";
  const std::vector<int64_t> prompt = [&] {
    at::Tensor t = testing::ReadTensor(expected, "greedy_prompt").to(at::kLong).contiguous();
    return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  }();
  const std::vector<int64_t> want = [&] {
    at::Tensor t = testing::ReadTensor(expected, "greedy_output").to(at::kLong).contiguous();
    return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  }();
  ASSERT_GT(want.size(), prompt.size());
  for (const auto& [kernel, options] : DecodeKernels()) {
    auto model = LoadModel(Dir(), options);
    ASSERT_TRUE(model.ok()) << model.status();
    const int64_t vocab = (*model)->config().vocab_size;
    for (const int64_t batch : {1, 4, 17}) {
      ExpectDecodingMatchesRecomputation(**model, Prompts(batch, vocab), 5,
                                         absl::StrCat(GetParam(), " ", kernel, " batch ", batch));
    }
    auto sampler = Sampler::Create(model->get());
    ASSERT_TRUE(sampler.ok()) << sampler.status();
    SamplingOptions greedy;
    greedy.temperature = 0;
    greedy.max_new_tokens = static_cast<int64_t>(want.size() - prompt.size());
    auto out = (*sampler)->Generate({prompt}, greedy);
    ASSERT_TRUE(out.ok()) << out.status();
    std::vector<int64_t> got = prompt;
    got.insert(got.end(), (*out)[0].tokens.begin(), (*out)[0].tokens.end());
    EXPECT_EQ(got, want) << kernel;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LlamaFastDecode,
                         ::testing::Values("llama-tiny-lm", "llama-tiny-lm-bf16", "llama-tiny-lm-sharded",
                                           "qwen3-tiny-lm"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return absl::StrReplaceAll(info.param, {{"-", "_"}});
                         });

// ---------------------------------------------------------------------------------------------------------------
// Random models.

TEST(LlamaFastDecode, RandomLayoutsMatchTheGenericPathWithEveryKernel) {
  for (const RandomCase& c : RandomCases()) {
    for (const auto& [kernel, options] : DecodeKernels()) {
      auto model = RandomModel(c.config, options);
      ASSERT_NE(model, nullptr) << c.name;
      for (const int64_t batch : {1, 2, 3, 5, 16}) {
        ExpectDecodingMatchesRecomputation(*model, Prompts(batch, c.config.vocab_size, batch), 4,
                                           absl::StrCat(c.name, " ", kernel, " batch ", batch));
      }
    }
  }
}

TEST(LlamaFastDecode, EveryBatchSizeFrom1To33MatchesTheGenericPath) {
  const RandomCase c = RandomCases().front();  // one key/value head, odd sizes, every bias
  for (const auto& [kernel, options] : DecodeKernels()) {
    auto model = RandomModel(c.config, options);
    ASSERT_NE(model, nullptr);
    for (int64_t batch = 1; batch <= 33; ++batch) {
      ExpectDecodingMatchesRecomputation(*model, Prompts(batch, c.config.vocab_size, batch), 2,
                                         absl::StrCat(c.name, " ", kernel, " batch ", batch));
    }
  }
}

// The sampler's KV-cached decoding (fast steps, rows leaving the batch at EOS) equals recomputing the whole
// sequence every step, with every kernel.
TEST(LlamaFastDecode, KvCachedSamplingEqualsRecomputationAsRowsFinish) {
  for (const RandomCase& c : RandomCases()) {
    for (const auto& [kernel, options] : DecodeKernels()) {
      auto model = RandomModel(c.config, options);
      ASSERT_NE(model, nullptr);
      auto sampler = Sampler::Create(model.get());
      ASSERT_TRUE(sampler.ok()) << sampler.status();
      SamplingOptions sampling;
      sampling.max_new_tokens = 12;
      sampling.seed = 5;
      sampling.eos_token_ids = {1, 2, 3};  // some rows stop early and leave the batch
      const auto prompts = Prompts(9, c.config.vocab_size);
      auto cached = (*sampler)->Generate(prompts, sampling);
      auto full = (*sampler)->GenerateWithoutCache(prompts, sampling);
      ASSERT_TRUE(cached.ok()) << cached.status();
      ASSERT_TRUE(full.ok()) << full.status();
      bool some_row_stopped_early = false;
      for (size_t i = 0; i < prompts.size(); ++i) {
        EXPECT_EQ((*cached)[i].tokens, (*full)[i].tokens) << c.name << " " << kernel << " row " << i;
        some_row_stopped_early |= (*cached)[i].tokens.size() < 12;
        ASSERT_EQ((*cached)[i].logprobs.size(), (*full)[i].logprobs.size());
        for (size_t j = 0; j < (*cached)[i].logprobs.size(); ++j) {
          EXPECT_NEAR((*cached)[i].logprobs[j], (*full)[i].logprobs[j], 1e-4) << c.name << " " << kernel;
        }
      }
      EXPECT_TRUE(some_row_stopped_early) << c.name << " " << kernel;
    }
  }
}

// Grouped-query models: a row sampled in a batch (fast steps on every row at once, rows leaving at EOS) gets the
// same tokens as the row sampled alone with its row seed, with every kernel.
TEST(LlamaFastDecode, RowSampledInABatchEqualsTheRowSampledAloneWithEveryKernel) {
  for (const RandomCase& c : RandomCases()) {
    if (c.config.num_key_value_heads == c.config.num_attention_heads) continue;  // not grouped-query
    for (const auto& [kernel, options] : DecodeKernels()) {
      auto model = RandomModel(c.config, options);
      ASSERT_NE(model, nullptr);
      auto sampler = Sampler::Create(model.get());
      ASSERT_TRUE(sampler.ok()) << sampler.status();
      SamplingOptions sampling;
      sampling.max_new_tokens = 10;
      sampling.seed = 17;
      sampling.temperature = 0.9;
      sampling.eos_token_ids = {1, 2};
      const auto prompts = Prompts(7, c.config.vocab_size, 3);
      auto batch = (*sampler)->Generate(prompts, sampling);
      ASSERT_TRUE(batch.ok()) << batch.status();
      for (size_t i = 0; i < prompts.size(); ++i) {
        SamplingOptions alone = sampling;
        alone.row_seeds = {RowSeed(sampling.seed, static_cast<int64_t>(i))};
        auto single = (*sampler)->Generate({prompts[i]}, alone);
        ASSERT_TRUE(single.ok()) << single.status();
        EXPECT_EQ((*single)[0].tokens, (*batch)[i].tokens) << c.name << " " << kernel << " row " << i;
        ASSERT_EQ((*single)[0].logprobs.size(), (*batch)[i].logprobs.size());
        for (size_t j = 0; j < (*batch)[i].logprobs.size(); ++j) {
          EXPECT_NEAR((*single)[0].logprobs[j], (*batch)[i].logprobs[j], 1e-4) << c.name << " " << kernel;
        }
      }
    }
  }
}

// Scoring without gradients (the kernel path where chosen) equals the forward that records gradients.
TEST(LlamaFastDecode, InferenceForwardMatchesTheGenericPath) {
  for (const RandomCase& c : RandomCases()) {
    for (const auto& [kernel, options] : DecodeKernels()) {
      auto model = RandomModel(c.config, options);
      ASSERT_NE(model, nullptr);
      Batch batch = LeftPadded(Prompts(7, c.config.vocab_size));
      auto generic = model->Forward(batch.ids, batch.mask);
      ASSERT_TRUE(generic.ok()) << generic.status();
      c10::InferenceMode inference;
      auto fast = model->Forward(batch.ids, batch.mask);
      ASSERT_TRUE(fast.ok()) << fast.status();
      at::Tensor m = batch.mask.to(at::kBool).unsqueeze(-1);
      EXPECT_LT(((fast->logits - generic->logits.detach()).abs() * m).max().item<float>(), 1e-4)
          << c.name << " " << kernel;
    }
  }
}

TEST(LlamaFastDecode, MatrixKernelFollowsTheOption) {
  const ModelConfig config = RandomCases().front().config;
  ModelOptions options;
  options.decode_kernel = DecodeKernel::kBlas;
  auto blas = RandomModel(config, options);
  ASSERT_NE(blas, nullptr);
  EXPECT_EQ(dynamic_cast<const LlamaModel&>(*blas).MatrixKernelFor(16), "blas");
  auto automatic = RandomModel(config, ModelOptions{});
  ASSERT_NE(automatic, nullptr);
  const std::string chosen = dynamic_cast<const LlamaModel&>(*automatic).MatrixKernelFor(16);
  if (internal::CpuHasAvx512()) {
    EXPECT_TRUE(chosen == "avx512" || chosen == "blas") << chosen;
    options.decode_kernel = DecodeKernel::kAvx512;
    auto avx512 = RandomModel(config, options);
    ASSERT_NE(avx512, nullptr);
    EXPECT_EQ(dynamic_cast<const LlamaModel&>(*avx512).MatrixKernelFor(16), "avx512");
  } else {
    EXPECT_EQ(chosen, "blas");
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The [out, in] matrix kernel itself.

TEST(LlamaKernels, GemmNtMatchesDoublePrecisionProductsAndIsBatchInvariant) {
  if (!internal::CpuHasAvx512()) GTEST_SKIP() << "this CPU lacks AVX-512F";
  at::Generator gen = at::detail::createCPUGenerator(3);
  using Op = internal::GemmNtOutput::Op;
  // k = 2000 makes row blocks of 16 rows: m = 33 and 40 span several blocks.
  for (const int64_t k : {1, 15, 16, 17, 100, 2000}) {
    for (const int64_t n : {1, 3, 17, 64, 100}) {
      at::Tensor w = at::randn({n, k}, gen), w2 = at::randn({n, k}, gen);
      at::Tensor bias = at::randn({n}, gen), bias2 = at::randn({n}, gen);
      for (const int64_t m : {1, 2, 3, 4, 5, 7, 16, 33, 40}) {
        at::Tensor x = at::randn({m, k + 3}, gen).narrow(1, 0, k);  // leading dimension k + 3
        at::Tensor base = at::randn({m, n}, gen);
        at::Tensor xd = x.to(at::kDouble);
        at::Tensor prod = at::mm(xd, w.to(at::kDouble).t()) + bias.to(at::kDouble);
        at::Tensor prod2 = at::mm(xd, w2.to(at::kDouble).t()) + bias2.to(at::kDouble);
        const std::pair<Op, at::Tensor> cases[] = {
            {Op::kStore, prod},
            {Op::kAccumulate, base.to(at::kDouble) + prod},
            {Op::kGatedSilu, at::silu(prod) * prod2},
        };
        for (const auto& [op, want] : cases) {
          at::Tensor y = base.clone();
          internal::GemmNtOutput o;
          o.w = w.data_ptr<float>();
          o.ldw = k;
          o.bias = bias.data_ptr<float>();
          o.w2 = w2.data_ptr<float>();
          o.bias2 = bias2.data_ptr<float>();
          o.y = y.data_ptr<float>();
          o.ldy = n;
          o.n = n;
          o.op = op;
          internal::GemmNtAvx512(x.data_ptr<float>(), x.stride(0), m, k, &o, 1);
          // float32 rounding: relative to the result, with a floor at the typical size of a dot product of k
          // standard normal terms (sqrt(k)), or of a product of two of them (k) for the gated op.
          const std::string what = absl::StrCat("m ", m, " k ", k, " n ", n, " op ", static_cast<int>(op));
          const double floor = op == Op::kGatedSilu ? static_cast<double>(k) : std::sqrt(static_cast<double>(k));
          at::Tensor error = (y.to(at::kDouble) - want).abs() / (want.abs() + floor);
          EXPECT_LT(error.max().item<double>(), 2e-5) << what;
          // Row r alone gives bitwise the same result as row r in the batch.
          for (const int64_t r : {int64_t{0}, m - 1}) {
            at::Tensor alone = base.narrow(0, r, 1).clone();
            o.y = alone.data_ptr<float>();
            internal::GemmNtAvx512(x.data_ptr<float>() + r * x.stride(0), x.stride(0), 1, k, &o, 1);
            EXPECT_TRUE(alone.equal(y.narrow(0, r, 1))) << what << " row " << r;
          }
        }
      }
    }
  }
}

// Several products on one input in one call, each written to its own output.
TEST(LlamaKernels, GemmNtRunsSeveralProductsInOneCall) {
  if (!internal::CpuHasAvx512()) GTEST_SKIP() << "this CPU lacks AVX-512F";
  at::Generator gen = at::detail::createCPUGenerator(4);
  const int64_t m = 6, k = 37;
  at::Tensor x = at::randn({m, k}, gen);
  std::vector<at::Tensor> weights, outputs;
  std::vector<internal::GemmNtOutput> products;
  for (const int64_t n : {5, 40, 19, 1, 64, 33}) {  // more than one call's worth: split internally
    weights.push_back(at::randn({n, k}, gen));
    outputs.push_back(at::full({m, n}, std::nan(""), at::kFloat));
    internal::GemmNtOutput o;
    o.w = weights.back().data_ptr<float>();
    o.ldw = k;
    o.y = outputs.back().data_ptr<float>();
    o.ldy = n;
    o.n = n;
    products.push_back(o);
  }
  internal::GemmNtAvx512(x.data_ptr<float>(), k, m, k, products.data(), static_cast<int>(products.size()));
  for (size_t i = 0; i < weights.size(); ++i) {
    at::Tensor want = at::mm(x.to(at::kDouble), weights[i].to(at::kDouble).t());
    EXPECT_LT((outputs[i].to(at::kDouble) - want).abs().max().item<double>(), 1e-4) << "product " << i;
  }
}

}  // namespace
}  // namespace rlhf::model
