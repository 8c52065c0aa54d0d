// The labeling queue: assignment order, every refusal SubmitRanking documents, expiry, long-poll waits, withdrawal,
// idempotent batches, and a journal that survives a restart (and a write cut short).
#include "common/labeling/labeling_queue.h"

#include <algorithm>
#include <filesystem>
#include <optional>
#include <atomic>
#include <fstream>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/small_filesystem.h"
#include "tests/testing/test_util.h"

namespace rlhf::labeling {
namespace {

using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

NewBatch TwoTasks(const std::string& batch_id, absl::Duration timeout = absl::ZeroDuration()) {
  NewBatch b;
  b.batch_id = batch_id;
  b.run_id = "run-a";
  b.round = 1;
  b.instructions = "longest is best";
  b.task_timeout = timeout;
  b.tasks = {{"p0", {"a", "bbb", "cc"}}, {"p1", {"dd", "e"}}};
  return b;
}

// Next with a wait, as a blocking call.
absl::StatusOr<AssignedTask> NextNow(LabelingQueue& q, const std::string& labeler,
                                     absl::Duration wait = absl::ZeroDuration()) {
  std::promise<absl::StatusOr<AssignedTask>> result;
  q.Next(labeler, wait, [&](absl::StatusOr<AssignedTask> t) { result.set_value(std::move(t)); });
  return result.get_future().get();
}

// Ranks the candidates by text length, longest first (rank 1).
std::vector<std::pair<std::string, int32_t>> ByLength(const AssignedTask& t) {
  std::vector<std::pair<std::string, int32_t>> ranks;
  for (const auto& [id, text] : t.candidates) {
    int32_t rank = 1;
    for (const auto& [other_id, other] : t.candidates) rank += other.size() > text.size();
    ranks.emplace_back(id, rank);
  }
  return ranks;
}

std::unique_ptr<LabelingQueue> OpenQueue(const std::string& dir = "") {
  LabelingQueueOptions o;
  o.state_dir = dir;
  auto q = LabelingQueue::Open(o);
  EXPECT_TRUE(q.ok()) << q.status();
  return q.ok() ? *std::move(q) : nullptr;
}

TEST(LabelingQueueTest, OldestTaskFirstAndRanksComeBackInTheProducersOrder) {
  auto q = OpenQueue();
  ASSERT_TRUE(q);
  auto info = q->Enqueue(TwoTasks("b1"));
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_EQ(info->task_ids.size(), 2u);
  EXPECT_FALSE(info->already_existed);

  auto t = NextNow(*q, "alice");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->task_id, info->task_ids[0]);
  EXPECT_EQ(t->prompt, "p0");
  EXPECT_EQ(t->run_id, "run-a");
  EXPECT_EQ(t->instructions, "longest is best");
  std::vector<std::string> ids, texts;
  for (const auto& [id, text] : t->candidates) {
    ids.push_back(id);
    texts.push_back(text);
  }
  EXPECT_THAT(ids, ::testing::ElementsAre("1", "2", "3"));
  EXPECT_THAT(texts, UnorderedElementsAre("a", "bbb", "cc"));
  EXPECT_EQ(q->Counts().assigned, 1);
  EXPECT_EQ(q->Counts().pending, 1);

  auto done = q->Submit(t->task_id, "alice", ByLength(*t));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(*done, 1);
  auto rankings = q->Rankings("b1");
  ASSERT_TRUE(rankings.ok());
  EXPECT_EQ(rankings->total, 2);
  EXPECT_EQ(rankings->completed, 1);
  ASSERT_EQ(rankings->rankings.size(), 1u);
  EXPECT_EQ(rankings->rankings[0].task_index, 0);
  EXPECT_EQ(rankings->rankings[0].labeler_id, "alice");
  // Responses "a", "bbb", "cc": by length, ranks 3, 1, 2 whatever order they were shown in.
  EXPECT_THAT(rankings->rankings[0].ranks, ::testing::ElementsAre(3, 1, 2));
  EXPECT_EQ(NextNow(*q, "bob")->prompt, "p1");
  EXPECT_TRUE(absl::IsNotFound(NextNow(*q, "carol").status()));
}

TEST(LabelingQueueTest, SubmitRefusesWhatTheProtocolRefuses) {
  auto q = OpenQueue();
  ASSERT_TRUE(q);
  auto info = q->Enqueue(TwoTasks("b1"));
  ASSERT_TRUE(info.ok());
  auto t = NextNow(*q, "alice");
  ASSERT_TRUE(t.ok());
  const auto good = ByLength(*t);

  EXPECT_TRUE(absl::IsNotFound(q->Submit("t-nope", "alice", good).status()));
  EXPECT_TRUE(absl::IsPermissionDenied(q->Submit(t->task_id, "mallory", good).status()));
  auto missing = good;
  missing.pop_back();
  EXPECT_TRUE(absl::IsInvalidArgument(q->Submit(t->task_id, "alice", missing).status()));
  auto twice = good;
  twice[1].first = twice[0].first;
  absl::Status s = q->Submit(t->task_id, "alice", twice).status();
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_THAT(std::string(s.message()), HasSubstr("ranked twice"));
  auto unknown = good;
  unknown[0].first = "9";
  s = q->Submit(t->task_id, "alice", unknown).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("ranks[0].candidate_id"));
  auto zero = good;
  zero[2].second = 0;
  s = q->Submit(t->task_id, "alice", zero).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("ranks[2].rank"));

  ASSERT_TRUE(q->Submit(t->task_id, "alice", good).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(q->Submit(t->task_id, "alice", good).status()));
  // A pending task nobody was given cannot be answered.
  const std::vector<std::pair<std::string, int32_t>> two = {{"1", 1}, {"2", 2}};
  EXPECT_TRUE(absl::IsPermissionDenied(q->Submit(info->task_ids[1], "alice", two).status()));
  EXPECT_EQ(q->Rankings("b1")->completed, 1);
}

TEST(LabelingQueueTest, AnUnansweredAssignmentExpiresBackToTheQueue) {
  LabelingQueueOptions o;
  std::atomic<int> expiries{0};
  o.on_expired = [&] { ++expiries; };
  auto q = LabelingQueue::Open(o);
  ASSERT_TRUE(q.ok());
  NewBatch b = TwoTasks("b1", absl::Milliseconds(100));
  b.tasks.resize(1);
  ASSERT_TRUE((*q)->Enqueue(b).ok());
  auto t = NextNow(**q, "alice");
  ASSERT_TRUE(t.ok());
  EXPECT_LE(t->deadline, absl::Now() + absl::Milliseconds(100));
  // Nobody else gets it while alice holds it.
  EXPECT_TRUE(absl::IsNotFound(NextNow(**q, "bob").status()));
  // bob waits; the expiry hands it to him.
  auto again = NextNow(**q, "bob", absl::Seconds(5));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->task_id, t->task_id);
  EXPECT_EQ(expiries.load(), 1);
  EXPECT_EQ((*q)->Counts().expired, 1);
  absl::Status late = (*q)->Submit(t->task_id, "alice", ByLength(*t)).status();
  EXPECT_TRUE(absl::IsPermissionDenied(late)) << late;  // it is bob's now
  ASSERT_TRUE((*q)->Submit(again->task_id, "bob", ByLength(*again)).ok());

  // When nobody took it over, the late answer is FAILED_PRECONDITION.
  NewBatch c = TwoTasks("b2", absl::Milliseconds(50));
  c.tasks.resize(1);
  ASSERT_TRUE((*q)->Enqueue(c).ok());
  auto u = NextNow(**q, "alice");
  ASSERT_TRUE(u.ok());
  absl::SleepFor(absl::Milliseconds(120));
  late = (*q)->Submit(u->task_id, "alice", ByLength(*u)).status();
  EXPECT_TRUE(absl::IsFailedPrecondition(late)) << late;
  EXPECT_THAT(std::string(late.message()), HasSubstr("deadline passed"));
}

TEST(LabelingQueueTest, WaitersAreWokenByNewTasksAndEndOnTimeoutCancelAndClose) {
  auto q = OpenQueue();
  ASSERT_TRUE(q);
  std::promise<absl::StatusOr<AssignedTask>> woken;
  const absl::Time start = absl::Now();
  q->Next("alice", absl::Seconds(10), [&](absl::StatusOr<AssignedTask> t) { woken.set_value(std::move(t)); });
  std::thread producer([&] {
    absl::SleepFor(absl::Milliseconds(100));
    ASSERT_TRUE(q->Enqueue(TwoTasks("b1")).ok());
  });
  auto t = woken.get_future().get();
  producer.join();
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->prompt, "p0");
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));

  ASSERT_TRUE(NextNow(*q, "bob").ok());  // the second task
  const absl::Time wait_start = absl::Now();
  EXPECT_TRUE(absl::IsNotFound(NextNow(*q, "carol", absl::Milliseconds(150)).status()));
  EXPECT_GE(absl::Now() - wait_start, absl::Milliseconds(140));

  std::promise<absl::Status> cancelled;
  const int64_t id = q->Next("dave", absl::Seconds(30), [&](absl::StatusOr<AssignedTask> r) {
    cancelled.set_value(r.status());
  });
  q->CancelWait(id);
  EXPECT_TRUE(absl::IsCancelled(cancelled.get_future().get()));
  q->CancelWait(id);  // a second cancel is harmless

  std::promise<absl::Status> closed;
  q->Next("erin", absl::Seconds(30), [&](absl::StatusOr<AssignedTask> r) { closed.set_value(r.status()); });
  q->Close();
  EXPECT_TRUE(absl::IsUnavailable(closed.get_future().get()));
  EXPECT_TRUE(absl::IsUnavailable(NextNow(*q, "frank").status()));
}

TEST(LabelingQueueTest, BatchesAreIdempotentAndCancelWithdrawsTheRest) {
  auto q = OpenQueue();
  ASSERT_TRUE(q);
  auto first = q->Enqueue(TwoTasks("b1"));
  ASSERT_TRUE(first.ok());
  auto again = q->Enqueue(TwoTasks("b1"));
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->already_existed);
  EXPECT_EQ(again->task_ids, first->task_ids);
  EXPECT_EQ(again->created, first->created);
  NewBatch other = TwoTasks("b1");
  other.tasks[1].responses[0] = "changed";
  EXPECT_TRUE(absl::IsAlreadyExists(q->Enqueue(other).status()));
  NewBatch bad = TwoTasks("b2");
  bad.tasks[1].responses.resize(1);
  absl::Status s = q->Enqueue(bad).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("tasks[1].responses"));
  EXPECT_TRUE(absl::IsInvalidArgument(q->Enqueue(NewBatch{}).status()));

  auto t = NextNow(*q, "alice");
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(q->Submit(t->task_id, "alice", ByLength(*t)).ok());
  auto u = NextNow(*q, "bob");
  ASSERT_TRUE(u.ok());
  auto withdrawn = q->Cancel("b1");
  ASSERT_TRUE(withdrawn.ok());
  EXPECT_EQ(*withdrawn, 1);  // bob's assigned task; alice's answer stays
  EXPECT_TRUE(absl::IsFailedPrecondition(q->Submit(u->task_id, "bob", ByLength(*u)).status()));
  EXPECT_TRUE(absl::IsNotFound(NextNow(*q, "carol").status()));
  auto rankings = q->Rankings("b1");
  EXPECT_TRUE(rankings->cancelled);
  EXPECT_EQ(rankings->completed, 1);
  EXPECT_TRUE(absl::IsNotFound(q->Cancel("nope").status()));
  EXPECT_TRUE(absl::IsNotFound(q->Rankings("nope").status()));
}

TEST(LabelingQueueTest, TheJournalKeepsBatchesAssignmentsAndRankingsAcrossARestart) {
  const std::string dir = testing::MakeTempDir("labeling-queue");
  std::string answered_id, assigned_id;
  absl::Time created;
  {
    auto q = OpenQueue(dir);
    ASSERT_TRUE(q);
    auto info = q->Enqueue(TwoTasks("b1", absl::Hours(1)));
    ASSERT_TRUE(info.ok());
    created = info->created;
    auto t = NextNow(*q, "alice");
    ASSERT_TRUE(q->Submit(t->task_id, "alice", ByLength(*t)).ok());
    answered_id = t->task_id;
    assigned_id = NextNow(*q, "bob")->task_id;
    ASSERT_TRUE(q->Enqueue(TwoTasks("b2")).ok());
    ASSERT_TRUE(q->Cancel("b2").ok());
  }
  {
    // A crash in the middle of a write leaves a torn last line: it is dropped.
    std::ofstream out(dir + "/queue.jsonl", std::ios::app);
    out << "{\"op\":\"submit\",\"task\":\"" << assigned_id << "\",\"lab";
  }
  {
    auto q = OpenQueue(dir);
    ASSERT_TRUE(q);
    auto rankings = q->Rankings("b1");
    ASSERT_TRUE(rankings.ok()) << rankings.status();
    EXPECT_EQ(rankings->completed, 1);
    EXPECT_EQ(rankings->created, absl::FromUnixMillis(absl::ToUnixMillis(created)));
    EXPECT_THAT(rankings->rankings[0].ranks, ::testing::ElementsAre(3, 1, 2));
    EXPECT_TRUE(q->Rankings("b2")->cancelled);
    const QueueCounts c = q->Counts();
    EXPECT_EQ(c.completed, 1);
    EXPECT_EQ(c.assigned, 1);  // bob still holds his task, and may answer it
    EXPECT_EQ(c.pending, 0);
    auto again = q->Enqueue(TwoTasks("b1", absl::Hours(1)));
    ASSERT_TRUE(again.ok());
    EXPECT_TRUE(again->already_existed);
    const std::vector<std::pair<std::string, int32_t>> ranks = {{"1", 1}, {"2", 2}};
    EXPECT_TRUE(q->Submit(assigned_id, "bob", ranks).ok());
    EXPECT_TRUE(absl::IsAlreadyExists(q->Submit(answered_id, "alice", ranks).status()));
  }
  {
    // The restart compacted the journal; a corrupt record in the middle is refused with its line.
    auto text = util::ReadFile(dir + "/queue.jsonl");
    ASSERT_TRUE(text.ok());
    ASSERT_TRUE(util::WriteFileAtomically(dir + "/queue.jsonl", "not json\n" + *text).ok());
    LabelingQueueOptions o;
    o.state_dir = dir;
    absl::Status s = LabelingQueue::Open(o).status();
    EXPECT_TRUE(absl::IsDataLoss(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("queue.jsonl:1"));
  }
}

// A batch of `n` tasks whose responses are long enough that a few records fill a page of the journal.
NewBatch ManyTasks(const std::string& batch_id, int n) {
  NewBatch b;
  b.batch_id = batch_id;
  b.run_id = "run-a";
  b.round = 1;
  for (int i = 0; i < n; ++i) {
    b.tasks.push_back({"prompt " + std::to_string(i), {std::string(40 + i % 7, 'a'), std::string(20, 'b'), "c"}});
  }
  return b;
}

TEST(LabelingQueueTest, AFullDiskRefusesWithResourceExhaustedAndLosesNoAcknowledgedRanking) {
  RLHF_MOUNT_SMALL_FILESYSTEM_OR_SKIP(fs, 1 << 20);
  const std::string dir = fs->path() + "/labeling";
  std::vector<std::string> acknowledged;
  {
    auto q = OpenQueue(dir);
    ASSERT_TRUE(q);
    ASSERT_TRUE(q->Enqueue(ManyTasks("b1", 200)).ok());
    auto filled = fs->Fill();
    ASSERT_TRUE(filled.ok()) << filled.status();
    // Label until the journal cannot take a record: a NextTask whose assignment cannot be journaled, or a ranking
    // that cannot be, is refused with RESOURCE_EXHAUSTED; nothing refused may count later.
    std::optional<AssignedTask> unanswered;
    absl::Status refused;
    for (int i = 0; i < 200 && refused.ok(); ++i) {
      auto t = NextNow(*q, "alice");
      if (!t.ok()) {
        refused = t.status();
        break;
      }
      auto submitted = q->Submit(t->task_id, "alice", ByLength(*t));
      if (submitted.ok()) {
        acknowledged.push_back(t->task_id);
      } else {
        refused = submitted.status();
        unanswered = *t;
      }
    }
    ASSERT_TRUE(absl::IsResourceExhausted(refused)) << refused;
    EXPECT_THAT(std::string(refused.message()), HasSubstr("No space left on device"));
    // Space comes back: the refused step works, and labeling goes on.
    ASSERT_TRUE(fs->Free().ok());
    if (unanswered) {
      ASSERT_TRUE(q->Submit(unanswered->task_id, "alice", ByLength(*unanswered)).ok());
      acknowledged.push_back(unanswered->task_id);
    }
    for (int i = 0; i < 3; ++i) {
      auto t = NextNow(*q, "alice");
      ASSERT_TRUE(t.ok()) << t.status();
      ASSERT_TRUE(q->Submit(t->task_id, "alice", ByLength(*t)).ok());
      acknowledged.push_back(t->task_id);
    }
  }
  // A restart replays every acknowledged ranking.
  auto q = OpenQueue(dir);
  ASSERT_TRUE(q);
  auto rankings = q->Rankings("b1");
  ASSERT_TRUE(rankings.ok()) << rankings.status();
  std::vector<std::string> replayed;
  for (const SubmittedRanking& r : rankings->rankings) replayed.push_back(r.task_id);
  EXPECT_THAT(replayed, ::testing::UnorderedElementsAreArray(acknowledged));
  EXPECT_EQ(rankings->completed, static_cast<int64_t>(acknowledged.size()));
}

TEST(LabelingQueueTest, AQueueReopensOnAFullDiskAndDropsAnUnterminatedLastRecord) {
  RLHF_MOUNT_SMALL_FILESYSTEM_OR_SKIP(fs, 1 << 20);
  const std::string dir = fs->path() + "/labeling";
  std::string answered;
  {
    auto q = OpenQueue(dir);
    ASSERT_TRUE(q);
    ASSERT_TRUE(q->Enqueue(TwoTasks("b1", absl::Hours(1))).ok());
    auto t = NextNow(*q, "alice");
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE(q->Submit(t->task_id, "alice", ByLength(*t)).ok());
    answered = t->task_id;
  }
  {
    // A record that parses but lacks its newline was never acknowledged (an append writes the line and its
    // newline at once, then syncs): replay drops it.
    std::ofstream out(dir + "/queue.jsonl", std::ios::app);
    out << R"({"op":"cancel","batch":"b1"})";
  }
  ASSERT_TRUE(fs->Fill().ok());
  {
    // No room to compact the journal: the queue opens anyway, on the journal as it is.
    auto q = OpenQueue(dir);
    ASSERT_TRUE(q);
    auto rankings = q->Rankings("b1");
    ASSERT_TRUE(rankings.ok()) << rankings.status();
    EXPECT_FALSE(rankings->cancelled) << "the unterminated cancel record was applied";
    ASSERT_EQ(rankings->rankings.size(), 1u);
    EXPECT_EQ(rankings->rankings[0].task_id, answered);
    ASSERT_TRUE(fs->Free().ok());
    auto t = NextNow(*q, "bob");
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_TRUE(q->Submit(t->task_id, "bob", ByLength(*t)).ok());
  }
  auto q = OpenQueue(dir);
  ASSERT_TRUE(q);
  EXPECT_EQ(q->Rankings("b1")->completed, 2);
  // No temp file of a compaction is left beside the journal.
  auto listing = util::ReadFile(dir + "/queue.jsonl");
  ASSERT_TRUE(listing.ok());
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    EXPECT_EQ(entry.path().filename().string(), "queue.jsonl");
  }
}

// A journal line of a batch with one task whose responses are shown in `order`.
std::string BatchLine(const std::string& batch, const std::string& task, const std::string& order,
                      const std::string& created_ms = "1700000000000") {
  return "{\"op\":\"batch\",\"batch\":\"" + batch + "\",\"created_ms\":" + created_ms + ",\"tasks\":[{\"id\":\"" +
         task + "\",\"prompt\":\"p\",\"responses\":[\"a\",\"b\",\"c\"],\"order\":" + order + "}]}\n";
}

// Found by fuzzing the journal replay (tests/fuzz/corpus/labeling_journal/): records the queue never writes were
// replayed as they came, and an order index beyond the responses read past them when the task was handed out.
TEST(LabelingQueueTest, OpenRefusesJournalRecordsTheQueueCouldNotHaveWritten) {
  const std::string good = BatchLine("b0", "t-0", "[2,0,1]");
  const std::map<std::string, std::string> bad = {
      {"an order index beyond the responses", BatchLine("b1", "t-1", "[3,0,1]")},
      {"an order that repeats a response", BatchLine("b1", "t-1", "[0,0,1]")},
      {"an order shorter than the responses", BatchLine("b1", "t-1", "[0,1]")},
      {"a float where an integer goes", BatchLine("b1", "t-1", "[0,1,2]", "1e300")},
      {"a task id used twice", BatchLine("b1", "t-0", "[0,1,2]")},
      {"a batch id used twice", BatchLine("b0", "t-1", "[0,1,2]")},
      {"a batch without tasks", "{\"op\":\"batch\",\"batch\":\"b1\",\"created_ms\":1,\"tasks\":[]}\n"},
      {"a ranking of the wrong size",
       "{\"op\":\"submit\",\"task\":\"t-0\",\"labeler\":\"x\",\"ranks\":[1,2],\"at_ms\":1}\n"},
      {"a rank below 1", "{\"op\":\"submit\",\"task\":\"t-0\",\"labeler\":\"x\",\"ranks\":[1,0,2],\"at_ms\":1}\n"},
  };
  for (const auto& [what, line] : bad) {
    SCOPED_TRACE(what);
    const std::string dir = testing::MakeTempDir("labeling-journal");
    // In the middle of the journal: the queue does not open, and says where.
    ASSERT_TRUE(util::WriteFileAtomically(dir + "/queue.jsonl", good + line).ok());
    LabelingQueueOptions o;
    o.state_dir = dir;
    absl::Status s = LabelingQueue::Open(o).status();
    EXPECT_TRUE(absl::IsDataLoss(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("queue.jsonl:2"));
    // As a torn last line it is dropped whole, and the rest is served.
    ASSERT_TRUE(util::WriteFileAtomically(dir + "/queue.jsonl", good + line.substr(0, line.size() - 1)).ok());
    auto q = OpenQueue(dir);
    ASSERT_TRUE(q);
    EXPECT_EQ(q->Counts().pending, 1);
    auto t = NextNow(*q, "alice");
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->task_id, "t-0");
    ASSERT_EQ(t->candidates.size(), 3u);
    EXPECT_EQ(t->candidates[0].second, "c");  // order[0] = 2
    EXPECT_TRUE(q->Submit("t-0", "alice", {{"1", 1}, {"2", 2}, {"3", 3}}).ok());
  }
}

}  // namespace
}  // namespace rlhf::labeling
