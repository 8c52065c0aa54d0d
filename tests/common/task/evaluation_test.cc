#include "common/task/evaluation.h"

#include <string>
#include <vector>

#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/task/test_dir.h"

namespace rlhf::task {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

EvalSummary ExampleSummary() {
  const std::vector<double> sft = {0, -1, 0, -2, 0};
  const std::vector<double> ppo = {0, 0, 0, -1, 0};
  const WinRate noiseless = *ComputeWinRate(ppo, sft);
  return MakeEvalSummary(noiseless, std::nullopt, *SummarizeScores(sft), *SummarizeScores(ppo), 0.42);
}

TEST(EvalSummary, MakeCopiesTheStatistics) {
  const EvalSummary s = ExampleSummary();
  EXPECT_EQ(s.num_prompts, 5);
  EXPECT_DOUBLE_EQ(s.win_rate, 0.7);  // 2 wins, 3 ties
  EXPECT_DOUBLE_EQ(s.confidence_level, 0.95);
  EXPECT_EQ(s.kl_to_sft, 0.42);
  EXPECT_FALSE(s.noisy_win_rate.has_value());
  EXPECT_DOUBLE_EQ(s.sft.mean_score, -0.6);
  EXPECT_DOUBLE_EQ(s.sft.perfect_fraction, 0.6);
  EXPECT_DOUBLE_EQ(s.ppo.perfect_fraction, 0.8);
}

TEST(EvalSummary, RoundTripsThroughItsJson) {
  EvalSummary s = ExampleSummary();
  s.noisy_win_rate = 0.55;
  s.noisy_ci_low = 0.41;
  s.noisy_ci_high = 0.69;
  const std::string json = EvalSummaryToJson(s);
  EXPECT_THAT(json, StartsWith("{\n  \"num_prompts\": 5,\n  \"win_rate\": 0.7,"));
  absl::StatusOr<EvalSummary> parsed = ParseEvalSummary(json);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->num_prompts, 5);
  EXPECT_DOUBLE_EQ(parsed->win_rate, s.win_rate);
  EXPECT_DOUBLE_EQ(parsed->ci_low, s.ci_low);
  EXPECT_DOUBLE_EQ(parsed->ci_high, s.ci_high);
  EXPECT_EQ(parsed->kl_to_sft, 0.42);
  EXPECT_EQ(parsed->noisy_win_rate, 0.55);
  EXPECT_EQ(parsed->noisy_ci_high, 0.69);
  EXPECT_DOUBLE_EQ(parsed->ppo.mean_score, s.ppo.mean_score);

  const std::string path = testing::MakeTempDir() + "/summary.json";
  ASSERT_TRUE(WriteEvalSummary(path, ExampleSummary()).ok());
  absl::StatusOr<EvalSummary> read = ReadEvalSummary(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_FALSE(read->noisy_win_rate.has_value());  // written as null
  EXPECT_THAT(*util::ReadFile(path), HasSubstr("\"noisy_win_rate\": null"));
}

TEST(EvalSummary, ParseNamesTheBadField) {
  const auto message = [](absl::string_view json) {
    const absl::Status status = ParseEvalSummary(json).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << json;
    return std::string(status.message());
  };
  const std::string policies = R"("sft": {"mean_score": -1, "perfect_fraction": 0.5},
                                  "ppo": {"mean_score": 0, "perfect_fraction": 0.6})";
  const std::string head = R"({"num_prompts": 10, "win_rate": 0.6, "ci_low": 0.5, "ci_high": 0.7,
                               "confidence_level": 0.95, )";
  EXPECT_TRUE(ParseEvalSummary(head + policies + "}").ok());
  EXPECT_THAT(message("[1]"), StartsWith("expected a JSON object"));
  EXPECT_THAT(message("{"), StartsWith("not valid JSON"));
  EXPECT_EQ(message(R"({"win_rate": 0.5})"), "num_prompts: missing");
  EXPECT_EQ(message(R"({"num_prompts": 2.5})"), "num_prompts=2.5 is not a count");
  EXPECT_EQ(message(R"({"num_prompts": 10, "win_rate": "high"})"), "win_rate: expected a number, got a JSON string");
  EXPECT_EQ(message(head + R"("kl_to_sft": "x", )" + policies + "}"),
            "kl_to_sft: expected a number or null, got a JSON string");
  EXPECT_EQ(message(head + R"("noisy_win_rate": 1.5, )" + policies + "}"), "noisy_win_rate=1.5 is outside [0, 1]");
  EXPECT_EQ(message(head + R"("sft": {"mean_score": 0}})"), "sft.perfect_fraction: missing");
  EXPECT_EQ(message(head + R"("sft": 3})"), "sft: expected an object, got a JSON number");
  const absl::Status status = ReadEvalSummary("/nonexistent/summary.json").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
}

TEST(EvalSamples, RoundTripAndReportTheBadLine) {
  const std::vector<EvalSample> samples = {{"list 2 food :", "tea tea", -1, "tea egg", 0},
                                           {"upper red cat :", "RED <script>", -1, "RED CAT", 0}};
  const std::string path = testing::MakeTempDir() + "/samples.jsonl";
  ASSERT_TRUE(WriteEvalSamples(path, samples).ok());
  EXPECT_EQ(EvalSampleToJsonLine(samples[0]),
            R"({"prompt":"list 2 food :","sft_response":"tea tea","sft_score":-1.0,"ppo_response":"tea egg",)"
            R"("ppo_score":0.0})");
  absl::StatusOr<std::vector<EvalSample>> read = ReadEvalSamples(path);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), 2u);
  EXPECT_EQ((*read)[1].sft_response, "RED <script>");
  EXPECT_EQ((*read)[1].ppo_score, 0);

  ASSERT_TRUE(util::WriteFileAtomically(path, EvalSampleToJsonLine(samples[0]) + "\n\n{\"prompt\": 1}\n").ok());
  const absl::Status status = ReadEvalSamples(path).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), path + ":3: prompt: expected a string, got a JSON number");
}

}  // namespace
}  // namespace rlhf::task
