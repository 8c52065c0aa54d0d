#include "common/task/win_rate.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace rlhf::task {
namespace {

double NormalCdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

absl::Status CheckScores(absl::Span<const double> scores, const char* name) {
  for (size_t i = 0; i < scores.size(); ++i) {
    if (std::isnan(scores[i])) return absl::InvalidArgumentError(absl::StrCat(name, "[", i, "] is NaN"));
  }
  return absl::OkStatus();
}

}  // namespace

double NormalQuantile(double p) {
  if (!(p > 0.0 && p < 1.0)) return std::numeric_limits<double>::quiet_NaN();
  // Bisection on the CDF: slow by the standards of a numerics library, but exact to the last bits that erfc gives,
  // and called a handful of times per evaluation.
  double lo = -40.0;
  double hi = 40.0;
  for (int i = 0; i < 200 && hi - lo > 1e-15; ++i) {
    const double mid = 0.5 * (lo + hi);
    if (NormalCdf(mid) < p) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return 0.5 * (lo + hi);
}

absl::StatusOr<WinRate> ComputeWinRate(absl::Span<const double> scores_a, absl::Span<const double> scores_b,
                                       const WinRateOptions& options) {
  if (scores_a.size() != scores_b.size()) {
    return absl::InvalidArgumentError(absl::StrCat("scores_a has ", scores_a.size(), " values but scores_b has ",
                                                   scores_b.size(), "; they must score the same prompts"));
  }
  if (scores_a.empty()) return absl::InvalidArgumentError("no scores: need at least one prompt");
  if (absl::Status s = CheckScores(scores_a, "scores_a"); !s.ok()) return s;
  if (absl::Status s = CheckScores(scores_b, "scores_b"); !s.ok()) return s;
  if (!(options.confidence_level > 0.0 && options.confidence_level < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("confidence_level=", options.confidence_level, " is outside (0, 1)"));
  }
  const int64_t n = static_cast<int64_t>(scores_a.size());
  if (options.method == IntervalMethod::kNormal && n < 2) {
    return absl::InvalidArgumentError(
        "the normal-approximation interval needs at least 2 prompts, got 1 (use the Wilson interval)");
  }
  WinRate result;
  result.num_prompts = n;
  result.confidence_level = options.confidence_level;
  for (int64_t i = 0; i < n; ++i) {
    if (scores_a[i] > scores_b[i]) {
      ++result.wins;
    } else if (scores_a[i] < scores_b[i]) {
      ++result.losses;
    } else {
      ++result.ties;
    }
  }
  const double nd = static_cast<double>(n);
  const double p = (static_cast<double>(result.wins) + 0.5 * static_cast<double>(result.ties)) / nd;
  result.win_rate = p;
  const double z = NormalQuantile(0.5 + 0.5 * options.confidence_level);
  if (options.method == IntervalMethod::kNormal) {
    // Sum of squared deviations of the outcomes 1, 0.5 and 0 from their mean p.
    const double ss = static_cast<double>(result.wins) * (1.0 - p) * (1.0 - p) +
                      static_cast<double>(result.ties) * (0.5 - p) * (0.5 - p) +
                      static_cast<double>(result.losses) * p * p;
    result.standard_error = std::sqrt(ss / (nd - 1.0) / nd);
    result.ci_low = std::max(0.0, p - z * result.standard_error);
    result.ci_high = std::min(1.0, p + z * result.standard_error);
  } else {
    const double z2 = z * z;
    const double denominator = 1.0 + z2 / nd;
    const double center = (p + z2 / (2.0 * nd)) / denominator;
    const double half = z / denominator * std::sqrt(p * (1.0 - p) / nd + z2 / (4.0 * nd * nd));
    result.standard_error = std::sqrt(p * (1.0 - p) / nd);
    result.ci_low = std::max(0.0, center - half);
    result.ci_high = std::min(1.0, center + half);
  }
  return result;
}

absl::StatusOr<ScoreSummary> SummarizeScores(absl::Span<const double> scores, double perfect_score) {
  if (scores.empty()) return absl::InvalidArgumentError("no scores to summarise");
  if (absl::Status s = CheckScores(scores, "scores"); !s.ok()) return s;
  ScoreSummary summary;
  summary.count = static_cast<int64_t>(scores.size());
  double sum = 0;
  int64_t perfect = 0;
  for (const double score : scores) {
    sum += score;
    if (score >= perfect_score) ++perfect;
  }
  summary.mean_score = sum / static_cast<double>(summary.count);
  summary.perfect_fraction = static_cast<double>(perfect) / static_cast<double>(summary.count);
  return summary;
}

}  // namespace rlhf::task
