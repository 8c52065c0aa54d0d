// AdamW (Loshchilov & Hutter, decoupled weight decay) with linear warmup, cosine decay and global gradient-norm
// clipping: the optimiser of every training stage (SFT, reward model, PPO policy and value). Its state is a set of
// named tensors, so it is saved in safetensors beside the weights and a resumed run continues exactly.
#ifndef RLHF_COMMON_TRAINING_OPTIMIZER_H_
#define RLHF_COMMON_TRAINING_OPTIMIZER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model/causal_lm.h"

namespace rlhf::training {

struct OptimizerOptions {
  double learning_rate = 1e-4;  // peak, reached after warmup; > 0
  int64_t warmup_steps = 0;     // linear warmup from 0
  // Cosine decay from learning_rate to learning_rate * min_lr_ratio at total_steps; 1 = constant. In [0, 1].
  double min_lr_ratio = 0.1;
  // Steps of the whole schedule. 0: no decay (constant after warmup), e.g. for PPO whose length is open-ended.
  int64_t total_steps = 0;
  double weight_decay = 0.0;  // decoupled; applied to matrices only (not to biases, LayerNorm or heads' biases)
  double beta1 = 0.9;
  double beta2 = 0.95;  // InstructGPT appendix C
  double epsilon = 1e-8;
  double max_grad_norm = 0.0;  // clip the global L2 norm of the gradient; 0: none
};

// InvalidArgument naming the field ("optimizer.learning_rate must be > 0, got -1").
absl::Status ValidateOptimizerOptions(const OptimizerOptions& options, const std::string& field = "optimizer");

// The learning rate of optimiser step `step` (0-based): linear warmup over warmup_steps, then cosine decay to
// min_lr_ratio * learning_rate at total_steps (clamped there).
double ScheduledLearningRate(const OptimizerOptions& options, int64_t step);

struct OptimizerStep {
  double learning_rate = 0;
  double grad_norm = 0;  // global L2 norm before clipping
};

// Thread safety: none; the trainer owns it.
class AdamW {
 public:
  // `parameters` are leaf tensors with requires_grad (CausalLm::NamedParameters()).
  static absl::StatusOr<std::unique_ptr<AdamW>> Create(std::vector<model::NamedTensor> parameters,
                                                       const OptimizerOptions& options);

  // Clips the gradients, applies one update at ScheduledLearningRate(steps()), zeroes the gradients. Parameters
  // without a gradient are left alone. InvalidArgument when the gradient norm is not finite (nothing changes).
  absl::StatusOr<OptimizerStep> Step();
  void ZeroGrad();

  int64_t steps() const { return steps_; }
  const OptimizerOptions& options() const { return options_; }
  // Replaces the schedule (e.g. a new stage on the same weights); the moments are kept.
  absl::Status SetOptions(const OptimizerOptions& options);

  // The moments by name ("exp_avg.<param>", "exp_avg_sq.<param>"), for checkpoints; with steps() they are the
  // whole state.
  std::map<std::string, at::Tensor> StateTensors() const;
  // Restores StateTensors() and the step count. InvalidArgument naming a missing or misshapen tensor.
  absl::Status RestoreState(const std::map<std::string, at::Tensor>& tensors, int64_t steps);

 private:
  AdamW(std::vector<model::NamedTensor> parameters, const OptimizerOptions& options);

  std::vector<model::NamedTensor> parameters_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  std::vector<bool> decay_;
  OptimizerOptions options_;
  int64_t steps_ = 0;
};

}  // namespace rlhf::training

#endif  // RLHF_COMMON_TRAINING_OPTIMIZER_H_
