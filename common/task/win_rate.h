// Comparing two policies on the same prompts: win-rate with a confidence interval, mean score, perfect answers.
#ifndef RLHF_COMMON_TASK_WIN_RATE_H_
#define RLHF_COMMON_TASK_WIN_RATE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace rlhf::task {

enum class IntervalMethod {
  // Normal approximation on the per-prompt outcomes o_i in {1, 0.5, 0} (win, tie, loss):
  // win_rate +- z * s / sqrt(n), with s the sample standard deviation of the o_i (n - 1 in the denominator), clipped
  // to [0, 1]. Counts ties at their true (smaller) variance. Needs n >= 2; when every outcome is the same the
  // interval is that single point.
  kNormal,
  // Wilson's score interval for a proportion, with wins + ties / 2 successes out of n: never empty, stays inside
  // [0, 1], and reasonable for small n or a win-rate near 0 or 1; treating ties as half successes makes it a bit
  // wider than the outcomes' variance calls for.
  kWilson,
};

struct WinRateOptions {
  double confidence_level = 0.95;  // in (0, 1)
  IntervalMethod method = IntervalMethod::kNormal;
};

// Policy A against policy B, one outcome per prompt.
struct WinRate {
  int64_t num_prompts = 0;
  int64_t wins = 0;  // A scored higher
  int64_t ties = 0;
  int64_t losses = 0;         // B scored higher
  double win_rate = 0;        // (wins + ties / 2) / num_prompts
  double standard_error = 0;  // of win_rate, as the interval method estimates it
  double ci_low = 0;
  double ci_high = 0;
  double confidence_level = 0;
};

// scores_a[i] and scores_b[i] are the two policies' scores on prompt i (higher is better). InvalidArgument when the
// spans differ in length or are empty, when a score is NaN (naming "scores_a[i]"), when confidence_level is outside
// (0, 1), or for kNormal with a single prompt.
absl::StatusOr<WinRate> ComputeWinRate(absl::Span<const double> scores_a, absl::Span<const double> scores_b,
                                       const WinRateOptions& options = {});

// One policy's scores.
struct ScoreSummary {
  int64_t count = 0;
  double mean_score = 0;
  double perfect_fraction = 0;  // fraction with score >= perfect_score
};

// InvalidArgument when `scores` is empty or holds a NaN (naming "scores[i]").
absl::StatusOr<ScoreSummary> SummarizeScores(absl::Span<const double> scores, double perfect_score = 0.0);

// The standard normal quantile: x with P(Z <= x) = p, for p in (0, 1) (1.959964 for 0.975). Accurate to about
// 1e-12; NaN outside (0, 1).
double NormalQuantile(double p);

}  // namespace rlhf::task

#endif  // RLHF_COMMON_TASK_WIN_RATE_H_
