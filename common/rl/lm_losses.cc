#include "common/rl/lm_losses.h"

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>
#include <ATen/ops/log_sigmoid.h>
#include <ATen/ops/log_softmax.h>

#include "absl/strings/str_cat.h"
#include "common/rl/tensor_checks.h"
#include "common/util/status_macros.h"

namespace rlhf::rl {

using internal::CheckFloatTensor;
using internal::CheckLike;
using internal::Guard;

absl::StatusOr<LmLossResult> ResponseNll(const at::Tensor& logits, const at::Tensor& target_ids,
                                         const at::Tensor& loss_mask) {
  return Guard("ResponseNll", [&]() -> absl::StatusOr<LmLossResult> {
    RETURN_IF_ERROR(CheckFloatTensor(logits, "logits", 3, "[batch, seq, vocab]"));
    const int64_t batch = logits.size(0);
    const int64_t seq = logits.size(1);
    const int64_t vocab = logits.size(2);
    if (vocab < 1) return absl::InvalidArgumentError("logits has an empty vocabulary dimension");
    if (!target_ids.defined()) return absl::InvalidArgumentError("target_ids is undefined");
    if (!at::isIntegralType(target_ids.scalar_type(), /*includeBool=*/false)) {
      return absl::InvalidArgumentError(absl::StrCat("target_ids must be an integer tensor, got dtype ",
                                                     std::string(c10::toString(target_ids.scalar_type()))));
    }
    RETURN_IF_ERROR(internal::CheckShape(target_ids, "target_ids", {batch, seq}, "[batch, seq] of logits"));
    RETURN_IF_ERROR(internal::CheckSameDevice(target_ids, "target_ids", logits, "logits"));
    ASSIGN_OR_RETURN(const at::Tensor valid, internal::BoolMask(loss_mask, "loss_mask", {batch, seq},
                                                                "[batch, seq] of logits", logits, "logits"));
    const at::Tensor index = internal::ValidIndex(valid);
    const int64_t n = index.size(0);
    if (n == 0) return absl::InvalidArgumentError("loss_mask selects no token");

    const at::Tensor targets = internal::SelectValid(target_ids, index).to(at::kLong);  // [n]
    const at::Tensor out_of_range = targets.lt(0).logical_or(targets.ge(vocab));
    if (out_of_range.any().item<bool>()) {
      const int64_t k = out_of_range.nonzero()[0][0].item<int64_t>();
      const int64_t flat = index[k].item<int64_t>();
      return absl::InvalidArgumentError(absl::StrCat("target_ids[", flat / seq, "][", flat % seq,
                                                     "]=", targets[k].item<int64_t>(),
                                                     " is outside the vocabulary [0, ", vocab, ")"));
    }
    at::Tensor rows = logits.reshape({-1, vocab}).index_select(0, index);  // [n, V]
    if (rows.scalar_type() != at::kDouble) rows = rows.to(at::kFloat);
    const at::Tensor target_logp = at::log_softmax(rows, -1).gather(1, targets.unsqueeze(1)).squeeze(1);
    LmLossResult result;
    result.loss = (-target_logp.mean()).to(logits.scalar_type());
    result.num_tokens = n;
    return result;
  });
}

absl::StatusOr<RankingLossResult> PairwiseRankingLoss(const at::Tensor& chosen_scores,
                                                      const at::Tensor& rejected_scores) {
  return Guard("PairwiseRankingLoss", [&]() -> absl::StatusOr<RankingLossResult> {
    RETURN_IF_ERROR(CheckFloatTensor(chosen_scores, "chosen_scores", 1, "[num_pairs]"));
    RETURN_IF_ERROR(CheckLike(rejected_scores, "rejected_scores", chosen_scores, "chosen_scores"));
    const int64_t n = chosen_scores.size(0);
    if (n == 0) return absl::InvalidArgumentError("chosen_scores is empty; at least one pair needed");
    const at::Tensor margin = chosen_scores - rejected_scores.to(chosen_scores.scalar_type());
    RankingLossResult result;
    result.loss = -at::log_sigmoid(margin).mean();  // InstructGPT eq. (1)
    const at::Tensor m = margin.detach().to(at::kDouble);
    result.accuracy = (m.gt(0).to(at::kDouble) + 0.5 * m.eq(0).to(at::kDouble)).mean().item<double>();
    result.mean_margin = m.mean().item<double>();
    result.num_pairs = n;
    return result;
  });
}

}  // namespace rlhf::rl
