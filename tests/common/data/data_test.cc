// Tests of common/data: readers, writers, the appender and splits, on real files in a temp dir.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <map>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/data/jsonl_appender.h"
#include "common/data/jsonl_reader.h"
#include "common/data/jsonl_writer.h"
#include "common/data/records.h"
#include "common/data/split.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/small_filesystem.h"

namespace rlhf::data {

// Readable failure output.
void PrintTo(const SftExample& e, std::ostream* os) { *os << "{" << e.prompt << " -> " << e.response << "}"; }
void PrintTo(const RankedResponse& r, std::ostream* os) { *os << "{" << r.text << " #" << r.rank << "}"; }
void PrintTo(const Comparison& c, std::ostream* os) {
  *os << "{" << c.prompt << ":";
  for (const RankedResponse& r : c.responses) *os << " " << r.text << "#" << r.rank;
  *os << "}";
}
void PrintTo(const ComparisonPair& p, std::ostream* os) { *os << "(" << p.winner << " > " << p.loser << ")"; }

namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

std::string NewTempDir() {
  std::string pattern = ::testing::TempDir() + "data_test_XXXXXX";
  EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
  return pattern;
}

// Writes `contents` to a file called `name` in a new temp dir and returns its path.
std::string WriteTemp(const std::string& name, const std::string& contents) {
  const std::string path = NewTempDir() + "/" + name;
  EXPECT_TRUE(util::WriteFileAtomically(path, contents).ok());
  return path;
}

void AppendRaw(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

std::string Contents(const std::string& path) {
  absl::StatusOr<std::string> contents = util::ReadFile(path);
  EXPECT_TRUE(contents.ok()) << contents.status();
  return contents.ok() ? *contents : "";
}

ReadOptions Skip() {
  ReadOptions options;
  options.policy = BadRecordPolicy::kSkip;
  return options;
}

// A bad line and what the error must say about it.
struct BadLine {
  std::string line;
  std::string message;
};

// Each bad line, in skip mode, is reported at its 1-based line number and skipped; in fail mode, after a good first
// line, it is the error "path:2: message".
template <typename ReadFn>
void ExpectBadLinesReported(const std::string& name, const std::string& good_line, const std::vector<BadLine>& bad,
                            ReadFn read, ReadOptions options = {}) {
  std::string contents = good_line + "\n";
  for (const BadLine& b : bad) contents += b.line + "\n";
  contents += good_line + "\n";
  const std::string path = WriteTemp(name, contents);

  options.policy = BadRecordPolicy::kSkip;
  auto result = read(path, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->records.size(), 2u);
  EXPECT_EQ(result->num_bad_records, bad.size());
  EXPECT_EQ(result->num_lines, bad.size() + 2);
  ASSERT_EQ(result->errors.size(), bad.size());
  for (size_t i = 0; i < bad.size(); ++i) {
    SCOPED_TRACE(bad[i].line);
    EXPECT_EQ(result->errors[i].path, path);
    EXPECT_EQ(result->errors[i].line, i + 2);
    EXPECT_THAT(result->errors[i].message, HasSubstr(bad[i].message));
    EXPECT_THAT(result->errors[i].ToString(), StartsWith(absl::StrCat(path, ":", i + 2, ": ")));
  }

  options.policy = BadRecordPolicy::kFail;
  for (const BadLine& b : bad) {
    SCOPED_TRACE(b.line);
    const std::string one = WriteTemp(name, good_line + "\n" + b.line + "\n" + good_line + "\n");
    auto failed = read(one, options);
    ASSERT_FALSE(failed.ok());
    EXPECT_EQ(failed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(failed.status().message()), HasSubstr(name + ":2: "));
    EXPECT_THAT(std::string(failed.status().message()), HasSubstr(one + ":2: " + b.message));
  }
}

// ---- Records --------------------------------------------------------------------------------------------------------

TEST(FindInvalidUtf8, AcceptsWellFormedAndPointsAtFirstIllFormedByte) {
  EXPECT_EQ(FindInvalidUtf8(""), std::string::npos);
  EXPECT_EQ(FindInvalidUtf8("plain ascii"), std::string::npos);
  EXPECT_EQ(FindInvalidUtf8("\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF"), std::string::npos);
  EXPECT_EQ(FindInvalidUtf8("ab\xFF"), 2u);
  EXPECT_EQ(FindInvalidUtf8("a\xC0\xAF"), 1u);         // overlong "/"
  EXPECT_EQ(FindInvalidUtf8("a\xE0\x80\xAF"), 1u);     // overlong, 3 bytes
  EXPECT_EQ(FindInvalidUtf8("\xED\xA0\x80"), 0u);      // surrogate U+D800
  EXPECT_EQ(FindInvalidUtf8("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(FindInvalidUtf8("ok \xE2\x82"), 3u);       // truncated at the end
  EXPECT_EQ(FindInvalidUtf8("\x80"), 0u);              // lone continuation byte
}

TEST(ComparisonPairs, OneTieAmongFourGivesFivePairsInIndexOrder) {
  const Comparison c{"p", {{"a", 3}, {"b", 1}, {"c", 2}, {"d", 1}}};
  EXPECT_THAT(ComparisonPairs(c), ElementsAre(ComparisonPair{1, 0}, ComparisonPair{2, 0}, ComparisonPair{3, 0},
                                              ComparisonPair{1, 2}, ComparisonPair{3, 2}));
}

TEST(ComparisonPairs, NoTiesGiveAllPairsAndAllTiesNone) {
  EXPECT_EQ(ComparisonPairs({"p", {{"a", 1}, {"b", 2}, {"c", 3}, {"d", 4}}}).size(), 6u);
  EXPECT_THAT(ComparisonPairs({"p", {{"a", 1}, {"b", 2}}}), ElementsAre(ComparisonPair{0, 1}));
  EXPECT_THAT(ComparisonPairs({"p", {{"a", 2}, {"b", 2}, {"c", 2}}}), IsEmpty());
}

// ---- SFT ------------------------------------------------------------------------------------------------------------

TEST(ReadSftExamples, ReadsRecordsWithBomCrlfBlankLinesAndNoFinalNewline) {
  const std::string path = WriteTemp("sft.jsonl",
                                     "\xEF\xBB\xBF{\"prompt\": \"a\", \"response\": \"b\"}\r\n"
                                     "\r\n"
                                     " \t \n"
                                     "{\"response\":\"d\",\"prompt\":\"c\",\"id\":7,\"meta\":{\"x\":[1]}}\n"
                                     "{\"prompt\":\"\xC3\xA9 \\\"q\\\"\\n\",\"response\":\"\\u00e9\"}");
  auto result = ReadSftExamples(path);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->records,
              ElementsAre(SftExample{"a", "b"}, SftExample{"c", "d"}, SftExample{"\xC3\xA9 \"q\"\n", "\xC3\xA9"}));
  EXPECT_EQ(result->num_lines, 5u);
  EXPECT_EQ(result->num_blank_lines, 2u);
  EXPECT_EQ(result->num_bad_records, 0u);
  EXPECT_THAT(result->errors, IsEmpty());
}

TEST(ReadSftExamples, ReportsEachBadLineWithItsLineNumber) {
  ReadOptions options;
  options.max_line_bytes = 80;
  ExpectBadLinesReported("sft.jsonl", R"({"prompt":"p","response":"r"})",
                         {
                             {R"({"prompt": "a", "response": )", "invalid JSON: "},
                             {R"({"prompt": "a"} trailing)", "invalid JSON: "},
                             {R"({"prompt":"a","response":"\ud800"})", "invalid JSON: "},  // escaped lone surrogate
                             {"[1, 2]", "expected a JSON object, got array"},
                             {R"("just a string")", "expected a JSON object, got string"},
                             {R"({"prompt":"a"})", "missing required field \"response\""},
                             {R"({"response":"a"})", "missing required field \"prompt\""},
                             {R"({"prompt":"a","response":5})", "field \"response\" must be a string, got number"},
                             {R"({"prompt":null,"response":"b"})", "field \"prompt\" must be a string, got null"},
                             {R"({"prompt":"","response":"b"})", "field \"prompt\" is empty"},
                             {R"({"prompt":"a","response":""})", "field \"response\" is empty"},
                             {"{\"prompt\":\"a\xFF\",\"response\":\"b\"}",
                              "line is not valid UTF-8 (ill-formed byte 0xFF at byte offset 12)"},
                             {"{\"prompt\":\"\xED\xA0\x80\",\"response\":\"b\"}", "line is not valid UTF-8"},
                             {R"({"prompt":")" + std::string(100, 'x') + R"(","response":"b"})",
                              "line has 128 bytes, more than the limit of 80"},
                         },
                         ReadSftExamples, options);
}

TEST(ReadSftExamples, FailModeNamesFileAndLineOfFirstBadRecord) {
  const std::string path = WriteTemp("sft.jsonl",
                                     "{\"prompt\":\"a\",\"response\":\"b\"}\n"
                                     "\n"
                                     "{\"prompt\":\"\",\"response\":\"b\"}\n"
                                     "{\"prompt\":\"a\"}\n");
  auto result = ReadSftExamples(path);  // kFail is the default
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(result.status().message(), path + ":3: field \"prompt\" is empty");
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("sft.jsonl:3: "));
}

TEST(ReadSftExamples, ListsOnlyMaxReportedErrorsButCountsAll) {
  const std::string path = WriteTemp("sft.jsonl", "x\ny\n{\"prompt\":\"a\",\"response\":\"b\"}\nz\n[]\n{}\n");
  ReadOptions options = Skip();
  options.max_reported_errors = 2;
  auto result = ReadSftExamples(path, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->records.size(), 1u);
  EXPECT_EQ(result->num_bad_records, 5u);
  ASSERT_EQ(result->errors.size(), 2u);
  EXPECT_EQ(result->errors[0].line, 1u);
  EXPECT_EQ(result->errors[1].line, 2u);
}

TEST(ReadSftExamples, LongLineIsSkippedAndLinesAfterItStillRead) {
  ReadOptions options = Skip();
  options.max_line_bytes = 1000;
  const std::string long_line = "{\"prompt\":\"" + std::string(200000, 'x') + "\",\"response\":\"b\"}";
  const std::string path =
      WriteTemp("sft.jsonl", long_line + "\n{\"prompt\":\"a\",\"response\":\"b\"}\r\n" + long_line);
  auto result = ReadSftExamples(path, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->records, ElementsAre(SftExample{"a", "b"}));
  ASSERT_EQ(result->errors.size(), 2u);
  EXPECT_EQ(result->errors[0].line, 1u);
  EXPECT_EQ(result->errors[1].line, 3u);
  EXPECT_THAT(result->errors[1].message, HasSubstr("line has 200028 bytes, more than the limit of 1000"));
}

TEST(ReadSftExamples, MissingFileIsNotFoundAndBadOptionsInvalid) {
  auto missing = ReadSftExamples(NewTempDir() + "/missing.jsonl");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("missing.jsonl"));

  const std::string path = WriteTemp("sft.jsonl", "");
  ReadOptions options;
  options.max_line_bytes = 0;
  EXPECT_EQ(ReadSftExamples(path, options).status().code(), absl::StatusCode::kInvalidArgument);
  options = {};
  options.max_responses_per_comparison = 1;
  EXPECT_EQ(ReadComparisons(path, options).status().code(), absl::StatusCode::kInvalidArgument);

  auto empty = ReadSftExamples(path);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_THAT(empty->records, IsEmpty());
  EXPECT_EQ(empty->num_lines, 0u);
}

// A device or pipe never ends: reading one would hang the caller for good (e.g. a trainer told to read /dev/zero).
TEST(ReadSftExamples, OnlyRegularFilesAreRead) {
  for (const char* path : {"/dev/zero", "/dev/null"}) {
    auto read = ReadSftExamples(path);
    EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument) << path;
    EXPECT_THAT(std::string(read.status().message()), HasSubstr("is not a regular file")) << path;
  }
  const std::string fifo = NewTempDir() + "/pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(ReadPrompts(fifo).status().code(), absl::StatusCode::kInvalidArgument);  // returns, no writer needed
  EXPECT_EQ(ReadSftExamples(NewTempDir()).status().code(), absl::StatusCode::kInvalidArgument);  // a folder
}

// A long read can be stopped: keep_going is asked every 64 KiB, also inside one very long line.
TEST(ReadSftExamples, KeepGoingStopsALongReadWithItsStatus) {
  const std::string path = WriteTemp("long.jsonl", std::string(1 << 20, 'x'));  // one line of 1 MiB, no newline
  ReadOptions options;
  int asked = 0;
  options.keep_going = [&]() -> absl::Status {
    return ++asked < 3 ? absl::OkStatus() : absl::CancelledError("the caller cancelled");
  };
  auto read = ReadSftExamples(path, options);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(asked, 3);
}

// ---- Comparisons ----------------------------------------------------------------------------------------------------

TEST(ReadComparisons, ReadsRankedAndPairwiseFormsAndTies) {
  const std::string path = WriteTemp(
      "comparisons.jsonl",
      R"({"prompt":"p1","responses":[{"text":"a","rank":2},{"text":"b","rank":1},{"text":"c","rank":3}]})"
      "\n"
      R"({"prompt":"p2","chosen":"good","rejected":"bad","labeler":"x"})"
      "\n"
      R"({"prompt":"p3","responses":[{"text":"a","rank":1},{"text":"b","rank":2},{"text":"c","rank":2},)"
      R"({"text":"","rank":4}]})"
      "\n"
      R"({"prompt":"p4","responses":[{"text":"same","rank":1},{"text":"same","rank":1},{"text":"x","rank":2}]})"
      "\n");
  auto result = ReadComparisons(path);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->records.size(), 4u);
  EXPECT_EQ(result->records[0], (Comparison{"p1", {{"a", 2}, {"b", 1}, {"c", 3}}}));
  EXPECT_EQ(result->records[1], (Comparison{"p2", {{"good", 1}, {"bad", 2}}}));
  EXPECT_EQ(result->records[2], (Comparison{"p3", {{"a", 1}, {"b", 2}, {"c", 2}, {"", 4}}}));
  EXPECT_EQ(ComparisonPairs(result->records[1]).size(), 1u);
  EXPECT_EQ(ComparisonPairs(result->records[2]).size(), 5u);  // K=4 with one tie
  EXPECT_EQ(ComparisonPairs(result->records[3]).size(), 2u);  // a duplicate text with the same rank is a tie
}

TEST(ReadComparisons, ReportsEachBadLineWithItsLineNumber) {
  std::string ten = R"({"prompt":"p","responses":[)";
  for (int i = 0; i < 10; ++i) ten += absl::StrCat(i ? "," : "", R"({"text":"r)", i, R"(","rank":)", i + 1, "}");
  ten += "]}";
  ExpectBadLinesReported(
      "comparisons.jsonl", R"({"prompt":"p","chosen":"a","rejected":"b"})",
      {
          {R"({"prompt":"p","responses":[{"text":"a","rank":1}]})", "a comparison needs at least 2 responses, got 1"},
          {R"({"prompt":"p","responses":[]})", "a comparison needs at least 2 responses, got 0"},
          {ten, "has 10 responses, more than the limit of 9"},
          {R"({"prompt":"p","responses":[{"text":"a","rank":1},{"text":"b","rank":0}]})",
           "responses[1].rank must be a positive integer, got 0"},
          {R"({"prompt":"p","responses":[{"text":"a","rank":-1},{"text":"b","rank":1}]})",
           "responses[0].rank must be a positive integer, got -1"},
          {R"({"prompt":"p","responses":[{"text":"a","rank":1.5},{"text":"b","rank":1}]})",
           "responses[0].rank must be a positive integer, got 1.5"},
          {R"({"prompt":"p","responses":[{"text":"a","rank":"1"},{"text":"b","rank":2}]})",
           "responses[0].rank must be a positive integer, got \"1\""},
          {R"({"prompt":"p","responses":[{"text":"a","rank":)" + std::string(100000, '[') + std::string(100000, ']') +
               R"(},{"text":"b","rank":2}]})",
           "responses[0].rank must be a positive integer, got array"},
          {R"({"prompt":"p","responses":[{"text":"a","rank":3000000000},{"text":"b","rank":2}]})",
           "responses[0].rank 3000000000 is too large"},
          {R"({"prompt":"p","responses":[{"text":"a"},{"text":"b","rank":2}]})",
           "responses[0] is missing required field \"rank\""},
          {R"({"prompt":"p","responses":[{"rank":1},{"text":"b","rank":2}]})",
           "responses[0] is missing required field \"text\""},
          {R"({"prompt":"p","responses":[{"text":1,"rank":1},{"text":"b","rank":2}]})",
           "responses[0].text must be a string, got number"},
          {R"({"prompt":"p","responses":[{"text":"a","rank":1},"b"]})", "responses[1] must be an object, got string"},
          {R"({"prompt":"p","responses":{"text":"a","rank":1}})", "field \"responses\" must be an array, got object"},
          {R"({"prompt":"p","responses":[{"text":"a","rank":1},{"text":"b","rank":2},{"text":"a","rank":3}]})",
           "responses[0] and responses[2] have the same text but different ranks (1 and 3)"},
          {R"({"prompt":"p","responses":[{"text":"a","rank":2},{"text":"b","rank":2}]})",
           "all responses tie (rank 2): no comparison pair"},
          {R"({"prompt":"p","chosen":"a","rejected":"b","responses":[]})", "ambiguous comparison"},
          {R"({"prompt":"p"})", "missing \"responses\" (ranked form) or \"chosen\" and \"rejected\""},
          {R"({"prompt":"p","chosen":"a"})", "missing required field \"rejected\""},
          {R"({"prompt":"p","chosen":"a","rejected":"a"})", "\"chosen\" and \"rejected\" are the same text"},
          {R"({"prompt":"","chosen":"a","rejected":"b"})", "field \"prompt\" is empty"},
          {"{\"prompt\":\"p\",\"chosen\":\"\xC3\",\"rejected\":\"b\"}", "line is not valid UTF-8"},
      },
      ReadComparisons);
}

TEST(ReadComparisons, MaxResponsesIsAnOption) {
  const std::string path =
      WriteTemp("comparisons.jsonl",
                R"({"prompt":"p","responses":[{"text":"a","rank":1},{"text":"b","rank":2},{"text":"c","rank":3}]})"
                "\n");
  ReadOptions options;
  options.max_responses_per_comparison = 2;
  auto result = ReadComparisons(path, options);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(result.status().message(), path + ":1: has 3 responses, more than the limit of 2");
  options.max_responses_per_comparison = 3;
  EXPECT_TRUE(ReadComparisons(path, options).ok());
}

// ---- Prompts --------------------------------------------------------------------------------------------------------

TEST(ReadPrompts, ReadsPromptsAndReportsBadLines) {
  const std::string path = WriteTemp("prompts.jsonl",
                                     "{\"prompt\":\"list 3 animals\"}\n"
                                     "{\"text\":\"no prompt\"}\n"
                                     "{\"prompt\":[\"a\"]}\n"
                                     "\n"
                                     "{\"prompt\":\"reverse a b\",\"split\":\"train\"}\n");
  auto result = ReadPrompts(path, Skip());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->records, ElementsAre(PromptRecord{"list 3 animals"}, PromptRecord{"reverse a b"}));
  ASSERT_EQ(result->errors.size(), 2u);
  EXPECT_EQ(result->errors[0].ToString(), path + ":2: missing required field \"prompt\"");
  EXPECT_EQ(result->errors[1].ToString(), path + ":3: field \"prompt\" must be a string, got array");
  EXPECT_EQ(result->num_blank_lines, 1u);

  auto failed = ReadPrompts(path);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(failed.status().message(), path + ":2: missing required field \"prompt\"");
}

// Chat prompts: "messages" in place of "prompt" in every record kind, an SFT response as the last assistant
// message, the refusals naming the field, and writers that write them back.
TEST(ReadChatRecords, MessagesStandForThePromptInEveryRecordKind) {
  const std::vector<ChatTurn> conversation = {{"system", "Be brief."}, {"user", "list 3 animals"}};
  const std::string messages =
      R"("messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"list 3 animals"}])";
  const std::string prompts_path = WriteTemp("chat_prompts.jsonl", "{" + messages + "}\n");
  auto prompts = ReadPrompts(prompts_path);
  ASSERT_TRUE(prompts.ok()) << prompts.status();
  ASSERT_EQ(prompts->records.size(), 1u);
  EXPECT_EQ(prompts->records[0].messages, conversation);
  EXPECT_EQ(prompts->records[0].prompt, "system: Be brief.\nuser: list 3 animals");

  const std::string sft_path = WriteTemp(
      "chat_sft.jsonl",
      "{" + messages + R"(,"response":"cat dog cow"})" + "\n" +
          R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]})" + "\n");
  auto sft = ReadSftExamples(sft_path);
  ASSERT_TRUE(sft.ok()) << sft.status();
  ASSERT_EQ(sft->records.size(), 2u);
  EXPECT_EQ(sft->records[0].messages, conversation);
  EXPECT_EQ(sft->records[0].response, "cat dog cow");
  EXPECT_EQ(sft->records[1].messages, (std::vector<ChatTurn>{{"user", "hi"}}));
  EXPECT_EQ(sft->records[1].response, "hello");
  EXPECT_EQ(sft->records[1].prompt, "user: hi");

  const std::string comparisons_path =
      WriteTemp("chat_comparisons.jsonl", "{" + messages + R"(,"chosen":"cat dog cow","rejected":"rock"})" + "\n");
  auto comparisons = ReadComparisons(comparisons_path);
  ASSERT_TRUE(comparisons.ok()) << comparisons.status();
  ASSERT_EQ(comparisons->records.size(), 1u);
  EXPECT_EQ(comparisons->records[0].messages, conversation);

  // Written back as messages, and read again the same.
  const std::string dir = NewTempDir();
  ASSERT_TRUE(WriteSftExamples(dir + "/sft.jsonl", sft->records).ok());
  EXPECT_EQ(ReadSftExamples(dir + "/sft.jsonl")->records, sft->records);
  ASSERT_TRUE(WriteComparisons(dir + "/c.jsonl", comparisons->records).ok());
  EXPECT_EQ(ReadComparisons(dir + "/c.jsonl")->records, comparisons->records);
  ASSERT_TRUE(WritePrompts(dir + "/p.jsonl", prompts->records).ok());
  EXPECT_EQ(ReadPrompts(dir + "/p.jsonl")->records, prompts->records);

  const std::string bad_path = WriteTemp(
      "chat_bad.jsonl",
      std::string(R"({"prompt":"p","messages":[{"role":"user","content":"x"}]})") + "\n" +
          R"({"messages":[]})" + "\n" + R"({"messages":[{"content":"x"}]})" + "\n" +
          R"({"messages":[{"role":"","content":"x"}]})" + "\n" + R"({"messages":"hi"})" + "\n");
  auto bad = ReadPrompts(bad_path, Skip());
  ASSERT_TRUE(bad.ok()) << bad.status();
  ASSERT_EQ(bad->errors.size(), 5u);
  EXPECT_THAT(bad->errors[0].message, HasSubstr("has both \"prompt\" and \"messages\""));
  EXPECT_THAT(bad->errors[1].message, HasSubstr("field \"messages\" is empty"));
  EXPECT_THAT(bad->errors[2].message, HasSubstr("messages[0] is missing required field \"role\""));
  EXPECT_THAT(bad->errors[3].message, HasSubstr("messages[0].role is empty"));
  EXPECT_THAT(bad->errors[4].message, HasSubstr("field \"messages\" must be an array"));
  const std::string no_reply =
      WriteTemp("chat_no_reply.jsonl", R"({"messages":[{"role":"user","content":"hi"}]})" "\n");
  auto refused = ReadSftExamples(no_reply);
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("is not the assistant's"));
}

// ---- Pretraining text -----------------------------------------------------------------------------------------------

TEST(ReadPretrainingTexts, PlainTextSplitsDocumentsOnBlankLines) {
  const std::string path = WriteTemp("corpus.txt",
                                     "\xEF\xBB\xBF"
                                     "first doc, line 1\r\n"
                                     "  line 2 keeps its indent\r\n"
                                     "\r\n"
                                     "\n"
                                     " \t\n"
                                     "second doc\n"
                                     "\n"
                                     "third doc without final newline");
  auto result = ReadPretrainingTexts(path);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->records,
              ElementsAre(PretrainingText{"first doc, line 1\n  line 2 keeps its indent"},
                          PretrainingText{"second doc"}, PretrainingText{"third doc without final newline"}));
  EXPECT_EQ(result->num_lines, 8u);
  EXPECT_EQ(result->num_blank_lines, 4u);
}

TEST(ReadPretrainingTexts, PlainTextDropsDocumentWithBadLine) {
  const std::string path = WriteTemp("corpus.txt",
                                     "good doc\n"
                                     "\n"
                                     "bad doc \xFF here\n"
                                     "more of the bad doc \xFE\n"
                                     "\n"
                                     "last doc\n");
  auto result = ReadPretrainingTexts(path, Skip());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->records, ElementsAre(PretrainingText{"good doc"}, PretrainingText{"last doc"}));
  EXPECT_EQ(result->num_bad_records, 1u);
  ASSERT_EQ(result->errors.size(), 1u);
  EXPECT_EQ(result->errors[0].ToString(), path + ":3: line is not valid UTF-8 (ill-formed byte 0xFF at byte offset 8)");

  auto failed = ReadPretrainingTexts(path);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(failed.status().message()), StartsWith(path + ":3: line is not valid UTF-8"));
}

TEST(ReadPretrainingTexts, JsonlHasOneTextALine) {
  const std::string path =
      WriteTemp("corpus.jsonl", "{\"text\":\"one\\n\\ntwo\"}\n{\"text\":\"\"}\n{\"text\":\"x\"}\n");
  auto result = ReadPretrainingTexts(path, Skip());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->records, ElementsAre(PretrainingText{"one\n\ntwo"}, PretrainingText{"x"}));
  ASSERT_EQ(result->errors.size(), 1u);
  EXPECT_EQ(result->errors[0].ToString(), path + ":2: field \"text\" is empty");
}

TEST(ReadPretrainingTexts, UnknownExtensionIsInvalidArgument) {
  const std::string path = WriteTemp("corpus.csv", "a\n");
  auto result = ReadPretrainingTexts(path);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("expected a .jsonl or .txt extension"));
}

// ---- Writers --------------------------------------------------------------------------------------------------------

TEST(Writers, WriteFixedKeyOrderAndRawUtf8) {
  const std::string dir = NewTempDir();
  ASSERT_TRUE(WriteSftExamples(dir + "/sft.jsonl", {{"p \xC3\xA9", "r"}}).ok());
  EXPECT_EQ(Contents(dir + "/sft.jsonl"), "{\"prompt\":\"p \xC3\xA9\",\"response\":\"r\"}\n");
  ASSERT_TRUE(WriteComparisons(dir + "/c.jsonl", {{"p", {{"a", 1}, {"b", 2}}}}).ok());
  EXPECT_EQ(Contents(dir + "/c.jsonl"),
            "{\"prompt\":\"p\",\"responses\":[{\"text\":\"a\",\"rank\":1},{\"text\":\"b\",\"rank\":2}]}\n");
  ASSERT_TRUE(WritePrompts(dir + "/prompts.jsonl", {{"x"}, {"y"}}).ok());
  EXPECT_EQ(Contents(dir + "/prompts.jsonl"), "{\"prompt\":\"x\"}\n{\"prompt\":\"y\"}\n");
}

TEST(Writers, WriteThenReadRoundTrips) {
  const std::string dir = NewTempDir();
  const std::string tricky = std::string("quote \" backslash \\ newline \n tab \t nul ") + std::string(1, '\0') +
                             " \xE2\x9C\x93 \xF0\x9F\x98\x80 \r\n";
  const std::vector<SftExample> sft = {{"a", "b"}, {tricky, tricky + "!"}};
  ASSERT_TRUE(WriteSftExamples(dir + "/sft.jsonl", sft).ok());
  auto sft_back = ReadSftExamples(dir + "/sft.jsonl");
  ASSERT_TRUE(sft_back.ok()) << sft_back.status();
  EXPECT_EQ(sft_back->records, sft);
  EXPECT_EQ(sft_back->num_lines, 2u);

  const std::vector<Comparison> comparisons = {
      {"p", {{"a", 1}, {"b", 2}}},
      {tricky, {{"x", 2}, {"", 4}, {"y", 2}, {tricky, 1}}},
  };
  ASSERT_TRUE(WriteComparisons(dir + "/c.jsonl", comparisons).ok());
  auto comparisons_back = ReadComparisons(dir + "/c.jsonl");
  ASSERT_TRUE(comparisons_back.ok()) << comparisons_back.status();
  EXPECT_EQ(comparisons_back->records, comparisons);

  const std::vector<PromptRecord> prompts = {{"one"}, {tricky}};
  ASSERT_TRUE(WritePrompts(dir + "/prompts.jsonl", prompts).ok());
  auto prompts_back = ReadPrompts(dir + "/prompts.jsonl");
  ASSERT_TRUE(prompts_back.ok()) << prompts_back.status();
  EXPECT_EQ(prompts_back->records, prompts);

  const std::vector<PretrainingText> texts = {{"doc one\n\nparagraph two"}, {tricky}};
  ASSERT_TRUE(WritePretrainingTexts(dir + "/corpus.jsonl", texts).ok());
  auto texts_back = ReadPretrainingTexts(dir + "/corpus.jsonl");
  ASSERT_TRUE(texts_back.ok()) << texts_back.status();
  EXPECT_EQ(texts_back->records, texts);
}

TEST(Writers, RejectInvalidRecordAndWriteNothing) {
  const std::string dir = NewTempDir();
  absl::Status status = WriteSftExamples(dir + "/sft.jsonl", {{"a", "b"}, {"a", ""}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "records[1]: field \"response\" is empty");
  struct stat st;
  EXPECT_NE(::stat((dir + "/sft.jsonl").c_str(), &st), 0);

  status = WritePrompts(dir + "/prompts.jsonl", {{"bad \xFF"}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("records[0]: field \"prompt\" is not valid UTF-8"));

  status = WriteComparisons(dir + "/c.jsonl", {{"p", {{"a", 1}, {"b", 1}}}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("all responses tie"));
}

// ---- JsonlAppender --------------------------------------------------------------------------------------------------

TEST(JsonlAppender, CreatesFileAndAppendsReadableLines) {
  const std::string path = NewTempDir() + "/comparisons.jsonl";
  auto appender = JsonlAppender::Open(path);
  ASSERT_TRUE(appender.ok()) << appender.status();
  EXPECT_TRUE((*appender)->recovery().created);
  EXPECT_EQ((*appender)->recovery().truncated_bytes, 0u);
  const Comparison first{"p", {{"a", 1}, {"b", 2}}};
  const Comparison second{"q", {{"c", 2}, {"d", 1}, {"e", 2}}};
  ASSERT_TRUE((*appender)->Append(first).ok());
  ASSERT_TRUE((*appender)->Append(second).ok());
  EXPECT_EQ((*appender)->size(), Contents(path).size());
  ASSERT_TRUE((*appender)->Close().ok());
  EXPECT_EQ((*appender)->Append(first).code(), absl::StatusCode::kFailedPrecondition);

  auto read = ReadComparisons(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(read->records, ElementsAre(first, second));
}

TEST(JsonlAppender, ReopenCutsTornLastLineAndKeepsAppending) {
  const std::string path = NewTempDir() + "/sft.jsonl";
  {
    auto appender = JsonlAppender::Open(path);
    ASSERT_TRUE(appender.ok()) << appender.status();
    ASSERT_TRUE((*appender)->Append(SftExample{"a", "b"}).ok());
    ASSERT_TRUE((*appender)->Append(SftExample{"c", "d"}).ok());
  }
  const std::string whole = Contents(path);
  const std::string torn = "{\"prompt\":\"e\",\"resp";  // a crash in the middle of a write
  AppendRaw(path, torn);

  auto appender = JsonlAppender::Open(path);
  ASSERT_TRUE(appender.ok()) << appender.status();
  EXPECT_FALSE((*appender)->recovery().created);
  EXPECT_EQ((*appender)->recovery().truncated_bytes, torn.size());
  EXPECT_EQ((*appender)->recovery().kept_bytes, whole.size());
  EXPECT_EQ(Contents(path), whole);
  ASSERT_TRUE((*appender)->Append(SftExample{"e", "f"}).ok());
  ASSERT_TRUE((*appender)->Close().ok());

  auto read = ReadSftExamples(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(read->records, ElementsAre(SftExample{"a", "b"}, SftExample{"c", "d"}, SftExample{"e", "f"}));
}

TEST(JsonlAppender, TornOnlyLineLeavesEmptyFile) {
  const std::string path = WriteTemp("prompts.jsonl", "{\"prompt\":\"x");
  auto appender = JsonlAppender::Open(path);
  ASSERT_TRUE(appender.ok()) << appender.status();
  EXPECT_EQ((*appender)->recovery().truncated_bytes, 12u);
  EXPECT_EQ((*appender)->recovery().kept_bytes, 0u);
  EXPECT_EQ(Contents(path), "");
}

TEST(JsonlAppender, SecondAppenderOnSameFileIsRefusedUntilClose) {
  const std::string path = NewTempDir() + "/c.jsonl";
  auto first = JsonlAppender::Open(path);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = JsonlAppender::Open(path);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("already open"));
  ASSERT_TRUE((*first)->Close().ok());
  EXPECT_TRUE(JsonlAppender::Open(path).ok());
}

TEST(JsonlAppender, AFullDiskRefusesAnAppendWholeAndTheNextOneWorksOnceSpaceReturns) {
  RLHF_MOUNT_SMALL_FILESYSTEM_OR_SKIP(fs, 256 << 10);
  const std::string path = fs->path() + "/metrics.jsonl";
  auto appender = JsonlAppender::Open(path);
  ASSERT_TRUE(appender.ok()) << appender.status();
  ASSERT_TRUE((*appender)->AppendLine(R"({"step":0})").ok());
  ASSERT_TRUE(fs->Fill().ok());
  // The file's last page takes a few lines; one of them is cut short by ENOSPC and must leave no trace.
  const std::string pad(300, 'p');
  absl::Status full;
  int appended = 1;
  for (int step = 1; step < 100 && full.ok(); ++step) {
    full = (*appender)->AppendLine(absl::StrCat(R"({"step":)", step, R"(,"pad":")", pad, R"("})"));
    if (full.ok()) ++appended;
  }
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_THAT(std::string(full.message()), HasSubstr("No space left on device"));
  EXPECT_EQ((*appender)->size(), Contents(path).size());
  EXPECT_EQ(Contents(path).back(), '\n');
  ASSERT_TRUE(fs->Free().ok());
  ASSERT_TRUE((*appender)->AppendLine(R"({"step":"after"})").ok());
  ASSERT_TRUE((*appender)->Close().ok());
  int lines = 0;
  for (absl::string_view line : absl::StrSplit(Contents(path), '\n', absl::SkipEmpty())) {
    EXPECT_TRUE(absl::StartsWith(line, "{") && absl::EndsWith(line, "}")) << line;
    ++lines;
  }
  EXPECT_EQ(lines, appended + 1);
}

TEST(JsonlAppender, RejectsBadRecordsAndLineBreaksWithoutWriting) {
  const std::string path = NewTempDir() + "/c.jsonl";
  JsonlAppenderOptions options;
  options.sync_each_append = false;
  auto appender = JsonlAppender::Open(path, options);
  ASSERT_TRUE(appender.ok()) << appender.status();
  EXPECT_EQ((*appender)->AppendLine("{}\n{}").code(), absl::StatusCode::kInvalidArgument);
  const absl::Status status = (*appender)->Append(Comparison{"p", {{"a", 1}, {"a", 2}}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("same text but different ranks"));
  EXPECT_EQ((*appender)->Append(PromptRecord{""}).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*appender)->Append(PromptRecord{"ok"}).ok());
  ASSERT_TRUE((*appender)->Flush().ok());
  EXPECT_EQ(Contents(path), "{\"prompt\":\"ok\"}\n");
}

TEST(JsonlAppender, ConcurrentAppendsKeepLinesWhole) {
  const std::string path = NewTempDir() + "/prompts.jsonl";
  JsonlAppenderOptions options;
  options.sync_each_append = false;
  auto appender = JsonlAppender::Open(path, options);
  ASSERT_TRUE(appender.ok()) << appender.status();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        EXPECT_TRUE((*appender)->Append(PromptRecord{absl::StrCat("thread ", t, " prompt ", i)}).ok());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  ASSERT_TRUE((*appender)->Close().ok());
  auto read = ReadPrompts(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->records.size(), 200u);
}

TEST(JsonlAppender, MissingFileIsNotFoundWithoutCreateIfMissing) {
  JsonlAppenderOptions options;
  options.create_if_missing = false;
  auto appender = JsonlAppender::Open(NewTempDir() + "/missing.jsonl", options);
  EXPECT_EQ(appender.status().code(), absl::StatusCode::kNotFound);
}

// ---- SplitByPrompt --------------------------------------------------------------------------------------------------

std::vector<SftExample> ThreeRecordsPerPrompt(int num_prompts) {
  std::vector<SftExample> records;
  for (int r = 0; r < 3; ++r) {
    for (int p = 0; p < num_prompts; ++p) records.push_back({absl::StrCat("prompt ", p), absl::StrCat("resp ", r)});
  }
  return records;
}

TEST(SplitByPrompt, KeepsEveryPromptOnOneSide) {
  const std::vector<SftExample> records = ThreeRecordsPerPrompt(400);
  auto split = SplitByPrompt(records, 0.25, 7);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(split->train.size() + split->validation.size(), records.size());
  std::map<std::string, int> train_count, validation_count;
  for (const SftExample& e : split->train) ++train_count[e.prompt];
  for (const SftExample& e : split->validation) ++validation_count[e.prompt];
  for (const auto& [prompt, count] : validation_count) {
    EXPECT_EQ(count, 3) << prompt;
    EXPECT_EQ(train_count.count(prompt), 0u) << prompt;
  }
  for (const auto& [prompt, count] : train_count) EXPECT_EQ(count, 3) << prompt;
  // About a quarter of 400 prompts (the expectation is 100, the standard deviation under 9).
  EXPECT_GT(validation_count.size(), 70u);
  EXPECT_LT(validation_count.size(), 130u);
  // Input order is kept on each side.
  EXPECT_EQ(split->validation.front().response, "resp 0");
  EXPECT_EQ(split->validation.back().response, "resp 2");
}

TEST(SplitByPrompt, IsDeterministicAndDependsOnSeed) {
  const std::vector<SftExample> records = ThreeRecordsPerPrompt(100);
  auto a = SplitByPrompt(records, 0.3, 42);
  auto b = SplitByPrompt(records, 0.3, 42);
  auto c = SplitByPrompt(records, 0.3, 43);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->validation, b->validation);
  EXPECT_EQ(a->train, b->train);
  EXPECT_NE(a->validation, c->validation);
  // A prompt keeps its side when the dataset changes around it.
  std::vector<SftExample> fewer(records.begin(), records.begin() + 50);
  auto d = SplitByPrompt(fewer, 0.3, 42);
  ASSERT_TRUE(d.ok());
  for (const SftExample& e : d->validation) EXPECT_TRUE(IsValidationPrompt(e.prompt, 0.3, 42)) << e.prompt;
}

TEST(SplitByPrompt, HashIsPinnedAcrossBuilds) {
  // Changing the hash would reshuffle every run's validation set; these values pin it.
  std::string validation;
  for (int p = 0; p < 16; ++p) {
    if (IsValidationPrompt(absl::StrCat("prompt ", p), 0.5, 1)) absl::StrAppend(&validation, p, " ");
  }
  EXPECT_EQ(validation, "2 5 8 9 13 14 15 ");  // also computed by an independent Python version
}

TEST(SplitByPrompt, FractionEdgesAndInvalidFractions) {
  const std::vector<PromptRecord> prompts = {{"a"}, {"b"}, {"c"}};
  auto none = SplitByPrompt(prompts, 0.0, 1);
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(none->validation, IsEmpty());
  auto all = SplitByPrompt(prompts, 1.0, 1);
  ASSERT_TRUE(all.ok());
  EXPECT_THAT(all->train, IsEmpty());
  EXPECT_EQ(all->validation, prompts);
  for (double bad : {-0.1, 1.5, std::nan("")}) {
    auto split = SplitByPrompt(prompts, bad, 1);
    EXPECT_EQ(split.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(split.status().message()), HasSubstr("validation_fraction must be in [0, 1]"));
  }
}

}  // namespace
}  // namespace rlhf::data
