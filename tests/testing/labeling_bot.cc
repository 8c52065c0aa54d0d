#include "tests/testing/labeling_bot.h"

#include <chrono>

#include "common/runtime/client.h"
#include "google/protobuf/util/time_util.h"

namespace rlhf::testing {

using google::protobuf::util::TimeUtil;

grpc::Status NextTask(v1::LabelingService::Stub& stub, const std::string& labeler, absl::Duration wait,
                      v1::LabelingTask* task) {
  v1::NextTaskRequest request;
  request.set_labeler_id(labeler);
  *request.mutable_wait() = TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(wait));
  auto context = runtime::ContextWithTimeout(wait + absl::Seconds(10));
  return stub.NextTask(context.get(), request, task);
}

v1::SubmitRankingRequest RankByLength(const v1::LabelingTask& task, const std::string& labeler) {
  v1::SubmitRankingRequest request;
  request.set_task_id(task.task_id());
  request.set_labeler_id(labeler);
  for (const v1::Candidate& c : task.candidates()) {
    int32_t rank = 1;
    for (const v1::Candidate& other : task.candidates()) rank += other.text().size() > c.text().size();
    v1::CandidateRank* r = request.add_ranks();
    r->set_candidate_id(c.candidate_id());
    r->set_rank(rank);
  }
  return request;
}

LabelingBot::LabelingBot(const std::string& address, const std::string& labeler_id, int limit) {
  runtime::ClientOptions client;
  client.target = address;
  client.max_reconnect_backoff = absl::Milliseconds(200);
  stub_ = v1::LabelingService::NewStub(*runtime::MakeChannel(client));
  thread_ = std::thread([this, labeler_id, limit] {
    while (!stop_ && answered_ < limit) {
      v1::LabelingTask task;
      if (!NextTask(*stub_, labeler_id, absl::Milliseconds(200), &task).ok()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      v1::SubmitRankingResponse response;
      auto context = runtime::ContextWithTimeout(absl::Seconds(10));
      if (stub_->SubmitRanking(context.get(), RankByLength(task, labeler_id), &response).ok()) ++answered_;
    }
  });
}

LabelingBot::~LabelingBot() {
  stop_ = true;
  thread_.join();
}

}  // namespace rlhf::testing
