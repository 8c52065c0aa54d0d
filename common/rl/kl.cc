#include "common/rl/kl.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace rlhf::rl {
namespace {

absl::Status CheckUpdateArgs(double current_kl, int64_t n_steps) {
  if (!std::isfinite(current_kl)) {
    return absl::InvalidArgumentError(absl::StrCat("current_kl must be finite, got ", current_kl));
  }
  if (n_steps < 0) return absl::InvalidArgumentError(absl::StrCat("n_steps must be >= 0, got ", n_steps));
  return absl::OkStatus();
}

absl::Status CheckState(const KlControllerState& state) {
  if (!std::isfinite(state.beta) || state.beta < 0) {
    return absl::InvalidArgumentError(absl::StrCat("state.beta must be finite and >= 0, got ", state.beta));
  }
  if (state.total_steps < 0) {
    return absl::InvalidArgumentError(absl::StrCat("state.total_steps must be >= 0, got ", state.total_steps));
  }
  return absl::OkStatus();
}

absl::Status CheckPositive(double value, absl::string_view name) {
  if (!std::isfinite(value) || value <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be finite and > 0, got ", value));
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view KlEstimatorName(KlEstimator estimator) {
  switch (estimator) {
    case KlEstimator::kK1:
      return "k1";
    case KlEstimator::kK2:
      return "k2";
    case KlEstimator::kK3:
      return "k3";
  }
  return "unknown";
}

absl::StatusOr<KlEstimator> ParseKlEstimator(absl::string_view name) {
  for (KlEstimator e : {KlEstimator::kK1, KlEstimator::kK2, KlEstimator::kK3}) {
    if (name == KlEstimatorName(e)) return e;
  }
  return absl::InvalidArgumentError(absl::StrCat("KL estimator \"", name, "\" is not one of k1, k2, k3"));
}

absl::string_view KlControlModeName(KlControlMode mode) {
  switch (mode) {
    case KlControlMode::kFixed:
      return "fixed";
    case KlControlMode::kAdaptive:
      return "adaptive";
  }
  return "unknown";
}

absl::StatusOr<KlControlMode> ParseKlControlMode(absl::string_view name) {
  for (KlControlMode m : {KlControlMode::kFixed, KlControlMode::kAdaptive}) {
    if (name == KlControlModeName(m)) return m;
  }
  return absl::InvalidArgumentError(absl::StrCat("KL control mode \"", name, "\" is not one of fixed, adaptive"));
}

absl::StatusOr<std::unique_ptr<FixedKlController>> FixedKlController::Create(double beta) {
  if (!std::isfinite(beta) || beta < 0) {
    return absl::InvalidArgumentError(absl::StrCat("beta must be finite and >= 0, got ", beta));
  }
  return std::unique_ptr<FixedKlController>(new FixedKlController(beta));
}

absl::Status FixedKlController::Update(double current_kl, int64_t n_steps) {
  if (absl::Status s = CheckUpdateArgs(current_kl, n_steps); !s.ok()) return s;
  total_steps_ += n_steps;
  return absl::OkStatus();
}

absl::Status FixedKlController::Restore(const KlControllerState& state) {
  if (absl::Status s = CheckState(state); !s.ok()) return s;
  beta_ = state.beta;
  total_steps_ = state.total_steps;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<AdaptiveKlController>> AdaptiveKlController::Create(const AdaptiveKlOptions& options) {
  if (absl::Status s = CheckPositive(options.init_beta, "init_beta"); !s.ok()) return s;
  if (absl::Status s = CheckPositive(options.target_kl, "target_kl"); !s.ok()) return s;
  if (absl::Status s = CheckPositive(options.horizon, "horizon"); !s.ok()) return s;
  return std::unique_ptr<AdaptiveKlController>(new AdaptiveKlController(options));
}

absl::Status AdaptiveKlController::Update(double current_kl, int64_t n_steps) {
  if (absl::Status s = CheckUpdateArgs(current_kl, n_steps); !s.ok()) return s;
  // Ziegler et al. 2019, sec. 2.2: e_t = clip((KL_t - KL_target) / KL_target, -0.2, 0.2).
  const double proportional_error =
      std::clamp(current_kl / options_.target_kl - 1.0, -kMaxProportionalError, kMaxProportionalError);
  beta_ *= 1.0 + proportional_error * static_cast<double>(n_steps) / options_.horizon;
  total_steps_ += n_steps;
  return absl::OkStatus();
}

absl::Status AdaptiveKlController::Restore(const KlControllerState& state) {
  if (absl::Status s = CheckState(state); !s.ok()) return s;
  beta_ = state.beta;
  total_steps_ = state.total_steps;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KlController>> CreateKlController(const KlControllerOptions& options) {
  switch (options.mode) {
    case KlControlMode::kFixed: {
      auto controller = FixedKlController::Create(options.beta);
      if (!controller.ok()) return controller.status();
      return std::unique_ptr<KlController>(std::move(*controller));
    }
    case KlControlMode::kAdaptive: {
      auto controller = AdaptiveKlController::Create(options.adaptive);
      if (!controller.ok()) {
        return absl::Status(controller.status().code(), absl::StrCat("adaptive.", controller.status().message()));
      }
      return std::unique_ptr<KlController>(std::move(*controller));
    }
  }
  return absl::InvalidArgumentError("mode is not a KlControlMode");
}

}  // namespace rlhf::rl
