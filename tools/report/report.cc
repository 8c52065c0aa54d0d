#include "tools/report/report.h"


#include <algorithm>
#include <cmath>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"
#include "tools/report/html.h"
#include "tools/report/run_metrics.h"
#include "tools/report/svg_plot.h"

namespace rlhf::report {
namespace {

constexpr size_t kMaxRunJsonBytes = 64 * 1024;

// Stages in pipeline order, with the names people read.
constexpr std::pair<const char*, const char*> kKnownStages[] = {
    {"pretrain", "Pretraining"},      {"sft", "Supervised fine-tuning (SFT)"},
    {"reward_model", "Reward model"}, {"ppo", "PPO"},
    {"eval", "Evaluation"},
};

int StageOrder(const std::string& stage) {
  for (size_t i = 0; i < std::size(kKnownStages); ++i) {
    if (stage == kKnownStages[i].first) return static_cast<int>(i);
  }
  return static_cast<int>(std::size(kKnownStages));
}

std::string StageTitle(const std::string& stage) {
  for (const auto& [name, title] : kKnownStages) {
    if (stage == name) return title;
  }
  return stage;
}

// "train/loss" -> "loss": metrics with the same last part share a chart.
std::string ChartKey(const std::string& metric) {
  const size_t slash = metric.rfind('/');
  return slash == std::string::npos ? metric : metric.substr(slash + 1);
}

std::string Percent(double fraction) { return absl::StrFormat("%.1f%%", 100.0 * fraction); }

std::string Fixed3(double value) { return std::isfinite(value) ? absl::StrFormat("%.3f", value) : "-"; }

std::string ConfidenceLabel(double level) { return absl::StrCat(FormatNumber(100.0 * level, 3), "% CI"); }

// Everything metrics.jsonl says about one stage.
struct StageMetrics {
  std::set<int64_t> rounds;
  std::vector<std::string> metric_order;                                                     // first appearance
  std::map<std::pair<std::string, int64_t>, std::vector<std::pair<double, double>>> curves;  // (metric, round)
  int64_t records = 0;
};

std::map<std::string, StageMetrics> GroupByStage(const std::vector<MetricsRecord>& records) {
  std::map<std::string, StageMetrics> stages;
  for (const MetricsRecord& record : records) {
    StageMetrics& stage = stages[record.stage];
    ++stage.records;
    stage.rounds.insert(record.round);
    for (const auto& [name, value] : record.metrics) {
      auto& curve = stage.curves[{name, record.round}];
      if (std::find(stage.metric_order.begin(), stage.metric_order.end(), name) == stage.metric_order.end()) {
        stage.metric_order.push_back(name);
      }
      curve.emplace_back(static_cast<double>(record.step), value);
    }
  }
  return stages;
}

// The last finite value of a curve.
double LastValue(const std::vector<std::pair<double, double>>& curve) {
  for (auto it = curve.rbegin(); it != curve.rend(); ++it) {
    if (std::isfinite(it->second)) return it->second;
  }
  return std::nan("");
}

std::string StageSection(const std::string& stage_name, const StageMetrics& stage) {
  const bool by_round = stage.rounds.size() > 1;
  std::string html = absl::StrCat("<section id=\"stage-", EscapeHtml(stage_name), "\"><h2>",
                                  EscapeHtml(StageTitle(stage_name)), "</h2>\n");
  absl::StrAppend(&html, "<p class=\"meta\">", stage.records, stage.records == 1 ? " metric record" : " metric records",
                  by_round ? ", rounds " : "");
  if (by_round) {
    bool first = true;
    for (const int64_t round : stage.rounds) {
      absl::StrAppend(&html, first ? "" : ", ", round);
      first = false;
    }
  }
  html += "</p>\n";

  // Final values.
  html += "<table class=\"values\"><thead><tr><th>metric</th>";
  for (const int64_t round : stage.rounds) {
    absl::StrAppend(&html, "<th>", by_round ? absl::StrCat("round ", round, ", last") : "last", "</th>");
  }
  html += "</tr></thead><tbody>\n";
  for (const std::string& metric : stage.metric_order) {
    absl::StrAppend(&html, "<tr><td>", EscapeHtml(metric), "</td>");
    for (const int64_t round : stage.rounds) {
      const auto it = stage.curves.find({metric, round});
      absl::StrAppend(&html, "<td class=\"num\">", it == stage.curves.end() ? "" : FormatNumber(LastValue(it->second)),
                      "</td>");
    }
    html += "</tr>\n";
  }
  html += "</tbody></table>\n";

  // One chart per metric family ("train/loss" and "val/loss" together).
  std::vector<std::string> chart_order;
  std::map<std::string, std::vector<std::string>> charts;
  for (const std::string& metric : stage.metric_order) {
    const std::string key = ChartKey(metric);
    if (charts.find(key) == charts.end()) chart_order.push_back(key);
    charts[key].push_back(metric);
  }
  html += "<div class=\"plots\">\n";
  for (const std::string& key : chart_order) {
    const std::vector<std::string>& metrics = charts[key];
    std::vector<PlotSeries> series;
    for (const std::string& metric : metrics) {
      for (const int64_t round : stage.rounds) {
        const auto it = stage.curves.find({metric, round});
        if (it == stage.curves.end()) continue;
        PlotSeries s;
        s.label = by_round ? absl::StrCat(metric, " (round ", round, ")") : metric;
        s.points = it->second;
        std::stable_sort(s.points.begin(), s.points.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
        series.push_back(std::move(s));
      }
    }
    PlotOptions options;
    options.title = metrics.size() == 1 ? metrics[0] : key;
    absl::StrAppend(&html, "<figure>", RenderLinePlot(series, options), "</figure>\n");
  }
  html += "</div></section>\n";
  return html;
}

std::string SummarySection(const task::EvalSummary& s) {
  std::string html = "<section id=\"evaluation\"><h2>Held-out evaluation: PPO against SFT</h2>\n";
  absl::StrAppend(&html, "<p class=\"headline\">Win-rate of PPO over SFT: <strong>", Fixed3(s.win_rate), "</strong> (",
                  ConfidenceLabel(s.confidence_level), " ", Fixed3(s.ci_low), " &ndash; ", Fixed3(s.ci_high), ") on ",
                  s.num_prompts, " held-out prompts, judged by the noiseless labeler, ties counted as half.");
  if (s.ci_low > 0.5) {
    html += " The interval lies above 0.5: PPO is preferred.";
  } else if (s.ci_high < 0.5) {
    html += " The interval lies below 0.5: SFT is preferred.";
  } else {
    html += " The interval contains 0.5: no clear preference.";
  }
  html += "</p>\n";
  std::vector<IntervalRow> rows = {{"noiseless labeler", s.win_rate, s.ci_low, s.ci_high}};
  if (s.noisy_win_rate.has_value()) {
    absl::StrAppend(&html, "<p>With the labeler's noise: ", Fixed3(*s.noisy_win_rate));
    if (s.noisy_ci_low.has_value() && s.noisy_ci_high.has_value()) {
      absl::StrAppend(&html, " (", ConfidenceLabel(s.confidence_level), " ", Fixed3(*s.noisy_ci_low), " &ndash; ",
                      Fixed3(*s.noisy_ci_high), ")");
      rows.push_back({"noisy labeler", *s.noisy_win_rate, *s.noisy_ci_low, *s.noisy_ci_high});
    }
    html += ".</p>\n";
  }
  if (s.kl_to_sft.has_value()) {
    absl::StrAppend(&html, "<p>KL(PPO &#8214; SFT): ", FormatNumber(*s.kl_to_sft, 3), " nats per response.</p>\n");
  }
  absl::StrAppend(&html, "<figure>", RenderIntervalChart(rows), "</figure>\n");
  absl::StrAppend(&html,
                  "<table class=\"values\"><thead><tr><th>policy</th><th>mean true score</th>"
                  "<th>perfect answers</th></tr></thead><tbody>\n",
                  "<tr><td>SFT</td><td class=\"num\">", Fixed3(s.sft.mean_score), "</td><td class=\"num\">",
                  Percent(s.sft.perfect_fraction), "</td></tr>\n", "<tr><td>PPO</td><td class=\"num\">",
                  Fixed3(s.ppo.mean_score), "</td><td class=\"num\">", Percent(s.ppo.perfect_fraction),
                  "</td></tr>\n</tbody></table></section>\n");
  return html;
}

std::string SamplesSection(const std::vector<task::EvalSample>& samples, int32_t max_samples) {
  const size_t shown = std::min(samples.size(), static_cast<size_t>(std::max(0, max_samples)));
  int64_t ppo_better = 0;
  int64_t sft_better = 0;
  for (const task::EvalSample& sample : samples) {
    ppo_better += sample.ppo_score > sample.sft_score;
    sft_better += sample.sft_score > sample.ppo_score;
  }
  std::string html = "<section id=\"samples\"><h2>Sample responses, SFT and PPO side by side</h2>\n";
  absl::StrAppend(&html, "<p class=\"meta\">Showing ", shown, " of ", samples.size(), " prompts. Over all of them PPO",
                  " scored higher on ", ppo_better, ", SFT on ", sft_better, ", the same on ",
                  static_cast<int64_t>(samples.size()) - ppo_better - sft_better, ".</p>\n");
  html +=
      "<table class=\"samples\"><thead><tr><th>#</th><th>prompt</th><th>SFT response</th><th>score</th>"
      "<th>PPO response</th><th>score</th></tr></thead><tbody>\n";
  for (size_t i = 0; i < shown; ++i) {
    const task::EvalSample& sample = samples[i];
    const char* sft_class = sample.sft_score > sample.ppo_score ? "num better" : "num";
    const char* ppo_class = sample.ppo_score > sample.sft_score ? "num better" : "num";
    absl::StrAppend(&html, "<tr><td class=\"num\">", i + 1, "</td><td><code>", EscapeHtml(sample.prompt),
                    "</code></td><td><code>", EscapeHtml(sample.sft_response), "</code></td><td class=\"", sft_class,
                    "\">", FormatNumber(sample.sft_score), "</td><td><code>", EscapeHtml(sample.ppo_response),
                    "</code></td><td class=\"", ppo_class, "\">", FormatNumber(sample.ppo_score), "</td></tr>\n");
  }
  html += "</tbody></table></section>\n";
  return html;
}

std::string RunJsonSection(const std::string& text) {
  std::string shown;
  try {
    shown = nlohmann::json::parse(text).dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
  } catch (const nlohmann::json::exception&) {
    shown = text;
  }
  std::string note;
  if (shown.size() > kMaxRunJsonBytes) {
    note = absl::StrCat(" (first ", kMaxRunJsonBytes, " of ", shown.size(), " bytes)");
    shown.resize(kMaxRunJsonBytes);
  }
  return absl::StrCat("<section id=\"run\"><h2>Run configuration and state</h2>\n<details><summary>run.json", note,
                      "</summary><pre>", EscapeHtml(shown), "</pre></details></section>\n");
}

constexpr char kStyle[] = R"css(
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1120px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2rem; }
.meta { color: #555; } .headline { font-size: 1.05rem; } nav a { margin-right: 1rem; }
.notes { background: #fff6e0; border: 1px solid #f0d79a; padding: .5rem 1rem; }
table { border-collapse: collapse; margin: .6rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.better { font-weight: bold; color: #00734f; }
.plots { display: flex; flex-wrap: wrap; gap: .5rem 1rem; } figure { margin: .4rem 0; }
pre { background: #f7f7f7; padding: .6rem; overflow-x: auto; } code { font-size: .92em; }
)css";

}  // namespace

std::string FormatSummaryTable(const task::EvalSummary& s) {
  std::string out;
  absl::StrAppend(&out, absl::StrFormat("%-18s %9s %9s\n", "", "SFT", "PPO"));
  absl::StrAppend(&out, absl::StrFormat("%-18s %9.3f %9.3f\n", "mean true score", s.sft.mean_score, s.ppo.mean_score));
  absl::StrAppend(&out, absl::StrFormat("%-18s %9s %9s\n", "perfect answers", Percent(s.sft.perfect_fraction),
                                        Percent(s.ppo.perfect_fraction)));
  const std::string ci = ConfidenceLabel(s.confidence_level);
  absl::StrAppend(&out, absl::StrFormat("\nPPO vs SFT win-rate, noiseless labeler: %.3f  %s [%.3f, %.3f]  "
                                        "(%d prompts, ties count half)\n",
                                        s.win_rate, ci, s.ci_low, s.ci_high, s.num_prompts));
  if (s.noisy_win_rate.has_value()) {
    absl::StrAppend(&out, absl::StrFormat("PPO vs SFT win-rate, noisy labeler:     %.3f", *s.noisy_win_rate));
    if (s.noisy_ci_low.has_value() && s.noisy_ci_high.has_value()) {
      absl::StrAppend(&out, absl::StrFormat("  %s [%.3f, %.3f]", ci, *s.noisy_ci_low, *s.noisy_ci_high));
    }
    out += "\n";
  }
  if (s.kl_to_sft.has_value()) {
    absl::StrAppend(&out, absl::StrFormat("KL(PPO || SFT): %.3g nats per response\n", *s.kl_to_sft));
  }
  return out;
}

absl::StatusOr<std::string> RenderRunReport(const std::string& run_dir, const ReportOptions& options) {
  if (!util::IsDirectory(run_dir)) {
    return absl::NotFoundError(absl::StrCat("run directory ", run_dir, " does not exist or is not a directory"));
  }
  const std::string metrics_path = run_dir + "/metrics.jsonl";
  const std::string summary_path = run_dir + "/eval/summary.json";
  const std::string samples_path = run_dir + "/eval/samples.jsonl";
  const std::string run_json_path = run_dir + "/run.json";

  std::vector<std::string> notes;
  std::optional<MetricsFile> metrics;
  if (util::PathExists(metrics_path)) {
    ASSIGN_OR_RETURN(metrics, ReadMetricsFile(metrics_path));
    if (!metrics->torn_last_line.empty()) {
      notes.push_back(
          absl::StrCat("The last line of metrics.jsonl is incomplete (a write cut short?) and was left "
                       "out: ",
                       metrics->torn_last_line));
    }
  }
  std::optional<task::EvalSummary> summary;
  if (util::PathExists(summary_path)) {
    ASSIGN_OR_RETURN(summary, task::ReadEvalSummary(summary_path));
  }
  std::optional<std::vector<task::EvalSample>> samples;
  if (util::PathExists(samples_path)) {
    ASSIGN_OR_RETURN(samples, task::ReadEvalSamples(samples_path));
  }
  std::optional<std::string> run_json;
  if (util::PathExists(run_json_path)) {
    ASSIGN_OR_RETURN(run_json, util::ReadFile(run_json_path));
  }
  if (!metrics && !summary && !samples && !run_json) {
    return absl::NotFoundError(absl::StrCat("nothing to report in ", run_dir,
                                            ": looked for metrics.jsonl, eval/summary.json, eval/samples.jsonl and "
                                            "run.json"));
  }

  const std::string title = options.title.empty() ? absl::StrCat("RLHF run ", util::BaseName(run_dir)) : options.title;
  std::map<std::string, StageMetrics> stages;
  if (metrics) stages = GroupByStage(metrics->records);
  std::vector<std::string> stage_order;
  for (const auto& [name, stage] : stages) stage_order.push_back(name);
  std::stable_sort(stage_order.begin(), stage_order.end(),
                   [](const std::string& a, const std::string& b) { return StageOrder(a) < StageOrder(b); });

  std::string html =
      absl::StrCat("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>", EscapeHtml(title),
                   "</title>\n<style>", kStyle, "</style>\n</head>\n<body>\n<h1>", EscapeHtml(title),
                   "</h1>\n<p class=\"meta\">Run directory <code>", EscapeHtml(run_dir), "</code></p>\n<nav>");
  if (summary) html += "<a href=\"#evaluation\">Evaluation</a>";
  for (const std::string& name : stage_order) {
    absl::StrAppend(&html, "<a href=\"#stage-", EscapeHtml(name), "\">", EscapeHtml(StageTitle(name)), "</a>");
  }
  if (samples) html += "<a href=\"#samples\">Samples</a>";
  if (run_json) html += "<a href=\"#run\">Configuration</a>";
  html += "</nav>\n";
  if (!notes.empty()) {
    html += "<div class=\"notes\">";
    for (const std::string& note : notes) absl::StrAppend(&html, "<p>", EscapeHtml(note), "</p>");
    html += "</div>\n";
  }
  std::vector<std::string> missing;
  if (!metrics) missing.push_back("metrics.jsonl");
  if (!summary) missing.push_back("eval/summary.json");
  if (!samples) missing.push_back("eval/samples.jsonl");
  if (!missing.empty()) {
    absl::StrAppend(&html, "<p class=\"meta\">Not in this run directory (yet): ");
    for (size_t i = 0; i < missing.size(); ++i) absl::StrAppend(&html, i ? ", " : "", "<code>", missing[i], "</code>");
    html += ".</p>\n";
  }

  if (summary) html += SummarySection(*summary);
  for (const std::string& name : stage_order) html += StageSection(name, stages[name]);
  if (samples) html += SamplesSection(*samples, options.max_samples);
  if (run_json) html += RunJsonSection(*run_json);
  html += "</body>\n</html>\n";
  return html;
}

absl::Status WriteRunReport(const std::string& run_dir, const std::string& out_path, const ReportOptions& options) {
  ASSIGN_OR_RETURN(const std::string html, RenderRunReport(run_dir, options));
  return util::WriteFileAtomically(out_path, html);
}

}  // namespace rlhf::report
