// `rlhf label`: the ranking-line parser, and a terminal session against a labeling service on loopback.
#include "tools/cli/label_command.h"

#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/str_split.h"
#include "common/runtime/client.h"
#include "common/runtime/server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/labeling/labeling_service_impl.h"

namespace rlhf::cli {
namespace {

namespace v1 = ::rlhf::v1;

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Ranks = std::vector<std::pair<std::string, int32_t>>;

TEST(ParseRankingLineTest, OrderGivesRanksAndEqualsSignsTie) {
  const std::vector<std::string> ids = {"1", "2", "3"};
  EXPECT_EQ(*ParseRankingLine("2 1 3", ids), (Ranks{{"2", 1}, {"1", 2}, {"3", 3}}));
  EXPECT_EQ(*ParseRankingLine(" 3, 2=1 ", ids), (Ranks{{"3", 1}, {"2", 2}, {"1", 2}}));
  EXPECT_EQ(*ParseRankingLine("1=2=3", ids), (Ranks{{"1", 1}, {"2", 1}, {"3", 1}}));
  EXPECT_THAT(std::string(ParseRankingLine("1 2", ids).status().message()), HasSubstr("missing: 3"));
  EXPECT_THAT(std::string(ParseRankingLine("1 2 2 3", ids).status().message()), HasSubstr("'2' is ranked twice"));
  EXPECT_THAT(std::string(ParseRankingLine("1 2 4", ids).status().message()), HasSubstr("'4' is not a candidate"));
  EXPECT_FALSE(ParseRankingLine("1==2 3", ids).ok());
  EXPECT_FALSE(ParseRankingLine("", ids).ok());
}

TEST(LabelSessionTest, ATerminalSessionRanksWhatItShows) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto service = labeling::LabelingServiceImpl::Create({}, nullptr);
  ASSERT_TRUE(service.ok());
  runtime::ServerOptions server_options;
  server_options.name = "labeling-test";
  server_options.listen_address = "127.0.0.1:0";
  server_options.metrics_address = "127.0.0.1:0";
  auto server = runtime::Server::Start(server_options, {{"rlhf.v1.LabelingService", service->get()}}, registry);
  ASSERT_TRUE(server.ok()) << server.status();
  LabelSessionOptions options;
  options.client.target = "127.0.0.1:" + std::to_string((*server)->port());
  options.labeler_id = "alice";
  options.poll = absl::Milliseconds(100);
  options.stop_when_empty = true;

  auto channel = runtime::MakeChannel(options.client);
  auto stub = v1::LabelingService::NewStub(*channel);
  v1::EnqueueTasksRequest enqueue;
  enqueue.set_batch_id("b");
  enqueue.set_instructions("Pick the polite one.");
  v1::TaskSpec* spec = enqueue.add_tasks();
  spec->set_prompt("Say hello.");
  spec->add_responses("go away");
  spec->add_responses("hello there");
  v1::EnqueueTasksResponse queued;
  auto context = runtime::ContextWithTimeout(absl::Seconds(5));
  ASSERT_TRUE(stub->EnqueueTasks(context.get(), enqueue, &queued).ok());

  // A bad line is explained and asked again; then the polite answer goes first, whichever id it was shown under.
  // The script answers "1 2" after a bad line; the test then reads which text [1] was.
  std::istringstream in("1 1\n1 2\n");
  std::ostringstream out;
  auto submitted = RunLabelSession(options, in, out);
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  EXPECT_EQ(*submitted, 1);
  const std::string shown = out.str();
  EXPECT_THAT(shown, HasSubstr("Pick the polite one."));
  EXPECT_THAT(shown, HasSubstr("Say hello."));
  EXPECT_THAT(shown, HasSubstr("'1' is ranked twice"));
  EXPECT_THAT(shown, HasSubstr("recorded (1 answered"));
  const size_t first = shown.find("[1]\n");
  ASSERT_NE(first, std::string::npos);
  const std::string first_text = shown.substr(first + 4, shown.find('\n', first + 4) - first - 4);

  v1::GetRankingsRequest read;
  read.set_batch_id("b");
  v1::GetRankingsResponse rankings;
  context = runtime::ContextWithTimeout(absl::Seconds(5));
  ASSERT_TRUE(stub->GetRankings(context.get(), read, &rankings).ok());
  ASSERT_EQ(rankings.rankings_size(), 1);
  EXPECT_EQ(rankings.rankings(0).labeler_id(), "alice");
  // ranks are in the producer's order: "go away", "hello there".
  if (first_text == "hello there") {
    EXPECT_THAT(rankings.rankings(0).ranks(), ElementsAre(2, 1));
  } else {
    EXPECT_EQ(first_text, "go away");
    EXPECT_THAT(rankings.rankings(0).ranks(), ElementsAre(1, 2));
  }
  (*service)->Shutdown();
  (*server)->Shutdown();
}

}  // namespace
}  // namespace rlhf::cli
