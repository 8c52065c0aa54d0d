#include "common/runtime/batch_queue.h"

#include <future>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rlhf::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(BatchQueue, BatchesQueuedRequestsUpToMaxRows) {
  BatchQueue<int> queue({/*max_queued=*/10, /*max_batch_rows=*/4, absl::ZeroDuration()});
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(queue.Push(i, 1).ok());
  EXPECT_THAT(queue.PopBatch(), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(queue.PopBatch(), ElementsAre(4));
}

TEST(BatchQueue, KeepsGroupsApartAndOrderWithinAGroup) {
  BatchQueue<int> queue({10, 8, absl::ZeroDuration()});
  ASSERT_TRUE(queue.Push(1, 1, "t=1").ok());
  ASSERT_TRUE(queue.Push(2, 1, "t=0").ok());
  ASSERT_TRUE(queue.Push(3, 1, "t=1").ok());
  EXPECT_THAT(queue.PopBatch(), ElementsAre(1, 3));
  EXPECT_THAT(queue.PopBatch(), ElementsAre(2));
}

TEST(BatchQueue, OversizeRequestFormsABatchAlone) {
  BatchQueue<int> queue({10, 4, absl::ZeroDuration()});
  ASSERT_TRUE(queue.Push(1, 3).ok());
  ASSERT_TRUE(queue.Push(2, 9).ok());
  EXPECT_THAT(queue.PopBatch(), ElementsAre(1));
  EXPECT_THAT(queue.PopBatch(), ElementsAre(2));
}

TEST(BatchQueue, RefusesWorkWhenFullWithResourceExhausted) {
  BatchQueue<int> queue({2, 4, absl::ZeroDuration()});
  ASSERT_TRUE(queue.Push(1, 1).ok());
  ASSERT_TRUE(queue.Push(2, 1).ok());
  const absl::Status status = queue.Push(3, 1);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()), HasSubstr("queue is full"));
}

TEST(BatchQueue, WaitsForLateRequestsUpToMaxWait) {
  BatchQueue<int> queue({10, 4, absl::Milliseconds(500)});
  ASSERT_TRUE(queue.Push(1, 1).ok());
  std::thread late([&] {
    absl::SleepFor(absl::Milliseconds(50));
    ASSERT_TRUE(queue.Push(2, 1).ok());
  });
  EXPECT_THAT(queue.PopBatch(), ElementsAre(1, 2));
  late.join();
}

TEST(BatchQueue, ReturnsAFullBatchWithoutWaitingOutMaxWait) {
  BatchQueue<int> queue({10, 2, absl::Seconds(30)});
  ASSERT_TRUE(queue.Push(1, 1).ok());
  ASSERT_TRUE(queue.Push(2, 1).ok());
  const absl::Time start = absl::Now();
  EXPECT_THAT(queue.PopBatch(), ElementsAre(1, 2));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(BatchQueue, CloseDrainsThenReturnsEmptyAndRefusesNewWork) {
  BatchQueue<int> queue({10, 4, absl::Seconds(30)});
  ASSERT_TRUE(queue.Push(7, 1).ok());
  queue.Close();
  EXPECT_THAT(queue.PopBatch(), ElementsAre(7));
  EXPECT_TRUE(queue.PopBatch().empty());
  EXPECT_EQ(queue.Push(8, 1).code(), absl::StatusCode::kUnavailable);
}

TEST(BatchQueue, CloseWakesAWaitingEngine) {
  BatchQueue<int> queue({10, 4, absl::Seconds(30)});
  auto popped = std::async(std::launch::async, [&] { return queue.PopBatch(); });
  absl::SleepFor(absl::Milliseconds(50));
  queue.Close();
  EXPECT_TRUE(popped.get().empty());
}

}  // namespace
}  // namespace rlhf::runtime
