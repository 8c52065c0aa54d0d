#include "common/training/sft_trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include <ATen/ops/slice.h>
#include <c10/core/GradMode.h>
#include <torch/utils.h>

#include "absl/strings/str_cat.h"
#include "common/model/torch_boundary.h"
#include "common/rl/lm_losses.h"
#include "common/util/status_macros.h"

namespace rlhf::training {
namespace {

struct MicroBatchLoss {
  at::Tensor loss;  // mean over its response tokens
  int64_t tokens = 0;
};

absl::StatusOr<MicroBatchLoss> ResponseLoss(const model::CausalLm& model, const std::vector<const PromptResponse*>& rows) {
  PackedBatch batch = PackPromptResponses(rows, model.device());
  ASSIGN_OR_RETURN(model::ForwardOutput out, model.Forward(batch.ids, batch.mask));
  const int64_t t = batch.ids.size(1);
  at::Tensor logits = out.logits.slice(1, 0, t - 1);
  at::Tensor targets = batch.ids.slice(1, 1, t);
  ASSIGN_OR_RETURN(rl::LmLossResult loss, rl::ResponseNll(logits, targets, batch.response_mask.slice(1, 0, t - 1)));
  return MicroBatchLoss{loss.loss, loss.num_tokens};
}

// A copy of the weights, to come back to the selected epoch without a checkpoint on disk.
std::map<std::string, at::Tensor> CopyWeights(const model::CausalLm& model) {
  std::map<std::string, at::Tensor> copy;
  for (const model::NamedTensor& p : model.NamedParameters()) copy[p.name] = p.tensor.detach().clone();
  return copy;
}

void RestoreWeights(const std::map<std::string, at::Tensor>& copy, model::CausalLm& model) {
  c10::NoGradGuard no_grad;
  for (const model::NamedTensor& p : model.NamedParameters()) p.tensor.copy_(copy.at(p.name));
}

}  // namespace

absl::StatusOr<double> EvaluateResponseLoss(const model::CausalLm& model, const std::vector<PromptResponse>& examples,
                                            int32_t batch_size) {
  if (examples.empty()) return absl::InvalidArgumentError("no examples to evaluate");
  if (batch_size <= 0) return absl::InvalidArgumentError("batch_size must be > 0");
  return model::TorchBoundary("EvaluateResponseLoss", [&]() -> absl::StatusOr<double> {
    c10::NoGradGuard no_grad;
    double sum = 0;
    int64_t tokens = 0;
    for (size_t start = 0; start < examples.size(); start += batch_size) {
      std::vector<const PromptResponse*> rows;
      for (size_t i = start; i < std::min(examples.size(), start + batch_size); ++i) rows.push_back(&examples[i]);
      ASSIGN_OR_RETURN(MicroBatchLoss loss, ResponseLoss(model, rows));
      sum += loss.loss.item<double>() * static_cast<double>(loss.tokens);
      tokens += loss.tokens;
    }
    return sum / static_cast<double>(tokens);
  });
}

absl::StatusOr<SftResult> TrainSft(model::CausalLm& model, const std::vector<PromptResponse>& train,
                                   const std::vector<PromptResponse>& validation, const SftOptions& options,
                                   const ProgressSink& progress) {
  if (train.empty()) return absl::InvalidArgumentError("no training examples");
  if (options.epochs <= 0) return absl::InvalidArgumentError("epochs must be > 0");
  if (options.batch_size <= 0) return absl::InvalidArgumentError("batch_size must be > 0");
  if (options.grad_accumulation_steps <= 0) return absl::InvalidArgumentError("grad_accumulation_steps must be > 0");
  if (!(options.dropout >= 0 && options.dropout < 1)) return absl::InvalidArgumentError("dropout must be in [0, 1)");
  if (options.selection == EpochSelection::kValidationLoss && validation.empty()) {
    return absl::InvalidArgumentError("selection by validation loss needs validation examples");
  }
  if (options.selection == EpochSelection::kScore && !options.epoch_score) {
    return absl::InvalidArgumentError("selection by score needs an epoch scorer");
  }
  RETURN_IF_ERROR(ValidateExamples(model.config(), train, "train"));
  RETURN_IF_ERROR(ValidateExamples(model.config(), validation, "validation"));

  const int64_t examples_per_step = int64_t{options.batch_size} * options.grad_accumulation_steps;
  const int64_t steps_per_epoch = (static_cast<int64_t>(train.size()) + examples_per_step - 1) / examples_per_step;
  int64_t total_steps = steps_per_epoch * options.epochs;
  if (options.max_steps > 0) total_steps = std::min(total_steps, options.max_steps);
  OptimizerOptions optimizer_options = options.optimizer;
  if (optimizer_options.total_steps == 0) optimizer_options.total_steps = total_steps;
  ASSIGN_OR_RETURN(std::unique_ptr<AdamW> optimizer, AdamW::Create(model.NamedParameters(), optimizer_options));
  RETURN_IF_ERROR(model.SetDropout(options.dropout, options.dropout, options.dropout));

  return model::TorchBoundary("TrainSft", [&]() -> absl::StatusOr<SftResult> {
    torch::manual_seed(options.seed);
    SftResult result;
    double best = -std::numeric_limits<double>::infinity();
    std::map<std::string, at::Tensor> best_weights;
    const bool keep_best = options.selection != EpochSelection::kLast;
    const auto start = std::chrono::steady_clock::now();
    int64_t examples_seen = 0;
    bool stop = false;
    std::map<std::string, double> last_train;

    auto evaluate = [&](std::map<std::string, double>& metrics) -> absl::Status {
      if (validation.empty()) return absl::OkStatus();
      model.SetTraining(false);
      ASSIGN_OR_RETURN(double val_loss, EvaluateResponseLoss(model, validation, options.batch_size));
      model.SetTraining(true);
      metrics["val/loss"] = val_loss;
      return absl::OkStatus();
    };

    for (int32_t epoch = 1; epoch <= options.epochs && !stop; ++epoch) {
      const std::vector<int64_t> order = SeededPermutation(static_cast<int64_t>(train.size()), options.seed + epoch);
      model.SetTraining(true);
      for (int64_t step_in_epoch = 0; step_in_epoch < steps_per_epoch && !stop; ++step_in_epoch) {
        const int64_t begin = step_in_epoch * examples_per_step;
        const int64_t end = std::min<int64_t>(begin + examples_per_step, static_cast<int64_t>(train.size()));
        // Token-weighted accumulation: the step's loss is the mean over all response tokens of its micro-batches.
        std::vector<std::vector<const PromptResponse*>> micro;
        for (int64_t i = begin; i < end; i += options.batch_size) {
          std::vector<const PromptResponse*> rows;
          for (int64_t j = i; j < std::min(end, i + options.batch_size); ++j) rows.push_back(&train[order[j]]);
          micro.push_back(std::move(rows));
        }
        int64_t step_tokens = 0;
        for (const auto& rows : micro) {
          for (const PromptResponse* r : rows) step_tokens += static_cast<int64_t>(r->response.size());
        }
        double step_loss = 0;
        for (const auto& rows : micro) {
          ASSIGN_OR_RETURN(MicroBatchLoss loss, ResponseLoss(model, rows));
          const double weight = static_cast<double>(loss.tokens) / static_cast<double>(step_tokens);
          (loss.loss * weight).backward();
          step_loss += loss.loss.item<double>() * weight;
        }
        ASSIGN_OR_RETURN(OptimizerStep opt, optimizer->Step());
        examples_seen += end - begin;
        const double seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        TrainingProgress event;
        event.epoch = epoch;
        event.step = optimizer->steps();
        event.total_steps = total_steps;
        event.metrics = {{"train/loss", step_loss},
                         {"train/lr", opt.learning_rate},
                         {"train/grad_norm", opt.grad_norm},
                         {"train/examples_per_second", seconds > 0 ? examples_seen / seconds : 0.0}};
        last_train = event.metrics;
        if (options.eval_interval_steps > 0 && event.step % options.eval_interval_steps == 0) {
          RETURN_IF_ERROR(evaluate(event.metrics));
        }
        if (optimizer->steps() >= total_steps) stop = true;
        if (progress) RETURN_IF_ERROR(progress(event));
      }
      // End of epoch: validation, checkpoint, selection.
      model.SetTraining(false);
      TrainingProgress event;
      event.epoch = epoch;
      event.step = optimizer->steps();
      event.total_steps = total_steps;
      RETURN_IF_ERROR(evaluate(event.metrics));
      model.SetTraining(false);
      if (event.metrics.count("val/loss")) result.epoch_validation_loss.push_back(event.metrics["val/loss"]);
      double criterion = 0;
      if (options.selection == EpochSelection::kValidationLoss) criterion = -event.metrics["val/loss"];
      if (options.selection == EpochSelection::kScore) {
        ASSIGN_OR_RETURN(double score, options.epoch_score(model));
        event.metrics["val/reward_score"] = score;
        criterion = score;
      }
      if (!options.checkpoint_dir.empty()) {
        event.checkpoint_path = absl::StrCat(options.checkpoint_dir, "/epoch-", epoch);
        RETURN_IF_ERROR(model.Save(event.checkpoint_path, {{"rlhf.stage", "sft"}, {"rlhf.epoch", absl::StrCat(epoch)}}));
        if (options.save_extra) RETURN_IF_ERROR(options.save_extra(event.checkpoint_path));
      }
      if (options.selection == EpochSelection::kLast || criterion > best) {
        best = criterion;
        result.selected_epoch = epoch;
        result.selected_checkpoint = event.checkpoint_path;
        if (keep_best) best_weights = CopyWeights(model);
        result.metrics = event.metrics;
      }
      if (progress) RETURN_IF_ERROR(progress(event));
    }
    if (keep_best && !best_weights.empty()) RestoreWeights(best_weights, model);
    model.SetTraining(false);
    result.steps = optimizer->steps();
    for (const auto& [k, v] : last_train) result.metrics.emplace(k, v);
    return result;
  });
}

}  // namespace rlhf::training
