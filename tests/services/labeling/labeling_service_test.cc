// The labeling service over gRPC on loopback, and the human-queue labeler against it: people (a bot here, ranking
// longer responses higher) take tasks with NextTask and answer with SubmitRanking while the labeler waits for them.
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/labeling/human_queue_labeler.h"
#include "common/runtime/client.h"
#include "common/runtime/server.h"
#include "common/runtime/status_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rlhf/v1/labeling.grpc.pb.h"
#include "services/labeling/labeling_service_impl.h"
#include "tests/testing/labeling_bot.h"
#include "tests/testing/test_util.h"

namespace rlhf::labeling {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct LabelingServer {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<LabelingServiceImpl> service;
  std::unique_ptr<runtime::Server> server;
  std::unique_ptr<v1::LabelingService::Stub> stub;
  std::string address;

  // `tokens`: the text of a token file (`TOKEN NAME ROLES` lines); empty: no authentication.
  static std::unique_ptr<LabelingServer> Start(const std::string& state_dir,
                                               absl::Duration task_timeout = absl::Minutes(10),
                                               const std::string& tokens = "") {
    auto s = std::make_unique<LabelingServer>();
    std::shared_ptr<const runtime::Authenticator> authenticator;
    if (!tokens.empty()) {
      auto parsed = runtime::Authenticator::ParseTokens("tokens", tokens);
      EXPECT_TRUE(parsed.ok()) << parsed.status();
      authenticator = std::make_shared<const runtime::Authenticator>(
          *std::move(parsed), std::map<std::string, runtime::RoleSet, std::less<>>{});
    }
    LabelingServiceOptions options;
    options.queue.state_dir = state_dir;
    options.queue.default_task_timeout = task_timeout;
    options.authenticator = authenticator;
    auto service = LabelingServiceImpl::Create(options, s->registry.get());
    EXPECT_TRUE(service.ok()) << service.status();
    if (!service.ok()) return nullptr;
    s->service = *std::move(service);
    runtime::ServerOptions server_options;
    server_options.name = "labeling-test";
    server_options.listen_address = "127.0.0.1:0";
    server_options.metrics_address = "127.0.0.1:0";
    server_options.shutdown_deadline = absl::Seconds(20);
    server_options.security.authenticator = authenticator;
    auto server = runtime::Server::Start(server_options, {{"rlhf.v1.LabelingService", s->service.get()}},
                                         s->registry);
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return nullptr;
    s->server = *std::move(server);
    s->address = "127.0.0.1:" + std::to_string(s->server->port());
    runtime::ClientOptions client;
    client.target = s->address;
    s->stub = v1::LabelingService::NewStub(*runtime::MakeChannel(client));
    return s;
  }
  void Stop() {
    service->Shutdown();
    server->Shutdown();
  }
  // A stub that sends `token`.
  std::unique_ptr<v1::LabelingService::Stub> StubWithToken(const std::string& token) const {
    runtime::ClientOptions client;
    client.target = address;
    client.bearer_token = token;
    return v1::LabelingService::NewStub(*runtime::MakeChannel(client));
  }
};

using testing::LabelingBot;
using testing::NextTask;
using testing::RankByLength;

std::vector<RankingTask> Tasks(int n) {
  std::vector<RankingTask> tasks;
  for (int i = 0; i < n; ++i) {
    tasks.push_back({"prompt " + std::to_string(i), {"xx", "x", std::string(3 + i, 'y')}});
  }
  return tasks;
}

HumanQueueLabelerOptions LabelerOptions(const std::string& address) {
  HumanQueueLabelerOptions o;
  o.client.target = address;
  o.poll_interval = absl::Milliseconds(50);
  return o;
}

TEST(LabelingServiceTest, RequestsAreValidatedAndAnEmptyQueueAnswersNotFound) {
  auto s = LabelingServer::Start("");
  ASSERT_TRUE(s);
  v1::LabelingTask task;
  grpc::Status status = NextTask(*s->stub, "", absl::ZeroDuration(), &task);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("labeler_id"));
  const absl::Time start = absl::Now();
  status = NextTask(*s->stub, "alice", absl::Milliseconds(200), &task);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(190));

  v1::EnqueueTasksRequest enqueue;
  enqueue.set_batch_id("b");
  enqueue.add_tasks()->set_prompt("only one response");
  enqueue.mutable_tasks(0)->add_responses("r");
  v1::EnqueueTasksResponse queued;
  auto context = runtime::ContextWithTimeout(absl::Seconds(5));
  status = s->stub->EnqueueTasks(context.get(), enqueue, &queued);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("tasks[0].responses"));

  v1::SubmitRankingRequest submit;
  submit.set_task_id("t-0");
  submit.set_labeler_id("alice");
  v1::SubmitRankingResponse submitted;
  context = runtime::ContextWithTimeout(absl::Seconds(5));
  EXPECT_EQ(s->stub->SubmitRanking(context.get(), submit, &submitted).error_code(), grpc::StatusCode::NOT_FOUND);
  s->Stop();
}

TEST(LabelingServiceTest, TheHumanQueueLabelerGetsEveryRankingPeopleSubmit) {
  auto s = LabelingServer::Start("");
  ASSERT_TRUE(s);
  auto labeler = HumanQueueLabeler::Create(LabelerOptions(s->address));
  ASSERT_TRUE(labeler.ok()) << labeler.status();
  LabelingBot alice(s->address, "alice"), bob(s->address, "bob");
  LabelingOptions options;
  options.run_id = "run-1";
  options.round = 2;
  int64_t last_progress = -1;
  options.progress = [&](int64_t done, int64_t total) {
    EXPECT_EQ(total, 6);
    EXPECT_GE(done, last_progress);
    last_progress = done;
  };
  auto judgements = (*labeler)->Judge(Tasks(6), options);
  ASSERT_TRUE(judgements.ok()) << judgements.status();
  EXPECT_EQ(last_progress, 6);
  for (const auto& j : *judgements) {
    ASSERT_TRUE(j.has_value());
    EXPECT_THAT(j->ranks, ElementsAre(2, 3, 1));  // "xx", "x", "yyy...": longest first
    EXPECT_THAT(j->labeler_id, ::testing::AnyOf("alice", "bob"));
    EXPECT_EQ(j->preferences.size(), 3u);
  }
  EXPECT_EQ(alice.answered() + bob.answered(), 6);

  v1::GetQueueStatsRequest stats_request;
  stats_request.set_run_id("run-1");
  v1::QueueStats stats;
  auto context = runtime::ContextWithTimeout(absl::Seconds(5));
  ASSERT_TRUE(s->stub->GetQueueStats(context.get(), stats_request, &stats).ok());
  EXPECT_EQ(stats.completed(), 6);
  EXPECT_EQ(stats.pending(), 0);
  auto metrics = testing::HttpGet(s->server->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_THAT(*metrics, HasSubstr("rlhf_labeling_rankings_total 6"));
  EXPECT_THAT(*metrics, HasSubstr("rlhf_labeling_tasks{state=\"completed\"} 6"));
  EXPECT_THAT(*metrics, HasSubstr("rlhf_labeling_answer_seconds_count 6"));
  s->Stop();
}

TEST(LabelingServiceTest, MinCompletedStopsEarlyAndWithdrawsTheRest) {
  auto s = LabelingServer::Start("");
  ASSERT_TRUE(s);
  HumanQueueLabelerOptions o = LabelerOptions(s->address);
  o.min_completed = 2;
  auto labeler = HumanQueueLabeler::Create(o);
  ASSERT_TRUE(labeler.ok());
  auto bot = std::make_unique<LabelingBot>(s->address, "alice", 2);
  LabelingOptions options;
  options.run_id = "run-2";
  options.round = 1;
  auto judgements = (*labeler)->Judge(Tasks(5), options);
  ASSERT_TRUE(judgements.ok()) << judgements.status();
  int answered = 0;
  for (const auto& j : *judgements) answered += j.has_value();
  EXPECT_EQ(answered, 2);
  bot.reset();
  v1::LabelingTask task;
  EXPECT_EQ(NextTask(*s->stub, "late", absl::ZeroDuration(), &task).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::GetRankingsRequest read;
  read.set_batch_id("run-2/round-1");
  v1::GetRankingsResponse rankings;
  auto context = runtime::ContextWithTimeout(absl::Seconds(5));
  ASSERT_TRUE(s->stub->GetRankings(context.get(), read, &rankings).ok());
  EXPECT_TRUE(rankings.cancelled());
  EXPECT_EQ(rankings.total(), 5);
  s->Stop();
}

TEST(LabelingServiceTest, MaxWaitFailsWithTheCountsAndAnswersSurviveAServiceRestart) {
  const std::string dir = testing::MakeTempDir("labeling-service");
  auto s = LabelingServer::Start(dir);
  ASSERT_TRUE(s);
  // One answer arrives, then nobody works: max_wait ends the wait.
  {
    LabelingBot once(s->address, "alice", 1);
    HumanQueueLabelerOptions o = LabelerOptions(s->address);
    o.max_wait = absl::Milliseconds(700);
    auto labeler = HumanQueueLabeler::Create(o);
    LabelingOptions options;
    options.run_id = "run-3";
    options.round = 1;
    auto judged = (*labeler)->Judge(Tasks(3), options);
    EXPECT_TRUE(absl::IsDeadlineExceeded(judged.status())) << judged.status();
    EXPECT_THAT(std::string(judged.status().message()), HasSubstr("1 of the 3 rankings needed"));
    EXPECT_THAT(std::string(judged.status().message()), HasSubstr("max_wait"));
  }
  // A second batch, half answered, then the service restarts from its journal; the producer asks again, finds its
  // batch with the answer kept, and people finish it.
  HumanQueueLabelerOptions o = LabelerOptions(s->address);
  o.call_timeout = absl::Seconds(2);
  {
    LabelingBot once(s->address, "bob", 1);
    auto labeler = HumanQueueLabeler::Create(o);
    LabelingOptions options;
    options.run_id = "run-4";
    options.round = 1;
    options.deadline = absl::Now() + absl::Seconds(1);
    auto judged = (*labeler)->Judge(Tasks(2), options);
    ASSERT_TRUE(judged.ok()) << judged.status();
    EXPECT_EQ((*judged)[0].has_value() + (*judged)[1].has_value(), 1);
  }
  s->Stop();
  s.reset();
  auto restarted = LabelingServer::Start(dir);
  ASSERT_TRUE(restarted);
  v1::GetRankingsRequest read;
  read.set_batch_id("run-4/round-1");
  v1::GetRankingsResponse rankings;
  auto context = runtime::ContextWithTimeout(absl::Seconds(5));
  ASSERT_TRUE(restarted->stub->GetRankings(context.get(), read, &rankings).ok());
  EXPECT_EQ(rankings.completed(), 1);
  ASSERT_EQ(rankings.rankings_size(), 1);
  EXPECT_EQ(rankings.rankings(0).labeler_id(), "bob");
  EXPECT_TRUE(rankings.cancelled());  // the deadline withdrew the rest
  restarted->Stop();
}

// With authentication, a labeler is who its token says: it takes and answers tasks as itself, cannot answer as
// another labeler or take tasks in another's name, and cannot withdraw a producer's batch.
TEST(LabelingServiceTest, ALabelerIsTheAuthenticatedCallerNotWhatItsRequestSays) {
  auto s = LabelingServer::Start("", absl::Minutes(10),
                                 "tok-alice alice labeler\ntok-bob bob labeler\ntok-prod producer-1 producer\n"
                                 "tok-root root admin\n");
  ASSERT_TRUE(s);
  auto alice = s->StubWithToken("tok-alice");
  auto bob = s->StubWithToken("tok-bob");
  auto producer = s->StubWithToken("tok-prod");
  auto root = s->StubWithToken("tok-root");
  v1::EnqueueTasksRequest enqueue;
  enqueue.set_batch_id("run/round-1");
  for (int i = 0; i < 2; ++i) {
    v1::TaskSpec* t = enqueue.add_tasks();
    t->set_prompt("prompt " + std::to_string(i));
    t->add_responses("a");
    t->add_responses("bb");
  }
  v1::EnqueueTasksResponse queued;
  auto context = runtime::ContextWithTimeout(absl::Seconds(5));
  ASSERT_TRUE(producer->EnqueueTasks(context.get(), enqueue, &queued).ok());

  // Taking a task in someone else's name is refused; an empty labeler_id means the caller.
  v1::LabelingTask task;
  grpc::Status status = NextTask(*alice, "bob", absl::ZeroDuration(), &task);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(), HasSubstr("labeler_id: 'bob' is not the caller 'alice'"));
  ASSERT_TRUE(NextTask(*alice, "", absl::ZeroDuration(), &task).ok());

  // bob cannot answer alice's task, whether he names himself, alice, or nobody.
  v1::SubmitRankingResponse submitted;
  for (const char* claimed : {"", "bob", "alice"}) {
    context = runtime::ContextWithTimeout(absl::Seconds(5));
    status = bob->SubmitRanking(context.get(), RankByLength(task, claimed), &submitted);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << "bob claiming '" << claimed << "'";
  }
  context = runtime::ContextWithTimeout(absl::Seconds(5));
  ASSERT_TRUE(alice->SubmitRanking(context.get(), RankByLength(task, ""), &submitted).ok());

  // An admin may label on behalf of a named labeler (a shared token at a terminal).
  v1::LabelingTask second;
  ASSERT_TRUE(NextTask(*root, "carol", absl::ZeroDuration(), &second).ok());
  context = runtime::ContextWithTimeout(absl::Seconds(5));
  ASSERT_TRUE(root->SubmitRanking(context.get(), RankByLength(second, "carol"), &submitted).ok());

  // Labelers do not manage batches.
  v1::CancelTasksRequest cancel;
  cancel.set_batch_id("run/round-1");
  v1::CancelTasksResponse cancelled;
  context = runtime::ContextWithTimeout(absl::Seconds(5));
  EXPECT_EQ(alice->CancelTasks(context.get(), cancel, &cancelled).error_code(), grpc::StatusCode::PERMISSION_DENIED);

  v1::GetRankingsRequest get;
  get.set_batch_id("run/round-1");
  v1::GetRankingsResponse rankings;
  context = runtime::ContextWithTimeout(absl::Seconds(5));
  ASSERT_TRUE(producer->GetRankings(context.get(), get, &rankings).ok());
  ASSERT_EQ(rankings.rankings_size(), 2);
  std::vector<std::string> labelers;
  for (const auto& r : rankings.rankings()) labelers.push_back(r.labeler_id());
  EXPECT_THAT(labelers, ::testing::UnorderedElementsAre("alice", "carol"));
  s->Stop();
}

TEST(LabelingServiceTest, AWaitingNextTaskEndsAtOnceWhenTheServiceShutsDown) {
  auto s = LabelingServer::Start("");
  ASSERT_TRUE(s);
  grpc::Status status;
  std::thread waiter([&] {
    v1::LabelingTask task;
    status = NextTask(*s->stub, "alice", absl::Seconds(30), &task);
  });
  absl::SleepFor(absl::Milliseconds(300));
  const absl::Time start = absl::Now();
  s->Stop();
  waiter.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace rlhf::labeling
