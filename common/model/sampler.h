// Batched sampling from a CausalLm with a preallocated KV cache, and log-probabilities of given responses.
// Token-level and tokenizer-independent (stop strings go through a caller-supplied decode function).
// This header is LibTorch-free.
#ifndef RLHF_COMMON_MODEL_SAMPLER_H_
#define RLHF_COMMON_MODEL_SAMPLER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rlhf::model {

class CausalLm;

enum class FinishReason {
  kEos,           // sampled one of SamplingOptions::eos_token_ids
  kStopSequence,  // the response ends with a stop token sequence or its text contains a stop string
  kLength,        // reached max_new_tokens
  kAbandoned,     // SamplingOptions::abandoned said nobody waits for the row any more
};
absl::string_view FinishReasonName(FinishReason reason);  // "eos", "stop", "length", "abandoned"

// The smallest temperature other than 0 (greedy) that sampling and log-probs accept. Logits are multiplied by
// 1 / temperature in float32: below this a large logit overflows to infinity and the softmax gives NaN.
inline constexpr double kMinTemperature = 1e-3;

struct SamplingOptions {
  int64_t max_new_tokens = 64;  // >= 1; prompt length + max_new_tokens must fit in max_position_embeddings
  // Logits are divided by the temperature before softmax; 0 means greedy (argmax, ties to the lowest id). Otherwise
  // at least kMinTemperature.
  double temperature = 1.0;
  int64_t top_k = 0;     // keep the k most probable tokens; 0 = all
  double top_p = 1.0;    // then keep the smallest most-probable set whose probability reaches top_p; 1 = all
  std::vector<int64_t> eos_token_ids;                   // stop after sampling any of these
  std::vector<std::vector<int64_t>> stop_token_sequences;  // stop when the response ends with one
  std::vector<std::string> stop_strings;                // stop when decode(response) contains one
  // Text of response tokens; required when stop_strings is not empty. Called once per row and step.
  std::function<std::string(const std::vector<int64_t>&)> decode;
  // Row i draws from its own generator seeded with row_seeds[i] if given (one per prompt), else RowSeed(seed, i).
  // A row's tokens depend only on its prompt and its row seed, not on its batch-mates or the batch's padding.
  uint64_t seed = 0;
  std::vector<uint64_t> row_seeds;
  // Asked after every step for each running row (its index in the prompts): true drops the row from the batch at
  // once (FinishReason::kAbandoned, its tokens so far kept), so work whose caller gave up stops costing compute.
  // Null: rows run to their end.
  std::function<bool(int64_t row)> abandoned;
};

// The seed of row `row` of a batch sampled with `seed` (SplitMix64 of both).
uint64_t RowSeed(uint64_t seed, int64_t row);

struct GeneratedSequence {
  // Response tokens (prompt excluded), including the EOS token or the tokens that completed a stop sequence/string.
  std::vector<int64_t> tokens;
  // logprobs[i] = log softmax(logits / temperature)[tokens[i]] over the full vocabulary: the temperature-scaled
  // distribution, before top-k/top-p truncation (what PPO recomputes, and what ScoreLogProbs returns for the same
  // temperature). With temperature 0 (greedy) it is taken at temperature 1.
  std::vector<float> logprobs;
  FinishReason finish_reason = FinishReason::kLength;
};

// Samples continuations of a batch of prompts. Prompts of different lengths are left-padded internally (padding is
// masked out and position ids start at 0 for every row), all rows are decoded together with a KV cache written in
// place, logits are computed for the last position only, and the work runs under InferenceMode.
// Not thread-safe (it owns the cache, which it keeps between calls and reuses when large enough); the model may be
// shared by several samplers. Finished rows leave the batch (KvCache rows compacted), so a batch whose rows stop
// early costs only what its running rows cost.
class Sampler {
 public:
  // `model` must outlive the sampler.
  static absl::StatusOr<std::unique_ptr<Sampler>> Create(const CausalLm* model);
  ~Sampler();

  // One GeneratedSequence per prompt, in order. InvalidArgument for an empty prompt list or prompt, ids outside the
  // vocabulary, prompt + max_new_tokens beyond max_position_embeddings, or bad options.
  absl::StatusOr<std::vector<GeneratedSequence>> Generate(const std::vector<std::vector<int64_t>>& prompts,
                                                          const SamplingOptions& options);
  // The same without a cache: every step runs the full forward over prompt + tokens so far (a baseline for
  // benchmarks and the reference for parity tests). Same tokens as Generate for the same options.
  absl::StatusOr<std::vector<GeneratedSequence>> GenerateWithoutCache(const std::vector<std::vector<int64_t>>& prompts,
                                                                      const SamplingOptions& options);

 private:
  struct State;
  explicit Sampler(const CausalLm* model);
  absl::StatusOr<std::vector<GeneratedSequence>> Run(const std::vector<std::vector<int64_t>>& prompts,
                                                     const SamplingOptions& options, bool use_cache);

  const CausalLm* model_;
  std::unique_ptr<State> state_;
};

struct ScoreRequest {
  std::vector<int64_t> prompt;    // at least one token
  std::vector<int64_t> response;  // may be empty
};

struct ScoreOptions {
  double temperature = 1.0;  // logits are divided by it (must be > 0)
};

// Per-token log-probabilities of each response given its prompt: result[i][j] =
// log softmax(logits / temperature)[response[j]] at the position before response[j]. All rows in one batched
// forward (inference mode, right-padded), the LM head only on response positions. For the reference-logprob
// service and PPO's old log-probs.
absl::StatusOr<std::vector<std::vector<float>>> ScoreLogProbs(const CausalLm& model,
                                                              const std::vector<ScoreRequest>& rows,
                                                              const ScoreOptions& options = {});

}  // namespace rlhf::model

#endif  // RLHF_COMMON_MODEL_SAMPLER_H_
