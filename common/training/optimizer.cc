#include "common/training/optimizer.h"

#include <cmath>
#include <utility>

#include <ATen/ops/sqrt.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>

#include "absl/strings/str_cat.h"
#include "common/model/torch_boundary.h"
#include "common/util/status_macros.h"

namespace rlhf::training {
namespace {

absl::Status Field(const std::string& prefix, const char* name, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(prefix, ".", name, " ", reason));
}

}  // namespace

absl::Status ValidateOptimizerOptions(const OptimizerOptions& o, const std::string& field) {
  if (!(o.learning_rate > 0) || !std::isfinite(o.learning_rate)) {
    return Field(field, "learning_rate", absl::StrCat("must be > 0, got ", o.learning_rate));
  }
  if (o.warmup_steps < 0) return Field(field, "warmup_steps", absl::StrCat("must be >= 0, got ", o.warmup_steps));
  if (!(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1)) {
    return Field(field, "min_lr_ratio", absl::StrCat("must be in [0, 1], got ", o.min_lr_ratio));
  }
  if (o.total_steps < 0) return Field(field, "total_steps", absl::StrCat("must be >= 0, got ", o.total_steps));
  if (!(o.weight_decay >= 0) || !std::isfinite(o.weight_decay)) {
    return Field(field, "weight_decay", absl::StrCat("must be >= 0, got ", o.weight_decay));
  }
  if (!(o.beta1 >= 0 && o.beta1 < 1)) return Field(field, "adam_beta1", absl::StrCat("must be in [0, 1), got ", o.beta1));
  if (!(o.beta2 >= 0 && o.beta2 < 1)) return Field(field, "adam_beta2", absl::StrCat("must be in [0, 1), got ", o.beta2));
  if (!(o.epsilon > 0)) return Field(field, "adam_epsilon", absl::StrCat("must be > 0, got ", o.epsilon));
  if (!(o.max_grad_norm >= 0) || !std::isfinite(o.max_grad_norm)) {
    return Field(field, "max_grad_norm", absl::StrCat("must be >= 0, got ", o.max_grad_norm));
  }
  return absl::OkStatus();
}

double ScheduledLearningRate(const OptimizerOptions& o, int64_t step) {
  if (o.warmup_steps > 0 && step < o.warmup_steps) {
    return o.learning_rate * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  }
  if (o.total_steps <= 0 || o.total_steps <= o.warmup_steps) return o.learning_rate;
  const double span = static_cast<double>(o.total_steps - o.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - o.warmup_steps) / span);
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return o.learning_rate * (o.min_lr_ratio + (1.0 - o.min_lr_ratio) * cosine);
}

AdamW::AdamW(std::vector<model::NamedTensor> parameters, const OptimizerOptions& options)
    : parameters_(std::move(parameters)), options_(options) {
  c10::NoGradGuard no_grad;
  for (const model::NamedTensor& p : parameters_) {
    exp_avg_.push_back(at::zeros_like(p.tensor));
    exp_avg_sq_.push_back(at::zeros_like(p.tensor));
    decay_.push_back(p.tensor.dim() >= 2);
  }
}

absl::StatusOr<std::unique_ptr<AdamW>> AdamW::Create(std::vector<model::NamedTensor> parameters,
                                                     const OptimizerOptions& options) {
  RETURN_IF_ERROR(ValidateOptimizerOptions(options));
  if (parameters.empty()) return absl::InvalidArgumentError("AdamW: no parameters to optimise");
  return model::TorchBoundary("AdamW::Create", [&]() -> absl::StatusOr<std::unique_ptr<AdamW>> {
    return std::unique_ptr<AdamW>(new AdamW(std::move(parameters), options));
  });
}

absl::Status AdamW::SetOptions(const OptimizerOptions& options) {
  RETURN_IF_ERROR(ValidateOptimizerOptions(options));
  options_ = options;
  return absl::OkStatus();
}

void AdamW::ZeroGrad() {
  for (model::NamedTensor& p : parameters_) {
    if (p.tensor.grad().defined()) p.tensor.mutable_grad().reset();
  }
}

absl::StatusOr<OptimizerStep> AdamW::Step() {
  return model::TorchBoundary("AdamW::Step", [&]() -> absl::StatusOr<OptimizerStep> {
    c10::NoGradGuard no_grad;
    std::vector<at::Tensor> norms;
    for (const model::NamedTensor& p : parameters_) {
      if (p.tensor.grad().defined()) norms.push_back(p.tensor.grad().detach().pow(2).sum());
    }
    OptimizerStep out;
    out.learning_rate = ScheduledLearningRate(options_, steps_);
    if (norms.empty()) {
      ++steps_;
      return out;
    }
    out.grad_norm = std::sqrt(at::stack(norms).sum().item<double>());
    if (!std::isfinite(out.grad_norm)) {
      ZeroGrad();
      return absl::InvalidArgumentError(absl::StrCat("gradient norm is not finite (", out.grad_norm,
                                                     "); the step was skipped: lower the learning rate"));
    }
    double scale = 1.0;
    if (options_.max_grad_norm > 0 && out.grad_norm > options_.max_grad_norm) {
      scale = options_.max_grad_norm / (out.grad_norm + 1e-6);
    }
    const int64_t t = steps_ + 1;
    const double lr = out.learning_rate;
    const double bias1 = 1.0 - std::pow(options_.beta1, static_cast<double>(t));
    const double bias2 = 1.0 - std::pow(options_.beta2, static_cast<double>(t));
    for (size_t i = 0; i < parameters_.size(); ++i) {
      at::Tensor& param = parameters_[i].tensor;
      if (!param.grad().defined()) continue;
      at::Tensor grad = param.grad().detach();
      if (scale != 1.0) grad = grad * scale;
      if (decay_[i] && options_.weight_decay > 0) param.mul_(1.0 - lr * options_.weight_decay);
      exp_avg_[i].mul_(options_.beta1).add_(grad, 1.0 - options_.beta1);
      exp_avg_sq_[i].mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
      at::Tensor denom = (exp_avg_sq_[i] / bias2).sqrt_().add_(options_.epsilon);
      param.addcdiv_(exp_avg_[i], denom, -lr / bias1);
    }
    ZeroGrad();
    ++steps_;
    return out;
  });
}

std::map<std::string, at::Tensor> AdamW::StateTensors() const {
  std::map<std::string, at::Tensor> out;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    out["exp_avg." + parameters_[i].name] = exp_avg_[i];
    out["exp_avg_sq." + parameters_[i].name] = exp_avg_sq_[i];
  }
  return out;
}

absl::Status AdamW::RestoreState(const std::map<std::string, at::Tensor>& tensors, int64_t steps) {
  if (steps < 0) return absl::InvalidArgumentError(absl::StrCat("optimizer steps must be >= 0, got ", steps));
  // Check everything first, so a bad state changes nothing.
  for (size_t i = 0; i < parameters_.size(); ++i) {
    for (const char* kind : {"exp_avg.", "exp_avg_sq."}) {
      const std::string name = kind + parameters_[i].name;
      auto it = tensors.find(name);
      if (it == tensors.end()) return absl::InvalidArgumentError(absl::StrCat("optimizer state lacks ", name));
      if (it->second.sizes() != parameters_[i].tensor.sizes()) {
        return absl::InvalidArgumentError(absl::StrCat("optimizer state ", name, " has the wrong shape"));
      }
    }
  }
  return model::TorchBoundary("AdamW::RestoreState", [&]() -> absl::Status {
    c10::NoGradGuard no_grad;
    for (size_t i = 0; i < parameters_.size(); ++i) {
      const at::Tensor& param = parameters_[i].tensor;
      exp_avg_[i].copy_(tensors.at("exp_avg." + parameters_[i].name).to(param.device(), param.scalar_type()));
      exp_avg_sq_[i].copy_(tensors.at("exp_avg_sq." + parameters_[i].name).to(param.device(), param.scalar_type()));
    }
    steps_ = steps;
    return absl::OkStatus();
  });
}

}  // namespace rlhf::training
