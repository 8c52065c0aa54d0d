// A person at the labeling queue, for tests: a thread that takes tasks from a LabelingService (long-polling
// NextTask) and ranks each task's candidates by length, longest first, until stopped or `limit` answers.
#ifndef RLHF_TESTS_TESTING_LABELING_BOT_H_
#define RLHF_TESTS_TESTING_LABELING_BOT_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/time/time.h"
#include "rlhf/v1/labeling.grpc.pb.h"

namespace rlhf::testing {

// NextTask as `labeler`, waiting up to `wait` on the server.
grpc::Status NextTask(v1::LabelingService::Stub& stub, const std::string& labeler, absl::Duration wait,
                      v1::LabelingTask* task);

// A ranking of `task` by candidate length, longest first (equal lengths tie).
v1::SubmitRankingRequest RankByLength(const v1::LabelingTask& task, const std::string& labeler);

class LabelingBot {
 public:
  // `address` is host:port; a short reconnect backoff lets the bot find a restarted service quickly.
  LabelingBot(const std::string& address, const std::string& labeler_id, int limit = 1 << 30);
  ~LabelingBot();  // stops and joins

  int answered() const { return answered_; }

 private:
  std::unique_ptr<v1::LabelingService::Stub> stub_;
  std::atomic<bool> stop_{false};
  std::atomic<int> answered_{0};
  std::thread thread_;
};

}  // namespace rlhf::testing

#endif  // RLHF_TESTS_TESTING_LABELING_BOT_H_
