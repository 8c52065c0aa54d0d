#include "common/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

#include <ATen/ops/_log_softmax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/zeros.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"
#include "common/model/causal_lm.h"
#include "common/model/cpu_kernels.h"
#include "common/model/token_ids.h"
#include "common/model/torch_boundary.h"
#include "common/util/status_macros.h"

namespace rlhf::model {
namespace {

// Rows of log-probabilities computed per LM-head call in ScoreLogProbs (bounds the [rows, vocab] temporaries).
constexpr int64_t kScoreChunkRows = 512;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

absl::Status ValidateOptions(const SamplingOptions& o, size_t batch) {
  if (o.max_new_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens must be >= 1, got ", o.max_new_tokens));
  }
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature) ||
      (o.temperature > 0 && o.temperature < kMinTemperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be 0 or finite and >= ", kMinTemperature, ", got ", o.temperature));
  }
  if (o.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", o.top_p));
  }
  if (!o.stop_strings.empty() && !o.decode) {
    return absl::InvalidArgumentError("stop_strings need a decode function");
  }
  for (size_t i = 0; i < o.stop_strings.size(); ++i) {
    if (o.stop_strings[i].empty()) return absl::InvalidArgumentError(absl::StrCat("stop_strings[", i, "] is empty"));
  }
  for (size_t i = 0; i < o.stop_token_sequences.size(); ++i) {
    if (o.stop_token_sequences[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("stop_token_sequences[", i, "] is empty"));
    }
  }
  if (!o.row_seeds.empty() && o.row_seeds.size() != batch) {
    return absl::InvalidArgumentError(
        absl::StrCat("row_seeds has ", o.row_seeds.size(), " seeds for ", batch, " prompts"));
  }
  return absl::OkStatus();
}

// Draws u in [0, 1) with 53 random bits.
double Uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0); }

// Inverse-CDF draw among `candidates` (or all of [0, n) when null) with weights p.
int64_t DrawFrom(const float* p, int64_t n, const std::vector<int32_t>* candidates, std::mt19937_64& rng) {
  const int64_t count = candidates != nullptr ? static_cast<int64_t>(candidates->size()) : n;
  auto index = [&](int64_t i) -> int64_t { return candidates != nullptr ? (*candidates)[i] : i; };
  double total = 0;
  for (int64_t i = 0; i < count; ++i) total += p[index(i)];
  const double u = Uniform(rng) * total;
  double acc = 0;
  int64_t last_positive = index(0);
  for (int64_t i = 0; i < count; ++i) {
    const float pi = p[index(i)];
    if (pi <= 0) continue;
    last_positive = index(i);
    acc += pi;
    if (acc > u) return index(i);
  }
  return last_positive;  // rounding left u just above the total
}

struct RowDraw {
  int64_t token = 0;
  float logprob = 0;
};

// One row's next token. logits/logp/probs: [vocab] rows (probs only when temperature > 0).
RowDraw SampleRow(const float* logits, const float* logp, const float* probs, int64_t vocab,
                  const SamplingOptions& o, std::mt19937_64& rng, std::vector<int32_t>& candidates) {
  if (o.temperature == 0) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i) {
      if (logits[i] > logits[best]) best = i;
    }
    return {best, logp[best]};
  }
  const bool top_k = o.top_k > 0 && o.top_k < vocab;
  const bool top_p = o.top_p < 1;
  if (!top_k && !top_p) {
    const int64_t t = DrawFrom(probs, vocab, nullptr, rng);
    return {t, logp[t]};
  }
  // Ties are broken by the lower id so that the kept set is well defined.
  auto more_probable = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  candidates.resize(vocab);
  for (int64_t i = 0; i < vocab; ++i) candidates[i] = static_cast<int32_t>(i);
  if (top_k) {
    std::nth_element(candidates.begin(), candidates.begin() + (o.top_k - 1), candidates.end(), more_probable);
    candidates.resize(o.top_k);
  }
  if (top_p) {
    // Nucleus of the (top-k renormalised) distribution: sort a growing prefix until it holds top_p of the mass.
    double mass = 0;
    for (int32_t c : candidates) mass += probs[c];
    const double target = o.top_p * mass;
    const int64_t n = static_cast<int64_t>(candidates.size());
    int64_t keep = n;
    for (int64_t m = std::min<int64_t>(n, 64);; m = std::min<int64_t>(n, m * 4)) {
      std::partial_sort(candidates.begin(), candidates.begin() + m, candidates.end(), more_probable);
      double acc = 0;
      int64_t j = 0;
      for (; j < m && acc < target; ++j) acc += probs[candidates[j]];
      if (acc >= target) {
        keep = j;
        break;
      }
      if (m == n) break;
    }
    candidates.resize(std::max<int64_t>(keep, 1));
  }
  // Walk in id order: the draw then depends only on the kept set, not on how it was found.
  std::sort(candidates.begin(), candidates.end());
  const int64_t t = DrawFrom(probs, vocab, &candidates, rng);
  return {t, logp[t]};
}

bool EndsWith(const std::vector<int64_t>& tokens, const std::vector<int64_t>& suffix) {
  return tokens.size() >= suffix.size() && std::equal(suffix.rbegin(), suffix.rend(), tokens.rbegin());
}

}  // namespace

absl::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kStopSequence:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbandoned:
      return "abandoned";
  }
  return "unknown";
}

uint64_t RowSeed(uint64_t seed, int64_t row) {
  return SplitMix64(SplitMix64(seed) ^ (static_cast<uint64_t>(row) * 0xD1B54A32D192ED03ull));
}

struct Sampler::State {
  KvCache cache;
  // CPU buffers of one sampling step, [batch, vocab].
  at::Tensor scaled, logp, probs;
  std::vector<std::vector<int32_t>> candidates;  // per row scratch of top-k/top-p
};

Sampler::Sampler(const CausalLm* model) : model_(model), state_(std::make_unique<State>()) {}
Sampler::~Sampler() = default;

absl::StatusOr<std::unique_ptr<Sampler>> Sampler::Create(const CausalLm* model) {
  if (model == nullptr) return absl::InvalidArgumentError("Sampler::Create: model is null");
  return std::unique_ptr<Sampler>(new Sampler(model));
}

absl::StatusOr<std::vector<GeneratedSequence>> Sampler::Generate(const std::vector<std::vector<int64_t>>& prompts,
                                                                 const SamplingOptions& options) {
  return Run(prompts, options, /*use_cache=*/true);
}

absl::StatusOr<std::vector<GeneratedSequence>> Sampler::GenerateWithoutCache(
    const std::vector<std::vector<int64_t>>& prompts, const SamplingOptions& options) {
  return Run(prompts, options, /*use_cache=*/false);
}

absl::StatusOr<std::vector<GeneratedSequence>> Sampler::Run(const std::vector<std::vector<int64_t>>& prompts,
                                                            const SamplingOptions& options, bool use_cache) {
  const ModelConfig& config = model_->config();
  const int64_t batch = static_cast<int64_t>(prompts.size());
  if (batch == 0) return absl::InvalidArgumentError("no prompts");
  RETURN_IF_ERROR(ValidateOptions(options, prompts.size()));
  int64_t longest = 0;
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t n = static_cast<int64_t>(prompts[i].size());
    if (n == 0) return absl::InvalidArgumentError(absl::StrCat("prompts[", i, "] is empty"));
    RETURN_IF_ERROR(CheckTokenIds(prompts[i], config.vocab_size, absl::StrCat("prompts[", i, "]")));
    if (n + options.max_new_tokens > config.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("prompts[", i, "] has ", n, " tokens; with max_new_tokens ",
                                                     options.max_new_tokens, " that exceeds max_position_embeddings ",
                                                     config.max_position_embeddings));
    }
    longest = std::max(longest, n);
  }
  const int64_t vocab = config.vocab_size;

  std::vector<GeneratedSequence> results(batch);
  std::vector<std::mt19937_64> rngs;
  rngs.reserve(batch);
  for (int64_t i = 0; i < batch; ++i) {
    rngs.emplace_back(options.row_seeds.empty() ? RowSeed(options.seed, i) : options.row_seeds[i]);
  }
  // active[k]: the original row of batch slot k (rows leave the batch when they finish).
  std::vector<int64_t> active(batch);
  for (int64_t i = 0; i < batch; ++i) active[i] = i;

  return TorchBoundary("Generate", [&]() -> absl::StatusOr<std::vector<GeneratedSequence>> {
    c10::InferenceMode inference;
    const auto long_cpu = at::TensorOptions().dtype(at::kLong);
    // Left-padded prompts: row i's tokens end at column `longest`; positions count real tokens only.
    at::Tensor ids = at::zeros({batch, longest}, long_cpu);
    at::Tensor mask = at::zeros({batch, longest}, long_cpu);
    at::Tensor positions = at::zeros({batch, longest}, long_cpu);
    for (int64_t i = 0; i < batch; ++i) {
      const int64_t n = static_cast<int64_t>(prompts[i].size());
      int64_t* pi = ids[i].data_ptr<int64_t>();
      int64_t* pm = mask[i].data_ptr<int64_t>();
      int64_t* pp = positions[i].data_ptr<int64_t>();
      for (int64_t j = 0; j < n; ++j) {
        pi[longest - n + j] = prompts[i][j];
        pm[longest - n + j] = 1;
        pp[longest - n + j] = j;
      }
    }

    at::Tensor logits;
    if (use_cache) {
      RETURN_IF_ERROR(model_->ResetKvCache(batch, longest + options.max_new_tokens, &state_->cache));
      ASSIGN_OR_RETURN(logits, model_->Extend(ids, positions, mask, &state_->cache));
    }
    at::Tensor step_ids = at::empty({batch, 1}, long_cpu);
    at::Tensor step_pos = at::empty({batch, 1}, long_cpu);
    at::Tensor step_mask = at::ones_like(step_ids);
    state_->candidates.resize(batch);

    for (int64_t step = 0; step < options.max_new_tokens; ++step) {
      const int64_t rows = static_cast<int64_t>(active.size());
      if (!use_cache) {
        // Full recomputation over the left-padded prompts and everything sampled so far.
        at::Tensor all_ids = at::zeros({rows, longest + step}, long_cpu);
        at::Tensor all_mask = at::ones({rows, longest + step}, long_cpu);
        for (int64_t k = 0; k < rows; ++k) {
          const int64_t r = active[k];
          all_ids[k].narrow(0, 0, longest).copy_(ids[r]);
          all_mask[k].narrow(0, 0, longest).copy_(mask[r]);
          int64_t* p = all_ids[k].data_ptr<int64_t>();
          for (int64_t j = 0; j < step; ++j) p[longest + j] = results[r].tokens[j];
        }
        ForwardOptions forward;
        forward.logits = false;
        forward.hidden = true;
        ASSIGN_OR_RETURN(ForwardOutput out, model_->Forward(all_ids, all_mask, forward));
        ASSIGN_OR_RETURN(logits, model_->Logits(out.hidden.select(1, longest + step - 1)));
      }
      at::Tensor cpu_logits = logits.to(at::kCPU).contiguous();
      if (!state_->logp.defined() || state_->logp.size(0) < rows || state_->logp.size(1) != vocab) {
        state_->scaled = at::empty({batch, vocab}, at::kFloat);
        state_->logp = at::empty({batch, vocab}, at::kFloat);
        state_->probs = at::empty({batch, vocab}, at::kFloat);
      }
      at::Tensor logp = state_->logp.narrow(0, 0, rows);
      at::Tensor probs = state_->probs.narrow(0, 0, rows);
      if (options.temperature == 0) {
        at::_log_softmax_out(logp, cpu_logits, 1, false);
      } else {
        at::Tensor scaled = state_->scaled.narrow(0, 0, rows);
        at::mul_out(scaled, cpu_logits, 1.0 / options.temperature);
        at::_log_softmax_out(logp, scaled, 1, false);
        at::exp_out(probs, logp);
      }
      std::vector<RowDraw> draws(rows);
      const float* pl = cpu_logits.data_ptr<float>();
      const float* plp = logp.data_ptr<float>();
      const float* pp = probs.data_ptr<float>();
      internal::ParallelFor(rows, 1, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          const int64_t r = active[k];
          draws[k] = SampleRow(pl + k * vocab, plp + k * vocab, pp + k * vocab, vocab, options, rngs[r],
                               state_->candidates[r]);
        }
      });

      std::vector<int64_t> keep;  // batch slots still going
      for (int64_t k = 0; k < rows; ++k) {
        GeneratedSequence& seq = results[active[k]];
        seq.tokens.push_back(draws[k].token);
        seq.logprobs.push_back(draws[k].logprob);
        bool done = true;
        if (options.abandoned && options.abandoned(active[k])) {
          seq.finish_reason = FinishReason::kAbandoned;
        } else if (std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), draws[k].token) !=
                   options.eos_token_ids.end()) {
          seq.finish_reason = FinishReason::kEos;
        } else if (std::any_of(options.stop_token_sequences.begin(), options.stop_token_sequences.end(),
                               [&](const std::vector<int64_t>& s) { return EndsWith(seq.tokens, s); })) {
          seq.finish_reason = FinishReason::kStopSequence;
        } else if (!options.stop_strings.empty() && [&] {
                     const std::string text = options.decode(seq.tokens);
                     return std::any_of(options.stop_strings.begin(), options.stop_strings.end(),
                                        [&](const std::string& s) { return text.find(s) != std::string::npos; });
                   }()) {
          seq.finish_reason = FinishReason::kStopSequence;
        } else if (static_cast<int64_t>(seq.tokens.size()) >= options.max_new_tokens) {
          seq.finish_reason = FinishReason::kLength;
        } else {
          done = false;
        }
        if (!done) keep.push_back(k);
      }
      if (keep.empty()) break;
      if (static_cast<int64_t>(keep.size()) < rows) {
        if (use_cache) RETURN_IF_ERROR(model_->KeepKvCacheRows(keep, &state_->cache));
        std::vector<int64_t> still(keep.size());
        for (size_t k = 0; k < keep.size(); ++k) still[k] = active[keep[k]];
        active = std::move(still);
      }
      if (use_cache) {
        const int64_t n = static_cast<int64_t>(active.size());
        int64_t* pi = step_ids.data_ptr<int64_t>();
        int64_t* pq = step_pos.data_ptr<int64_t>();
        for (int64_t k = 0; k < n; ++k) {
          const GeneratedSequence& seq = results[active[k]];
          pi[k] = seq.tokens.back();
          pq[k] = static_cast<int64_t>(prompts[active[k]].size() + seq.tokens.size()) - 1;
        }
        ASSIGN_OR_RETURN(logits, model_->Extend(step_ids.narrow(0, 0, n), step_pos.narrow(0, 0, n),
                                                step_mask.narrow(0, 0, n), &state_->cache));
      }
    }
    return results;
  });
}

absl::StatusOr<std::vector<std::vector<float>>> ScoreLogProbs(const CausalLm& model,
                                                              const std::vector<ScoreRequest>& rows,
                                                              const ScoreOptions& options) {
  const ModelConfig& config = model.config();
  if (rows.empty()) return absl::InvalidArgumentError("ScoreLogProbs: no rows");
  if (!(options.temperature >= kMinTemperature) || !std::isfinite(options.temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be finite and >= ", kMinTemperature, ", got ", options.temperature));
  }
  const int64_t batch = static_cast<int64_t>(rows.size());
  int64_t longest = 0;
  int64_t total = 0;
  for (int64_t i = 0; i < batch; ++i) {
    if (rows[i].prompt.empty()) return absl::InvalidArgumentError(absl::StrCat("rows[", i, "].prompt is empty"));
    RETURN_IF_ERROR(CheckTokenIds(rows[i].prompt, config.vocab_size, absl::StrCat("rows[", i, "].prompt")));
    RETURN_IF_ERROR(CheckTokenIds(rows[i].response, config.vocab_size, absl::StrCat("rows[", i, "].response")));
    const int64_t n = static_cast<int64_t>(rows[i].prompt.size() + rows[i].response.size());
    RETURN_IF_ERROR(CheckSequenceLength(n, config.max_position_embeddings, absl::StrCat("rows[", i, "]")));
    longest = std::max(longest, n);
    total += static_cast<int64_t>(rows[i].response.size());
  }
  std::vector<std::vector<float>> result(batch);
  if (total == 0) return result;
  return TorchBoundary("ScoreLogProbs", [&]() -> absl::StatusOr<std::vector<std::vector<float>>> {
    c10::InferenceMode inference;
    const auto long_cpu = at::TensorOptions().dtype(at::kLong);
    at::Tensor ids = at::zeros({batch, longest}, long_cpu);
    at::Tensor mask = at::zeros({batch, longest}, long_cpu);
    at::Tensor where = at::empty({total}, long_cpu);    // flat [batch * longest] index of the predicting position
    at::Tensor targets = at::empty({total}, long_cpu);  // the response token it predicts
    int64_t* pw = where.data_ptr<int64_t>();
    int64_t* pt = targets.data_ptr<int64_t>();
    int64_t n = 0;
    for (int64_t i = 0; i < batch; ++i) {
      const std::vector<int64_t>& prompt = rows[i].prompt;
      const std::vector<int64_t>& response = rows[i].response;
      int64_t* pi = ids[i].data_ptr<int64_t>();
      int64_t* pm = mask[i].data_ptr<int64_t>();
      const int64_t p = static_cast<int64_t>(prompt.size());
      for (int64_t j = 0; j < p; ++j) pi[j] = prompt[j];
      for (size_t j = 0; j < response.size(); ++j) {
        pi[p + static_cast<int64_t>(j)] = response[j];
        pw[n] = i * longest + p - 1 + static_cast<int64_t>(j);
        pt[n] = response[j];
        ++n;
      }
      std::fill(pm, pm + p + static_cast<int64_t>(response.size()), 1);
    }
    ForwardOptions forward;
    forward.logits = false;
    forward.hidden = true;
    ASSIGN_OR_RETURN(ForwardOutput out, model.Forward(ids, mask, forward));
    at::Tensor hidden = out.hidden.reshape({batch * longest, config.hidden_size});
    at::Tensor where_dev = where.to(model.device());
    at::Tensor targets_dev = targets.to(model.device());
    std::vector<float> flat(total);
    for (int64_t begin = 0; begin < total; begin += kScoreChunkRows) {
      const int64_t len = std::min(kScoreChunkRows, total - begin);
      ASSIGN_OR_RETURN(at::Tensor logits, model.Logits(hidden.index_select(0, where_dev.narrow(0, begin, len))));
      // The same arithmetic as the sampler: multiply by 1/temperature, then log-softmax.
      at::Tensor logp = at::_log_softmax(logits.mul(1.0 / options.temperature), 1, false);
      at::Tensor picked = logp.gather(1, targets_dev.narrow(0, begin, len).view({len, 1})).view({len}).to(at::kCPU);
      std::copy(picked.data_ptr<float>(), picked.data_ptr<float>() + len, flat.begin() + begin);
    }
    for (int64_t k = 0; k < total; ++k) {
      if (!std::isfinite(flat[k])) {  // finite weights cannot give this; never hand it to a caller
        return absl::InternalError(absl::StrCat("ScoreLogProbs: a log-probability is not finite (", flat[k], ")"));
      }
    }
    n = 0;
    for (int64_t i = 0; i < batch; ++i) {
      const size_t r = rows[i].response.size();
      result[i].assign(flat.begin() + n, flat.begin() + n + static_cast<int64_t>(r));
      n += static_cast<int64_t>(r);
    }
    return result;
  });
}

}  // namespace rlhf::model
