#include "common/rl/ppo_math.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/clamp.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/maximum.h>
#include <ATen/ops/zeros.h>

#include "absl/strings/str_cat.h"
#include "common/rl/tensor_checks.h"
#include "common/util/status_macros.h"

namespace rlhf::rl {
namespace {

using internal::BoolMask;
using internal::CheckFinite;
using internal::CheckFloatTensor;
using internal::CheckLike;
using internal::Guard;
using internal::ScatterValidOverZeros;
using internal::SelectValid;
using internal::ValidIndex;

constexpr char kSeqLayout[] = "[batch, seq]";

// The mask of a [B, T] per-token argument named `ref_name`.
absl::StatusOr<at::Tensor> SeqMask(const at::Tensor& mask, const at::Tensor& ref, const char* ref_name) {
  return BoolMask(mask, "mask", ref.sizes(), absl::StrCat("[batch, seq] like ", ref_name), ref, ref_name);
}

absl::Status CheckNonEmpty(int64_t n_valid, absl::string_view mask_name, int64_t needed = 1) {
  if (n_valid < needed) {
    return absl::InvalidArgumentError(
        absl::StrCat(mask_name, " has ", n_valid, " valid entries; at least ", needed, " needed"));
  }
  return absl::OkStatus();
}

// The elementwise estimators of kl.h on valid entries.
at::Tensor KlOfValid(const at::Tensor& logprobs, const at::Tensor& ref_logprobs, KlEstimator estimator) {
  const at::Tensor log_ratio = ref_logprobs - logprobs;  // log(pi_ref / pi)
  switch (estimator) {
    case KlEstimator::kK1:
      return -log_ratio;
    case KlEstimator::kK2:
      return 0.5 * log_ratio.square();
    case KlEstimator::kK3:
      return (log_ratio.exp() - 1) - log_ratio;
  }
  return at::Tensor();
}

absl::Status CheckEstimator(KlEstimator estimator) {
  switch (estimator) {
    case KlEstimator::kK1:
    case KlEstimator::kK2:
    case KlEstimator::kK3:
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("kl_estimator ", static_cast<int>(estimator), " is not a KlEstimator"));
}

absl::StatusOr<at::Tensor> KlPerTokenImpl(const at::Tensor& logprobs, const at::Tensor& ref_logprobs,
                                          const at::Tensor& mask, KlEstimator estimator) {
  RETURN_IF_ERROR(CheckFloatTensor(logprobs, "logprobs", 2, kSeqLayout));
  RETURN_IF_ERROR(CheckLike(ref_logprobs, "ref_logprobs", logprobs, "logprobs"));
  RETURN_IF_ERROR(CheckEstimator(estimator));
  ASSIGN_OR_RETURN(const at::Tensor valid, SeqMask(mask, logprobs, "logprobs"));
  const at::Tensor index = ValidIndex(valid);
  const at::Tensor lp = SelectValid(logprobs, index);
  const at::Tensor ref = SelectValid(ref_logprobs, index).to(lp.scalar_type());
  return ScatterValidOverZeros(KlOfValid(lp, ref, estimator), index, logprobs.sizes());
}

}  // namespace

absl::StatusOr<at::Tensor> KlPerToken(const at::Tensor& logprobs, const at::Tensor& ref_logprobs,
                                      const at::Tensor& mask, KlEstimator estimator) {
  return Guard("KlPerToken", [&] { return KlPerTokenImpl(logprobs, ref_logprobs, mask, estimator); });
}

absl::StatusOr<PerTokenRewardsResult> PerTokenRewards(const at::Tensor& logprobs, const at::Tensor& ref_logprobs,
                                                      const at::Tensor& scores, const at::Tensor& mask,
                                                      const at::Tensor& emitted_stop,
                                                      const PerTokenRewardsOptions& options) {
  return Guard("PerTokenRewards", [&]() -> absl::StatusOr<PerTokenRewardsResult> {
    RETURN_IF_ERROR(CheckFloatTensor(logprobs, "logprobs", 2, kSeqLayout));
    RETURN_IF_ERROR(CheckLike(ref_logprobs, "ref_logprobs", logprobs, "logprobs"));
    const int64_t batch = logprobs.size(0);
    const int64_t seq = logprobs.size(1);
    RETURN_IF_ERROR(CheckFloatTensor(scores, "scores", 1, "[batch]"));
    RETURN_IF_ERROR(internal::CheckShape(scores, "scores", {batch}, "[batch] of logprobs"));
    RETURN_IF_ERROR(internal::CheckSameDevice(scores, "scores", logprobs, "logprobs"));
    if (emitted_stop.defined()) {
      if (emitted_stop.scalar_type() != at::kBool) {
        return absl::InvalidArgumentError(absl::StrCat("emitted_stop must be bool, got dtype ",
                                                       std::string(c10::toString(emitted_stop.scalar_type()))));
      }
      RETURN_IF_ERROR(internal::CheckShape(emitted_stop, "emitted_stop", {batch}, "[batch] of logprobs"));
      RETURN_IF_ERROR(internal::CheckSameDevice(emitted_stop, "emitted_stop", logprobs, "logprobs"));
    }
    RETURN_IF_ERROR(CheckFinite(options.kl_beta, "kl_beta"));
    if (options.kl_beta < 0) {
      return absl::InvalidArgumentError(absl::StrCat("kl_beta must be >= 0, got ", options.kl_beta));
    }
    RETURN_IF_ERROR(CheckFinite(options.missing_stop_penalty, "missing_stop_penalty"));
    RETURN_IF_ERROR(CheckEstimator(options.kl_estimator));
    ASSIGN_OR_RETURN(const at::Tensor valid, SeqMask(mask, logprobs, "logprobs"));

    const at::Tensor valid_per_row = valid.sum(1);
    const at::Tensor empty_rows = valid_per_row.eq(0);
    if (empty_rows.any().item<bool>()) {
      const int64_t row = empty_rows.nonzero()[0][0].item<int64_t>();
      return absl::InvalidArgumentError(absl::StrCat(
          "mask row ", row, " has no valid token; every response needs at least one (its last token gets the score)"));
    }

    PerTokenRewardsResult result;
    ASSIGN_OR_RETURN(result.kl,
                     KlPerTokenImpl(logprobs.detach(), ref_logprobs.detach(), valid, options.kl_estimator));
    result.kl_sum = result.kl.sum(1);

    at::Tensor score = scores.detach().to(logprobs.scalar_type());
    if (emitted_stop.defined() && options.missing_stop_penalty != 0) {
      score = score + emitted_stop.logical_not().to(score.scalar_type()) * options.missing_stop_penalty;
    }
    result.scores = score;

    // Position + 1 where valid, 0 where padded: the row maximum is unique and sits at the last valid token.
    const at::Tensor positions = at::arange(1, seq + 1, logprobs.options().dtype(at::kLong));
    result.last_index = (valid.to(at::kLong) * positions).argmax(1);

    result.rewards = (result.kl * (-options.kl_beta)).scatter_add(1, result.last_index.unsqueeze(1),
                                                                   score.unsqueeze(1));
    return result;
  });
}

absl::StatusOr<GaeResult> ComputeGae(const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& mask,
                                     const GaeOptions& options) {
  return Guard("ComputeGae", [&]() -> absl::StatusOr<GaeResult> {
    RETURN_IF_ERROR(CheckFloatTensor(rewards, "rewards", 2, kSeqLayout));
    RETURN_IF_ERROR(CheckLike(values, "values", rewards, "rewards"));
    if (!(options.gamma >= 0 && options.gamma <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat("gamma must be in [0, 1], got ", options.gamma));
    }
    if (!(options.lambda >= 0 && options.lambda <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat("lambda must be in [0, 1], got ", options.lambda));
    }
    ASSIGN_OR_RETURN(const at::Tensor valid, SeqMask(mask, rewards, "rewards"));

    const int64_t batch = rewards.size(0);
    const int64_t seq = rewards.size(1);
    const at::Tensor r = rewards.detach().to(at::kCPU, at::kDouble).contiguous();
    const at::Tensor v = values.detach().to(at::kCPU, at::kDouble).contiguous();
    const at::Tensor m = valid.to(at::kCPU).contiguous();
    at::Tensor adv = at::zeros({batch, seq}, r.options());
    at::Tensor ret = at::zeros({batch, seq}, r.options());
    const double* rp = r.data_ptr<double>();
    const double* vp = v.data_ptr<double>();
    const bool* mp = m.data_ptr<bool>();
    double* ap = adv.data_ptr<double>();
    double* retp = ret.data_ptr<double>();
    const double gamma = options.gamma;
    const double gamma_lambda = options.gamma * options.lambda;
    for (int64_t b = 0; b < batch; ++b) {
      double next_value = 0;      // V at the next valid position; 0 past the end of the response
      double next_advantage = 0;  // A at the next valid position
      for (int64_t t = seq - 1; t >= 0; --t) {
        const int64_t i = b * seq + t;
        if (!mp[i]) continue;  // padding: skipped, left at 0
        const double delta = rp[i] + gamma * next_value - vp[i];  // Schulman et al. 2016 eq. (10)
        const double a = delta + gamma_lambda * next_advantage;   // eq. (16), recursively
        ap[i] = a;
        retp[i] = a + vp[i];
        next_value = vp[i];
        next_advantage = a;
      }
    }
    const at::ScalarType dtype = at::promote_types(rewards.scalar_type(), values.scalar_type());
    GaeResult result;
    result.advantages = adv.to(rewards.device(), dtype);
    result.returns = ret.to(rewards.device(), dtype);
    return result;
  });
}

namespace {

absl::StatusOr<at::Tensor> AnyShapeMask(const at::Tensor& x, const at::Tensor& mask) {
  if (!x.defined()) return absl::InvalidArgumentError("x is undefined");
  if (!x.is_floating_point()) {
    return absl::InvalidArgumentError(
        absl::StrCat("x must be a floating-point tensor, got dtype ", std::string(c10::toString(x.scalar_type()))));
  }
  return BoolMask(mask, "mask", x.sizes(), "the shape of x", x, "x");
}

// Mean and variance of the valid entries `v` [n] (n checked by the caller).
at::Tensor VarOfValid(const at::Tensor& v, const at::Tensor& mean, bool unbiased) {
  const int64_t n = v.size(0);
  return (v - mean).square().sum() / static_cast<double>(unbiased ? n - 1 : n);
}

}  // namespace

absl::StatusOr<at::Tensor> MaskedMean(const at::Tensor& x, const at::Tensor& mask) {
  return Guard("MaskedMean", [&]() -> absl::StatusOr<at::Tensor> {
    ASSIGN_OR_RETURN(const at::Tensor valid, AnyShapeMask(x, mask));
    const at::Tensor v = SelectValid(x, ValidIndex(valid));
    RETURN_IF_ERROR(CheckNonEmpty(v.size(0), "mask"));
    return v.mean();
  });
}

absl::StatusOr<at::Tensor> MaskedVar(const at::Tensor& x, const at::Tensor& mask, bool unbiased) {
  return Guard("MaskedVar", [&]() -> absl::StatusOr<at::Tensor> {
    ASSIGN_OR_RETURN(const at::Tensor valid, AnyShapeMask(x, mask));
    const at::Tensor v = SelectValid(x, ValidIndex(valid));
    RETURN_IF_ERROR(CheckNonEmpty(v.size(0), "mask", unbiased ? 2 : 1));
    return VarOfValid(v, v.mean(), unbiased);
  });
}

absl::StatusOr<at::Tensor> Whiten(const at::Tensor& x, const at::Tensor& mask, bool shift_mean) {
  return Guard("Whiten", [&]() -> absl::StatusOr<at::Tensor> {
    ASSIGN_OR_RETURN(const at::Tensor valid, AnyShapeMask(x, mask));
    const at::Tensor index = ValidIndex(valid);
    const at::Tensor v = SelectValid(x, index);
    RETURN_IF_ERROR(CheckNonEmpty(v.size(0), "mask", 2));
    const at::Tensor mean = v.mean();
    const at::Tensor var = VarOfValid(v, mean, /*unbiased=*/true);
    at::Tensor whitened = (v - mean) * (var + kWhitenEpsilon).rsqrt();
    if (!shift_mean) whitened = whitened + mean;
    return internal::ScatterValid(whitened, index, x);
  });
}

absl::StatusOr<PolicyLossResult> ClippedPolicyLoss(const at::Tensor& new_logprobs, const at::Tensor& old_logprobs,
                                                   const at::Tensor& advantages, const at::Tensor& mask,
                                                   const PolicyLossOptions& options) {
  return Guard("ClippedPolicyLoss", [&]() -> absl::StatusOr<PolicyLossResult> {
    RETURN_IF_ERROR(CheckFloatTensor(new_logprobs, "new_logprobs", 2, kSeqLayout));
    RETURN_IF_ERROR(CheckLike(old_logprobs, "old_logprobs", new_logprobs, "new_logprobs"));
    RETURN_IF_ERROR(CheckLike(advantages, "advantages", new_logprobs, "new_logprobs"));
    if (!(options.clip_range > 0) || !std::isfinite(options.clip_range)) {
      return absl::InvalidArgumentError(absl::StrCat("clip_range must be finite and > 0, got ", options.clip_range));
    }
    ASSIGN_OR_RETURN(const at::Tensor valid, SeqMask(mask, new_logprobs, "new_logprobs"));
    const at::Tensor index = ValidIndex(valid);
    RETURN_IF_ERROR(CheckNonEmpty(index.size(0), "mask"));

    const at::Tensor new_lp = SelectValid(new_logprobs, index);
    const at::Tensor old_lp = SelectValid(old_logprobs.detach(), index).to(new_lp.scalar_type());
    const at::Tensor adv = SelectValid(advantages.detach(), index).to(new_lp.scalar_type());
    const at::Tensor log_ratio = new_lp - old_lp;
    const at::Tensor ratio = log_ratio.exp();
    // Schulman et al. 2017 eq. (7), negated: max of the negated terms is the negated min.
    const at::Tensor unclipped = -adv * ratio;
    const at::Tensor clipped = -adv * at::clamp(ratio, 1.0 - options.clip_range, 1.0 + options.clip_range);

    PolicyLossResult result;
    result.loss = at::maximum(unclipped, clipped).mean();
    result.num_tokens = index.size(0);
    const at::Tensor lr = log_ratio.detach().to(at::kDouble);
    const at::Tensor rd = ratio.detach().to(at::kDouble);
    result.clip_fraction = clipped.detach().gt(unclipped.detach()).to(at::kDouble).mean().item<double>();
    result.approx_kl = 0.5 * lr.square().mean().item<double>();
    result.approx_kl_k3 = ((rd - 1) - lr).mean().item<double>();
    result.ratio_mean = rd.mean().item<double>();
    result.ratio_min = rd.min().item<double>();
    result.ratio_max = rd.max().item<double>();
    return result;
  });
}

absl::StatusOr<ValueLossResult> ClippedValueLoss(const at::Tensor& new_values, const at::Tensor& old_values,
                                                 const at::Tensor& returns, const at::Tensor& mask,
                                                 const ValueLossOptions& options) {
  return Guard("ClippedValueLoss", [&]() -> absl::StatusOr<ValueLossResult> {
    RETURN_IF_ERROR(CheckFloatTensor(new_values, "new_values", 2, kSeqLayout));
    RETURN_IF_ERROR(CheckLike(old_values, "old_values", new_values, "new_values"));
    RETURN_IF_ERROR(CheckLike(returns, "returns", new_values, "new_values"));
    if (!(options.clip_range > 0)) {  // +inf allowed: no clipping
      return absl::InvalidArgumentError(absl::StrCat("clip_range must be > 0, got ", options.clip_range));
    }
    ASSIGN_OR_RETURN(const at::Tensor valid, SeqMask(mask, new_values, "new_values"));
    const at::Tensor index = ValidIndex(valid);
    RETURN_IF_ERROR(CheckNonEmpty(index.size(0), "mask"));

    const at::Tensor v_new = SelectValid(new_values, index);
    const at::Tensor v_old = SelectValid(old_values.detach(), index).to(v_new.scalar_type());
    const at::Tensor ret = SelectValid(returns.detach(), index).to(v_new.scalar_type());
    const at::Tensor v_clipped = v_old + at::clamp(v_new - v_old, -options.clip_range, options.clip_range);
    const at::Tensor unclipped_error = (v_new - ret).square();
    const at::Tensor clipped_error = (v_clipped - ret).square();

    ValueLossResult result;
    result.loss = 0.5 * at::maximum(unclipped_error, clipped_error).mean();
    result.clip_fraction =
        clipped_error.detach().gt(unclipped_error.detach()).to(at::kDouble).mean().item<double>();
    result.num_tokens = index.size(0);
    return result;
  });
}

absl::StatusOr<at::Tensor> Entropy(const at::Tensor& logits, const at::Tensor& mask) {
  return Guard("Entropy", [&]() -> absl::StatusOr<at::Tensor> {
    RETURN_IF_ERROR(CheckFloatTensor(logits, "logits", 3, "[batch, seq, vocab]"));
    const int64_t vocab = logits.size(2);
    if (vocab < 1) return absl::InvalidArgumentError("logits has an empty vocabulary dimension");
    ASSIGN_OR_RETURN(const at::Tensor valid,
                     BoolMask(mask, "mask", {logits.size(0), logits.size(1)}, "[batch, seq] of logits", logits,
                              "logits"));
    const at::Tensor index = ValidIndex(valid);
    RETURN_IF_ERROR(CheckNonEmpty(index.size(0), "mask"));
    at::Tensor rows = logits.reshape({-1, vocab}).index_select(0, index);  // [n_valid, V]
    if (rows.scalar_type() != at::kDouble) rows = rows.to(at::kFloat);
    const at::Tensor logp = at::log_softmax(rows, -1);
    // p * log p with log p clamped to a finite floor: banned tokens (p = 0, log p = -inf) add 0 and get a zero,
    // not NaN, gradient.
    const at::Tensor plogp = logp.exp() * logp.clamp_min(-1e30);
    return (-plogp.sum(-1)).mean().to(logits.scalar_type());
  });
}

absl::StatusOr<double> ExplainedVariance(const at::Tensor& values, const at::Tensor& returns, const at::Tensor& mask) {
  return Guard("ExplainedVariance", [&]() -> absl::StatusOr<double> {
    RETURN_IF_ERROR(CheckFloatTensor(values, "values", 2, kSeqLayout));
    RETURN_IF_ERROR(CheckLike(returns, "returns", values, "values"));
    ASSIGN_OR_RETURN(const at::Tensor valid, SeqMask(mask, values, "values"));
    const at::Tensor index = ValidIndex(valid);
    RETURN_IF_ERROR(CheckNonEmpty(index.size(0), "mask"));
    const at::Tensor v = SelectValid(values.detach(), index).to(at::kDouble);
    const at::Tensor r = SelectValid(returns.detach(), index).to(at::kDouble);
    // Biased variances: the 1/n or 1/(n-1) factor cancels in the ratio.
    const double var_returns = r.var(/*unbiased=*/false).item<double>();
    if (var_returns == 0) return std::numeric_limits<double>::quiet_NaN();
    return 1.0 - (r - v).var(/*unbiased=*/false).item<double>() / var_returns;
  });
}

}  // namespace rlhf::rl
