// Supervised fine-tuning (InstructGPT step 1) and plain language-model training: next-token loss on the response
// tokens only (the prompt is context, not a target), AdamW with warmup and cosine decay, gradient accumulation and
// clipping, dropout, validation loss per epoch (or every N steps), per-epoch checkpoints and the choice of the kept
// epoch. Pretraining is the same loop with a one-token prompt (BOS) and the text as the response.
#ifndef RLHF_COMMON_TRAINING_SFT_TRAINER_H_
#define RLHF_COMMON_TRAINING_SFT_TRAINER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/causal_lm.h"
#include "common/training/batch.h"
#include "common/training/events.h"
#include "common/training/optimizer.h"

namespace rlhf::training {

enum class EpochSelection {
  kLast,            // the last epoch's weights
  kValidationLoss,  // the epoch with the lowest validation loss
  kScore,           // the epoch with the highest SftOptions::epoch_score (e.g. mean reward of sampled responses)
};

struct SftOptions {
  int32_t epochs = 16;                 // InstructGPT: 16
  int32_t batch_size = 16;             // examples per micro-batch
  int32_t grad_accumulation_steps = 1;
  OptimizerOptions optimizer;          // total_steps 0: computed from epochs (and max_steps)
  double dropout = 0.2;                // resid/embd/attn dropout while training (InstructGPT: 0.2)
  uint64_t seed = 0;                   // shuffling and dropout
  int64_t max_steps = 0;               // stop after this many optimiser steps; 0: no cap
  int32_t eval_interval_steps = 0;     // validation every N steps; 0: at the end of each epoch
  // Per-epoch checkpoints "<checkpoint_dir>/epoch-<n>" (CausalLm::Save, plus `save_extra` for e.g. tokenizer
  // files) when non-empty.
  std::string checkpoint_dir;
  std::function<absl::Status(const std::string& dir)> save_extra;
  EpochSelection selection = EpochSelection::kLast;
  std::function<absl::StatusOr<double>(const model::CausalLm&)> epoch_score;  // kScore only
};

struct SftResult {
  int32_t selected_epoch = 0;           // 1-based
  std::string selected_checkpoint;      // empty without checkpoint_dir
  int64_t steps = 0;
  std::map<std::string, double> metrics;  // final: train/loss, val/loss (if any), val/score (kScore)
  std::vector<double> epoch_validation_loss;  // one per epoch run (empty without validation data)
};

// Trains `model` in place; at the end it holds the selected epoch's weights and is in eval mode.
// InvalidArgument for empty training data, an example with an empty prompt or response, a sequence longer than
// max_position_embeddings (naming train[i] / validation[i]), bad options (naming the field), or a selection that needs what is
// missing (validation data, epoch_score).
absl::StatusOr<SftResult> TrainSft(model::CausalLm& model, const std::vector<PromptResponse>& train,
                                   const std::vector<PromptResponse>& validation, const SftOptions& options,
                                   const ProgressSink& progress);

// Mean response-token NLL (nats per token) of `examples` under `model`, in eval mode, no gradient.
absl::StatusOr<double> EvaluateResponseLoss(const model::CausalLm& model, const std::vector<PromptResponse>& examples,
                                            int32_t batch_size);

}  // namespace rlhf::training

#endif  // RLHF_COMMON_TRAINING_SFT_TRAINER_H_
