#include "common/training/reward_trainer.h"

#include <algorithm>
#include <chrono>

#include <ATen/ops/cat.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/tensor.h>
#include <c10/core/GradMode.h>

#include "absl/strings/str_cat.h"
#include "common/model/token_ids.h"
#include "common/model/torch_boundary.h"
#include "common/rl/lm_losses.h"
#include "common/util/status_macros.h"

namespace rlhf::training {
namespace {

absl::Status ValidateGroups(const model::ModelConfig& config, const std::vector<ComparisonGroup>& groups,
                            const std::string& field) {
  for (size_t i = 0; i < groups.size(); ++i) {
    const ComparisonGroup& g = groups[i];
    const std::string at = absl::StrCat(field, "[", i, "]");
    if (g.prompt.empty()) return absl::InvalidArgumentError(at + ".prompt is empty");
    if (g.responses.size() < 2) return absl::InvalidArgumentError(at + " has fewer than 2 responses");
    if (g.pairs.empty()) return absl::InvalidArgumentError(at + " has no pair (all responses tied)");
    for (const auto& [w, l] : g.pairs) {
      const int32_t k = static_cast<int32_t>(g.responses.size());
      if (w < 0 || w >= k || l < 0 || l >= k || w == l) {
        return absl::InvalidArgumentError(absl::StrCat(at, " has a pair (", w, ", ", l, ") outside its ", k, " responses"));
      }
    }
    RETURN_IF_ERROR(model::CheckTokenIds(g.prompt, config.vocab_size, at + ".prompt"));
    for (size_t r = 0; r < g.responses.size(); ++r) {
      const std::string response = absl::StrCat(at, ".responses[", r, "]");
      const int64_t n = static_cast<int64_t>(g.prompt.size() + g.responses[r].size());
      RETURN_IF_ERROR(model::CheckSequenceLength(n, config.max_position_embeddings, response, " with its prompt"));
      RETURN_IF_ERROR(model::CheckTokenIds(g.responses[r], config.vocab_size, response));
    }
  }
  return absl::OkStatus();
}

// Scores of every response of `groups` (in group order, then response order), in forwards of at most `max_rows`.
absl::StatusOr<at::Tensor> GroupScores(const model::CausalLm& model, const std::vector<const ComparisonGroup*>& groups,
                                       int32_t max_rows) {
  std::vector<PromptResponse> rows;
  for (const ComparisonGroup* g : groups) {
    for (const auto& response : g->responses) rows.push_back({g->prompt, response});
  }
  std::vector<at::Tensor> parts;
  for (size_t start = 0; start < rows.size(); start += max_rows) {
    std::vector<const PromptResponse*> chunk;
    for (size_t i = start; i < std::min(rows.size(), start + max_rows); ++i) chunk.push_back(&rows[i]);
    PackedBatch batch = PackPromptResponses(chunk, model.device());
    model::ForwardOptions fo;
    fo.logits = false;
    fo.rewards = true;
    ASSIGN_OR_RETURN(model::ForwardOutput out, model.Forward(batch.ids, batch.mask, fo));
    parts.push_back(out.rewards);
  }
  return parts.size() == 1 ? parts[0] : at::cat(parts);
}

// Indices of each pair's winner and loser into the flat score vector of GroupScores.
std::pair<at::Tensor, at::Tensor> PairIndices(const std::vector<const ComparisonGroup*>& groups, c10::Device device) {
  std::vector<int64_t> winners, losers;
  int64_t offset = 0;
  for (const ComparisonGroup* g : groups) {
    for (const auto& [w, l] : g->pairs) {
      winners.push_back(offset + w);
      losers.push_back(offset + l);
    }
    offset += static_cast<int64_t>(g->responses.size());
  }
  const auto opts = at::TensorOptions().dtype(at::kLong);
  return {at::tensor(winners, opts).to(device), at::tensor(losers, opts).to(device)};
}

absl::StatusOr<rl::RankingLossResult> BatchLoss(const model::CausalLm& model,
                                                const std::vector<const ComparisonGroup*>& groups, int32_t max_rows) {
  ASSIGN_OR_RETURN(at::Tensor scores, GroupScores(model, groups, max_rows));
  auto [winners, losers] = PairIndices(groups, model.device());
  return rl::PairwiseRankingLoss(scores.index_select(0, winners), scores.index_select(0, losers));
}

}  // namespace

absl::StatusOr<PairwiseMetrics> EvaluatePairs(const model::CausalLm& model, const std::vector<ComparisonGroup>& groups,
                                              int32_t max_sequences_per_forward) {
  if (groups.empty()) return absl::InvalidArgumentError("no comparisons to evaluate");
  RETURN_IF_ERROR(ValidateGroups(model.config(), groups, "groups"));
  return model::TorchBoundary("EvaluatePairs", [&]() -> absl::StatusOr<PairwiseMetrics> {
    c10::NoGradGuard no_grad;
    PairwiseMetrics m;
    double loss_sum = 0, right = 0;
    const size_t chunk = std::max<size_t>(1, static_cast<size_t>(max_sequences_per_forward) / 4);
    for (size_t start = 0; start < groups.size(); start += chunk) {
      std::vector<const ComparisonGroup*> part;
      for (size_t i = start; i < std::min(groups.size(), start + chunk); ++i) part.push_back(&groups[i]);
      ASSIGN_OR_RETURN(rl::RankingLossResult r, BatchLoss(model, part, max_sequences_per_forward));
      loss_sum += r.loss.item<double>() * static_cast<double>(r.num_pairs);
      right += r.accuracy * static_cast<double>(r.num_pairs);
      m.pairs += r.num_pairs;
    }
    m.loss = loss_sum / static_cast<double>(m.pairs);
    m.accuracy = right / static_cast<double>(m.pairs);
    return m;
  });
}

absl::StatusOr<RewardTrainingResult> TrainRewardModel(model::CausalLm& model, const std::vector<ComparisonGroup>& train,
                                                      const std::vector<ComparisonGroup>& validation,
                                                      const RewardTrainingOptions& options,
                                                      const ProgressSink& progress) {
  if (!model.has_reward_head()) return absl::InvalidArgumentError("the model has no reward head");
  if (train.empty()) return absl::InvalidArgumentError("no training comparisons");
  if (options.epochs <= 0) return absl::InvalidArgumentError("epochs must be > 0");
  if (options.prompts_per_batch <= 0) return absl::InvalidArgumentError("prompts_per_batch must be > 0");
  if (options.max_sequences_per_forward <= 0) return absl::InvalidArgumentError("max_sequences_per_forward must be > 0");
  RETURN_IF_ERROR(ValidateGroups(model.config(), train, "train"));
  RETURN_IF_ERROR(ValidateGroups(model.config(), validation, "validation"));
  const int64_t steps_per_epoch =
      (static_cast<int64_t>(train.size()) + options.prompts_per_batch - 1) / options.prompts_per_batch;
  const int64_t total_steps = steps_per_epoch * options.epochs;
  OptimizerOptions optimizer_options = options.optimizer;
  if (optimizer_options.total_steps == 0) optimizer_options.total_steps = total_steps;
  ASSIGN_OR_RETURN(std::unique_ptr<AdamW> optimizer, AdamW::Create(model.NamedParameters(), optimizer_options));

  return model::TorchBoundary("TrainRewardModel", [&]() -> absl::StatusOr<RewardTrainingResult> {
    model.SetTraining(false);  // dropout off: the scores of one batch are compared with each other
    RewardTrainingResult result;
    const auto start = std::chrono::steady_clock::now();
    int64_t prompts_seen = 0;
    auto evaluate = [&](std::map<std::string, double>& metrics) -> absl::Status {
      if (validation.empty()) return absl::OkStatus();
      ASSIGN_OR_RETURN(PairwiseMetrics m, EvaluatePairs(model, validation, options.max_sequences_per_forward));
      metrics["val/loss"] = m.loss;
      metrics["val/accuracy"] = m.accuracy;
      return absl::OkStatus();
    };
    for (int32_t epoch = 1; epoch <= options.epochs; ++epoch) {
      const std::vector<int64_t> order = SeededPermutation(static_cast<int64_t>(train.size()), options.seed + epoch);
      for (int64_t s = 0; s < steps_per_epoch; ++s) {
        const int64_t begin = s * options.prompts_per_batch;
        const int64_t end = std::min<int64_t>(begin + options.prompts_per_batch, static_cast<int64_t>(train.size()));
        // Split the batch's prompts into forwards of at most max_sequences_per_forward rows; each part's loss is
        // weighted by its share of the batch's pairs, so the step's gradient is that of the mean over all pairs.
        std::vector<std::vector<const ComparisonGroup*>> parts(1);
        int64_t rows = 0, total_pairs = 0;
        for (int64_t i = begin; i < end; ++i) {
          const ComparisonGroup* g = &train[order[i]];
          const int64_t k = static_cast<int64_t>(g->responses.size());
          if (rows > 0 && rows + k > options.max_sequences_per_forward) {
            parts.emplace_back();
            rows = 0;
          }
          parts.back().push_back(g);
          rows += k;
          total_pairs += static_cast<int64_t>(g->pairs.size());
        }
        double loss_sum = 0, right = 0;
        for (const auto& part : parts) {
          ASSIGN_OR_RETURN(rl::RankingLossResult r, BatchLoss(model, part, options.max_sequences_per_forward));
          const double weight = static_cast<double>(r.num_pairs) / static_cast<double>(total_pairs);
          (r.loss * weight).backward();
          loss_sum += r.loss.item<double>() * weight;
          right += r.accuracy * weight;
        }
        ASSIGN_OR_RETURN(OptimizerStep opt, optimizer->Step());
        prompts_seen += end - begin;
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        TrainingProgress event;
        event.epoch = epoch;
        event.step = optimizer->steps();
        event.total_steps = total_steps;
        event.metrics = {{"train/loss", loss_sum},
                         {"train/accuracy", right},
                         {"train/lr", opt.learning_rate},
                         {"train/grad_norm", opt.grad_norm},
                         {"train/examples_per_second", seconds > 0 ? prompts_seen / seconds : 0.0}};
        const bool epoch_end = s + 1 == steps_per_epoch;
        if ((options.eval_interval_steps > 0 && event.step % options.eval_interval_steps == 0) ||
            (options.eval_interval_steps == 0 && epoch_end)) {
          RETURN_IF_ERROR(evaluate(event.metrics));
        }
        for (const auto& [k, v] : event.metrics) result.metrics[k] = v;
        if (progress) RETURN_IF_ERROR(progress(event));
      }
    }
    if (!validation.empty() && !result.metrics.count("val/loss")) RETURN_IF_ERROR(evaluate(result.metrics));
    result.steps = optimizer->steps();
    return result;
  });
}

absl::StatusOr<std::vector<float>> ScoreSequences(const model::CausalLm& model,
                                                  const std::vector<PromptResponse>& sequences, int32_t batch_size) {
  if (!model.has_reward_head()) return absl::InvalidArgumentError("the model has no reward head");
  if (batch_size <= 0) return absl::InvalidArgumentError("batch_size must be > 0");
  RETURN_IF_ERROR(ValidateExamples(model.config(), sequences, "sequences", /*allow_empty_response=*/true));
  return model::TorchBoundary("ScoreSequences", [&]() -> absl::StatusOr<std::vector<float>> {
    c10::NoGradGuard no_grad;
    std::vector<float> out;
    out.reserve(sequences.size());
    for (size_t start = 0; start < sequences.size(); start += batch_size) {
      std::vector<const PromptResponse*> rows;
      for (size_t i = start; i < std::min(sequences.size(), start + batch_size); ++i) rows.push_back(&sequences[i]);
      PackedBatch batch = PackPromptResponses(rows, model.device());
      model::ForwardOptions fo;
      fo.logits = false;
      fo.rewards = true;
      ASSIGN_OR_RETURN(model::ForwardOutput res, model.Forward(batch.ids, batch.mask, fo));
      at::Tensor cpu = res.rewards.to(at::kCPU, at::kFloat).contiguous();
      out.insert(out.end(), cpu.data_ptr<float>(), cpu.data_ptr<float>() + cpu.numel());
    }
    return out;
  });
}

absl::StatusOr<double> RewardBias(const model::CausalLm& model) {
  for (const model::NamedTensor& p : model.NamedParameters()) {
    if (p.name == "score.bias") {
      return model::TorchBoundary("RewardBias", [&]() -> absl::StatusOr<double> { return p.tensor.item<double>(); });
    }
  }
  return absl::InvalidArgumentError("the model has no reward head (score.bias)");
}

absl::StatusOr<double> NormalizeRewardModel(model::CausalLm& model, const std::vector<PromptResponse>& demonstrations) {
  if (demonstrations.empty()) return absl::InvalidArgumentError("no demonstrations to normalise on");
  ASSIGN_OR_RETURN(std::vector<float> scores, ScoreSequences(model, demonstrations));
  double mean = 0;
  for (float s : scores) mean += s;
  mean /= static_cast<double>(scores.size());
  for (const model::NamedTensor& p : model.NamedParameters()) {
    if (p.name != "score.bias") continue;
    return model::TorchBoundary("NormalizeRewardModel", [&]() -> absl::StatusOr<double> {
      c10::NoGradGuard no_grad;
      p.tensor.sub_(mean);
      return p.tensor.item<double>();
    });
  }
  return absl::InvalidArgumentError("the model has no reward head (score.bias)");
}

}  // namespace rlhf::training
