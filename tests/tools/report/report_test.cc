#include "tools/report/report.h"

#include <stdlib.h>

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/report/run_metrics.h"

namespace rlhf::report {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

std::string SourceDir() {
  const char* dir = ::getenv("RLHF_SOURCE_DIR");
  return dir != nullptr && *dir != '\0' ? dir : RLHF_TEST_DEFAULT_SOURCE_DIR;
}

// The fixture: a run with every file the report reads.
std::string FixtureRun() { return SourceDir() + "/tests/tools/report/testdata/run"; }

std::string MakeTempDir() {
  std::string pattern = ::testing::TempDir() + "/rlhf_report_XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed for " << pattern;
  return pattern;
}

// A copy of the fixture's files selected by name into a fresh run directory.
std::string RunWith(const std::vector<std::string>& files) {
  const std::string dir = MakeTempDir();
  EXPECT_TRUE(util::MakeDirectories(dir + "/eval").ok());
  for (const std::string& file : files) {
    EXPECT_TRUE(util::WriteFileAtomically(dir + "/" + file, *util::ReadFile(FixtureRun() + "/" + file)).ok()) << file;
  }
  return dir;
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(RenderRunReport, ShowsEverySectionOfACompleteRun) {
  absl::StatusOr<std::string> html = RenderRunReport(FixtureRun());
  ASSERT_TRUE(html.ok()) << html.status();
  EXPECT_THAT(*html, StartsWith("<!DOCTYPE html>"));
  EXPECT_THAT(*html, HasSubstr("<title>RLHF run run</title>"));
  // The evaluation: win-rate, its interval, both policies, KL.
  EXPECT_THAT(*html, HasSubstr("<section id=\"evaluation\">"));
  EXPECT_THAT(*html,
              HasSubstr("Win-rate of PPO over SFT: <strong>0.572</strong> (95% CI 0.552 &ndash; 0.591) on 2000"));
  EXPECT_THAT(*html, HasSubstr("The interval lies above 0.5: PPO is preferred."));
  EXPECT_THAT(*html, HasSubstr("With the labeler's noise: 0.532 (95% CI 0.511 &ndash; 0.553)"));
  EXPECT_THAT(*html, HasSubstr("0.52 nats per response"));
  EXPECT_THAT(*html, HasSubstr("<td>PPO</td><td class=\"num\">-0.401</td><td class=\"num\">77.1%</td>"));
  // One section per stage, in pipeline order.
  const size_t pretrain = html->find("<section id=\"stage-pretrain\">");
  const size_t sft = html->find("<section id=\"stage-sft\">");
  const size_t rm = html->find("<section id=\"stage-reward_model\">");
  const size_t ppo = html->find("<section id=\"stage-ppo\">");
  const size_t eval = html->find("<section id=\"stage-eval\">");
  ASSERT_NE(eval, std::string::npos);
  EXPECT_LT(pretrain, sft);
  EXPECT_LT(sft, rm);
  EXPECT_LT(rm, ppo);
  EXPECT_LT(ppo, eval);
  // Losses (train and validation in one chart), RM accuracy by round, PPO reward and KL.
  EXPECT_THAT(*html, HasSubstr(">val/loss</text>"));
  EXPECT_THAT(*html, HasSubstr("aria-label=\"loss\""));
  EXPECT_THAT(*html, HasSubstr(">val/accuracy (round 2)</text>"));
  EXPECT_THAT(*html, HasSubstr("aria-label=\"ppo/mean_reward\""));
  EXPECT_THAT(*html, HasSubstr("aria-label=\"ppo/kl\""));
  EXPECT_THAT(*html, HasSubstr("aria-label=\"ppo/kl_coef\""));
  // pretrain 2 charts, sft 1, reward model 2, ppo 7, eval 2, plus the interval chart.
  EXPECT_EQ(Count(*html, "<svg "), 15u);
  // Samples side by side, and the configuration.
  EXPECT_THAT(*html, HasSubstr("<section id=\"samples\">"));
  EXPECT_THAT(*html,
              HasSubstr("Showing 4 of 4 prompts. Over all of them PPO scored higher on 2, SFT on 1, the same on 1."));
  EXPECT_THAT(*html, HasSubstr("<td><code>cat owl dog</code></td><td class=\"num better\">0</td>"));
  EXPECT_THAT(*html, HasSubstr("<section id=\"run\">"));
  EXPECT_THAT(*html, HasSubstr("&quot;run_id&quot;: &quot;fixture-run&quot;"));
}

TEST(RenderRunReport, EscapesEverythingFromTheRunDirectory) {
  absl::StatusOr<std::string> html = RenderRunReport(FixtureRun());
  ASSERT_TRUE(html.ok()) << html.status();
  const std::string lower = absl::AsciiStrToLower(*html);
  EXPECT_THAT(lower, Not(HasSubstr("<script")));
  EXPECT_THAT(*html, HasSubstr("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quotes&quot;"));
  EXPECT_THAT(*html, HasSubstr("<code>&lt;/td&gt;&lt;td&gt;</code>"));
  EXPECT_THAT(*html, HasSubstr("&lt;b&gt;bold&lt;/b&gt;"));
  // Self-contained: nothing fetched from elsewhere.
  EXPECT_THAT(lower, Not(HasSubstr("src=")));
  EXPECT_THAT(lower, Not(HasSubstr("href=\"http")));
  EXPECT_THAT(lower, Not(HasSubstr("<link")));
  EXPECT_THAT(lower, Not(HasSubstr("@import")));
}

TEST(RenderRunReport, LeavesOutTheSectionsOfMissingFiles) {
  absl::StatusOr<std::string> html = RenderRunReport(RunWith({"metrics.jsonl"}));
  ASSERT_TRUE(html.ok()) << html.status();
  EXPECT_THAT(*html, HasSubstr("<section id=\"stage-ppo\">"));
  EXPECT_THAT(*html, Not(HasSubstr("<section id=\"evaluation\">")));
  EXPECT_THAT(*html, Not(HasSubstr("<section id=\"samples\">")));
  EXPECT_THAT(*html, Not(HasSubstr("<section id=\"run\">")));
  EXPECT_THAT(*html, HasSubstr("Not in this run directory (yet): <code>eval/summary.json</code>, "
                               "<code>eval/samples.jsonl</code>."));

  html = RenderRunReport(RunWith({"eval/summary.json", "eval/samples.jsonl"}));
  ASSERT_TRUE(html.ok()) << html.status();
  EXPECT_THAT(*html, HasSubstr("<section id=\"evaluation\">"));
  EXPECT_THAT(*html, HasSubstr("<section id=\"samples\">"));
  EXPECT_THAT(*html, Not(HasSubstr("<section id=\"stage-")));
}

TEST(RenderRunReport, ShowsAtMostMaxSamples) {
  ReportOptions options;
  options.max_samples = 2;
  options.title = "My <run>";
  absl::StatusOr<std::string> html = RenderRunReport(FixtureRun(), options);
  ASSERT_TRUE(html.ok()) << html.status();
  EXPECT_THAT(*html, HasSubstr("Showing 2 of 4 prompts."));
  EXPECT_THAT(*html, Not(HasSubstr("TEA GOLD")));
  EXPECT_THAT(*html, HasSubstr("<title>My &lt;run&gt;</title>"));
}

TEST(RenderRunReport, SaysWhatIsMissingOrMalformed) {
  absl::Status status = RenderRunReport("/nonexistent/run").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "run directory /nonexistent/run does not exist or is not a directory");

  const std::string empty = MakeTempDir();
  status = RenderRunReport(empty).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("nothing to report in " + empty));

  const std::string bad_metrics = MakeTempDir();
  ASSERT_TRUE(util::WriteFileAtomically(bad_metrics + "/metrics.jsonl",
                                        "{\"stage\":\"sft\",\"round\":0,\"step\":1,\"metrics\":{}}\n"
                                        "{\"stage\":\"sft\",\"round\":0,\"step\":\"2\",\"metrics\":{}}\n"
                                        "{\"stage\":\"sft\",\"round\":0,\"step\":3,\"metrics\":{}}\n")
                  .ok());
  status = RenderRunReport(bad_metrics).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), bad_metrics + "/metrics.jsonl:2: step: expected an integer, got \"2\"");

  const std::string bad_summary = RunWith({"metrics.jsonl"});
  ASSERT_TRUE(util::WriteFileAtomically(bad_summary + "/eval/summary.json", "{\"num_prompts\": 10}").ok());
  status = RenderRunReport(bad_summary).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), bad_summary + "/eval/summary.json: win_rate: missing");
}

TEST(RenderRunReport, LeavesOutATornLastLineAndSaysSo) {
  const std::string dir = RunWith({"metrics.jsonl"});
  const std::string whole = *util::ReadFile(dir + "/metrics.jsonl");
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/metrics.jsonl", whole + "{\"stage\":\"ppo\",\"rou").ok());
  absl::StatusOr<std::string> html = RenderRunReport(dir);
  ASSERT_TRUE(html.ok()) << html.status();
  EXPECT_THAT(*html, HasSubstr("The last line of metrics.jsonl is incomplete"));
  EXPECT_THAT(*html, HasSubstr("metrics.jsonl:36: not valid JSON"));
}

TEST(WriteRunReport, WritesTheRenderedPage) {
  const std::string out = MakeTempDir() + "/report.html";
  ASSERT_TRUE(WriteRunReport(FixtureRun(), out).ok());
  EXPECT_EQ(*util::ReadFile(out), *RenderRunReport(FixtureRun()));
}

TEST(FormatSummaryTable, PrintsBothPoliciesAndTheWinRate) {
  const task::EvalSummary summary = *task::ReadEvalSummary(FixtureRun() + "/eval/summary.json");
  EXPECT_EQ(FormatSummaryTable(summary),
            "                         SFT       PPO\n"
            "mean true score       -0.612    -0.401\n"
            "perfect answers        64.3%     77.1%\n"
            "\n"
            "PPO vs SFT win-rate, noiseless labeler: 0.572  95% CI [0.552, 0.591]  (2000 prompts, ties count half)\n"
            "PPO vs SFT win-rate, noisy labeler:     0.532  95% CI [0.511, 0.553]\n"
            "KL(PPO || SFT): 0.52 nats per response\n");
  task::EvalSummary bare = summary;
  bare.noisy_win_rate.reset();
  bare.kl_to_sft.reset();
  EXPECT_THAT(FormatSummaryTable(bare), Not(HasSubstr("noisy")));
  EXPECT_THAT(FormatSummaryTable(bare), Not(HasSubstr("KL")));
}

TEST(MetricsRecord, RoundTripsAndNamesBadFields) {
  MetricsRecord record;
  record.time = "2024-05-01T12:00:00Z";
  record.stage = "ppo";
  record.round = 2;
  record.step = 15;
  record.metrics = {{"ppo/kl", 0.25}, {"ppo/mean_reward", std::nan("")}};
  const std::string line = MetricsRecordToJsonLine(record);
  EXPECT_EQ(line, R"({"time":"2024-05-01T12:00:00Z","stage":"ppo","round":2,"step":15,)"
                  R"("metrics":{"ppo/kl":0.25,"ppo/mean_reward":null}})");
  absl::StatusOr<MetricsRecord> parsed = ParseMetricsLine(line);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->stage, "ppo");
  EXPECT_EQ(parsed->round, 2);
  EXPECT_EQ(parsed->step, 15);
  ASSERT_EQ(parsed->metrics.size(), 2u);
  EXPECT_EQ(parsed->metrics[0].first, "ppo/kl");
  EXPECT_TRUE(std::isnan(parsed->metrics[1].second));

  const auto message = [](absl::string_view line) { return std::string(ParseMetricsLine(line).status().message()); };
  EXPECT_EQ(message(R"({"round":0,"step":0,"metrics":{}})"), "stage: missing");
  EXPECT_EQ(message(R"({"stage":"","round":0,"step":0,"metrics":{}})"), "stage: expected a non-empty string, got \"\"");
  EXPECT_EQ(message(R"({"stage":"sft","step":0,"metrics":{}})"), "round: missing");
  EXPECT_EQ(message(R"({"stage":"sft","round":-1,"step":0,"metrics":{}})"), "round: expected >= 0, got -1");
  EXPECT_EQ(message(R"({"stage":"sft","round":0,"step":0})"), "metrics: missing");
  EXPECT_EQ(message(R"({"stage":"sft","round":0,"step":0,"metrics":{"a":"1"}})"),
            "metrics.\"a\": expected a number or null, got a JSON string");
  EXPECT_EQ(message(R"({"time":5,"stage":"sft","round":0,"step":0,"metrics":{}})"),
            "time: expected a string, got a JSON number");
  EXPECT_THAT(message("[1]"), StartsWith("expected a JSON object"));
}

}  // namespace
}  // namespace rlhf::report
