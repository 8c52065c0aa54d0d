#include "common/labeling/labeling_queue.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <condition_variable>
#include <list>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <thread>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/runtime/logging.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace rlhf::labeling {
namespace {

using Json = nlohmann::json;

constexpr char kJournal[] = "queue.jsonl";

int64_t ToMs(absl::Time t) { return absl::ToUnixMillis(t); }
absl::Time FromMs(int64_t ms) { return absl::FromUnixMillis(ms); }

// An integer field of a journal record: `fallback` when absent (DataLoss when there is none), DataLoss when the value
// is not an integer that fits int64 (a float such as 1e300 would not convert).
absl::StatusOr<int64_t> JournalInt(const Json& record, const char* key,
                                   std::optional<int64_t> fallback = std::nullopt) {
  auto it = record.find(key);
  if (it == record.end()) {
    if (fallback.has_value()) return *fallback;
    return absl::DataLossError(absl::StrCat("missing \"", key, "\""));
  }
  if (!it->is_number_integer() || (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t{INT64_MAX})) {
    return absl::DataLossError(absl::StrCat("\"", key, "\" is not an integer: ", it->dump()));
  }
  return it->get<int64_t>();
}

// An array of int32 (a task's order, a ranking), each checked as JournalInt does.
absl::StatusOr<std::vector<int32_t>> JournalInt32s(const Json& record, const char* key) {
  const Json& list = record.at(key);
  if (!list.is_array()) return absl::DataLossError(absl::StrCat("\"", key, "\" is not an array"));
  std::vector<int32_t> out;
  for (const Json& value : list) {
    if (!value.is_number_integer() || value.get<int64_t>() < INT32_MIN || value.get<int64_t>() > INT32_MAX ||
        (value.is_number_unsigned() && value.get<uint64_t>() > uint64_t{INT32_MAX})) {
      return absl::DataLossError(absl::StrCat("\"", key, "\" holds a value that is not an int32: ", value.dump()));
    }
    out.push_back(static_cast<int32_t>(value.get<int64_t>()));
  }
  return out;
}

enum class TaskState { kPending, kAssigned, kCompleted, kWithdrawn };

struct Task {
  int64_t seq = 0;  // queue order: the oldest pending task is offered first
  std::string id;
  std::string batch_id;
  int32_t index = 0;
  std::string prompt;
  std::vector<std::string> responses;
  std::vector<int32_t> order;  // order[p]: the response shown at position p (candidate id p + 1)
  TaskState state = TaskState::kPending;
  std::string labeler;  // while assigned
  absl::Time assigned_at;
  absl::Time deadline;
  std::string expired_labeler;  // whose assignment expired last
  SubmittedRanking ranking;     // when completed
};

struct Batch {
  std::string id;
  std::string run_id;
  int32_t round = 0;
  std::string instructions;
  absl::Duration task_timeout;
  absl::Time created;
  std::vector<std::string> task_ids;
  bool cancelled = false;
  int64_t completed = 0;
};

struct Waiter {
  int64_t id = 0;
  std::string labeler;
  absl::Time until;
  LabelingQueue::TaskCallback done;
};

using Delivery = std::pair<LabelingQueue::TaskCallback, absl::StatusOr<AssignedTask>>;

}  // namespace

struct LabelingQueue::State {
  LabelingQueueOptions options;
  std::string journal_path;
  int journal_fd = -1;
  uint64_t journal_size = 0;  // bytes of whole records in the journal
  bool journal_torn = false;  // a failed append could not be cut back yet

  mutable std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, Task> tasks;
  std::map<std::string, Batch> batches;
  std::set<std::pair<int64_t, std::string>> pending;          // (seq, task id)
  std::set<std::pair<absl::Time, std::string>> assigned;      // (deadline, task id)
  std::list<Waiter> waiters;                                  // oldest first
  int64_t next_seq = 0;
  int64_t next_wait_id = 1;
  int64_t expired = 0;
  bool closed = false;
  absl::BitGen gen;
  std::thread timer;

  ~State() {
    if (journal_fd >= 0) ::close(journal_fd);
  }

  // ---- journal ----

  // Appends one record, all or nothing as replay sees it: a write or sync that fails (ENOSPC gives
  // ResourceExhausted) is cut back to the journal's previous end, so the next record starts on a line of its own.
  // When even that cut fails, appends are refused until a later one manages it.
  absl::Status Append(const Json& record, bool sync) {
    if (journal_fd < 0) return absl::OkStatus();
    if (journal_torn) {
      if (::ftruncate(journal_fd, static_cast<off_t>(journal_size)) != 0) {
        return util::ErrnoStatus("cannot repair (truncate) the journal after a failed write:", journal_path, errno);
      }
      journal_torn = false;
    }
    const std::string line = record.dump() + "\n";
    absl::Status status;
    size_t done = 0;
    while (status.ok() && done < line.size()) {
      const ssize_t n = ::write(journal_fd, line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        status = util::ErrnoStatus("cannot append to", journal_path, errno);
      } else {
        done += static_cast<size_t>(n);
      }
    }
    if (status.ok() && sync && ::fdatasync(journal_fd) != 0) {
      status = util::ErrnoStatus("cannot fdatasync", journal_path, errno);
    }
    if (!status.ok()) {
      if (::ftruncate(journal_fd, static_cast<off_t>(journal_size)) != 0) journal_torn = true;
      return status;
    }
    journal_size += line.size();
    return absl::OkStatus();
  }

  static Json BatchRecord(const Batch& b, const std::map<std::string, Task>& tasks) {
    Json list = Json::array();
    for (const std::string& id : b.task_ids) {
      const Task& t = tasks.at(id);
      list.push_back({{"id", t.id}, {"prompt", t.prompt}, {"responses", t.responses}, {"order", t.order}});
    }
    return {{"op", "batch"},
            {"batch", b.id},
            {"run", b.run_id},
            {"round", b.round},
            {"instructions", b.instructions},
            {"timeout_ms", absl::ToInt64Milliseconds(b.task_timeout)},
            {"created_ms", ToMs(b.created)},
            {"tasks", list}};
  }
  static Json AssignRecord(const Task& t) {
    return {{"op", "assign"},
            {"task", t.id},
            {"labeler", t.labeler},
            {"at_ms", ToMs(t.assigned_at)},
            {"deadline_ms", ToMs(t.deadline)}};
  }
  static Json SubmitRecord(const Task& t) {
    return {{"op", "submit"},
            {"task", t.id},
            {"labeler", t.ranking.labeler_id},
            {"ranks", t.ranking.ranks},
            {"at_ms", ToMs(t.ranking.completed_at)},
            {"answer_ms", ToMs(t.assigned_at)}};
  }

  // Applies one journal record (replay). Returns a reason (DataLoss) when it does not fit the state built so far or
  // holds a value the queue never writes; then the state is left as it was. Json exceptions (a missing key, a
  // value of the wrong type) are the caller's to catch.
  absl::Status Apply(const Json& r) {
    const std::string op = r.at("op").get<std::string>();
    if (op == "batch") {
      // Built and checked whole before any of it enters the state: a torn last record is dropped, not half applied.
      Batch b;
      b.id = r.at("batch").get<std::string>();
      if (b.id.empty()) return absl::DataLossError("batch with an empty id");
      if (batches.count(b.id) > 0) return absl::DataLossError(absl::StrCat("batch '", b.id, "' appears twice"));
      b.run_id = r.value("run", std::string());
      ASSIGN_OR_RETURN(const int64_t round, JournalInt(r, "round", 0));
      if (round < INT32_MIN || round > INT32_MAX) return absl::DataLossError("\"round\" is out of range");
      b.round = static_cast<int32_t>(round);
      b.instructions = r.value("instructions", std::string());
      ASSIGN_OR_RETURN(const int64_t timeout_ms, JournalInt(r, "timeout_ms", 0));
      if (timeout_ms < 0) return absl::DataLossError("\"timeout_ms\" is negative");
      b.task_timeout = absl::Milliseconds(timeout_ms);
      ASSIGN_OR_RETURN(const int64_t created_ms, JournalInt(r, "created_ms"));
      b.created = FromMs(created_ms);
      const Json& list = r.at("tasks");
      if (!list.is_array() || list.empty()) return absl::DataLossError("batch without tasks");
      std::vector<Task> fresh;
      std::set<std::string> ids;
      for (const Json& jt : list) {
        Task t;
        t.seq = next_seq + static_cast<int64_t>(fresh.size());
        t.id = jt.at("id").get<std::string>();
        if (tasks.count(t.id) > 0 || !ids.insert(t.id).second) {
          return absl::DataLossError(absl::StrCat("task '", t.id, "' appears twice"));
        }
        t.batch_id = b.id;
        t.index = static_cast<int32_t>(fresh.size());
        t.prompt = jt.at("prompt").get<std::string>();
        t.responses = jt.at("responses").get<std::vector<std::string>>();
        if (t.responses.size() < 2)
          return absl::DataLossError(absl::StrCat("task '", t.id, "' has fewer than 2 responses"));
        ASSIGN_OR_RETURN(t.order, JournalInt32s(jt, "order"));
        // order[p] is the response shown at position p: a permutation of 0..K-1.
        std::vector<int32_t> sorted = t.order;
        std::sort(sorted.begin(), sorted.end());
        for (size_t i = 0; i < sorted.size(); ++i) {
          if (sorted.size() != t.responses.size() || sorted[i] != static_cast<int32_t>(i)) {
            return absl::DataLossError(absl::StrCat("task '", t.id, "': order is not a permutation of its ",
                                                    t.responses.size(), " responses"));
          }
        }
        b.task_ids.push_back(t.id);
        fresh.push_back(std::move(t));
      }
      next_seq += static_cast<int64_t>(fresh.size());
      for (Task& t : fresh) {
        pending.insert({t.seq, t.id});
        tasks[t.id] = std::move(t);
      }
      batches[b.id] = std::move(b);
      return absl::OkStatus();
    }
    if (op == "cancel") {
      auto it = batches.find(r.at("batch").get<std::string>());
      if (it == batches.end()) return absl::DataLossError("cancel of an unknown batch");
      Withdraw(it->second);
      return absl::OkStatus();
    }
    auto it = tasks.find(r.at("task").get<std::string>());
    if (it == tasks.end()) return absl::DataLossError(absl::StrCat(op, " of an unknown task"));
    Task& t = it->second;
    if (op == "assign") {
      const std::string labeler = r.at("labeler").get<std::string>();
      ASSIGN_OR_RETURN(const int64_t deadline_ms, JournalInt(r, "deadline_ms"));
      ASSIGN_OR_RETURN(const int64_t at_ms, JournalInt(r, "at_ms", deadline_ms));
      if (t.state == TaskState::kCompleted || t.state == TaskState::kWithdrawn) return absl::OkStatus();
      // Assigned already: its expiry was not journaled (see Advance), and the task went to someone else.
      if (t.state == TaskState::kAssigned) ReturnToPending(t);
      pending.erase({t.seq, t.id});
      t.state = TaskState::kAssigned;
      t.labeler = labeler;
      t.assigned_at = FromMs(at_ms);
      t.deadline = FromMs(deadline_ms);
      assigned.insert({t.deadline, t.id});
    } else if (op == "expire") {
      if (t.state == TaskState::kAssigned) ReturnToPending(t);
    } else if (op == "submit") {
      const std::string labeler = r.at("labeler").get<std::string>();
      ASSIGN_OR_RETURN(std::vector<int32_t> ranks, JournalInt32s(r, "ranks"));
      if (ranks.size() != t.responses.size() ||
          std::any_of(ranks.begin(), ranks.end(), [](int32_t rank) { return rank < 1; })) {
        return absl::DataLossError(absl::StrCat("submit for task '", t.id, "' needs one rank >= 1 for each of its ",
                                                t.responses.size(), " responses"));
      }
      ASSIGN_OR_RETURN(const int64_t at_ms, JournalInt(r, "at_ms"));
      ASSIGN_OR_RETURN(const int64_t answer_ms, JournalInt(r, "answer_ms", at_ms));
      if (t.state == TaskState::kAssigned) assigned.erase({t.deadline, t.id});
      if (t.state == TaskState::kPending) pending.erase({t.seq, t.id});
      if (t.state != TaskState::kCompleted) ++batches.at(t.batch_id).completed;
      t.state = TaskState::kCompleted;
      t.ranking.task_index = t.index;
      t.ranking.task_id = t.id;
      t.ranking.labeler_id = labeler;
      t.ranking.ranks = std::move(ranks);
      t.ranking.completed_at = FromMs(at_ms);
      t.assigned_at = FromMs(answer_ms);
    } else {
      return absl::DataLossError(absl::StrCat("unknown op '", op, "'"));
    }
    return absl::OkStatus();
  }

  // The journal holding exactly the current state.
  std::string Compacted() const {
    std::string out;
    std::vector<const Batch*> order;
    for (const auto& [id, b] : batches) order.push_back(&b);
    std::sort(order.begin(), order.end(), [&](const Batch* a, const Batch* b) {
      return tasks.at(a->task_ids.front()).seq < tasks.at(b->task_ids.front()).seq;
    });
    for (const Batch* b : order) {
      absl::StrAppend(&out, BatchRecord(*b, tasks).dump(), "\n");
      for (const std::string& id : b->task_ids) {
        const Task& t = tasks.at(id);
        if (t.state == TaskState::kAssigned) absl::StrAppend(&out, AssignRecord(t).dump(), "\n");
        if (t.state == TaskState::kCompleted) absl::StrAppend(&out, SubmitRecord(t).dump(), "\n");
      }
      if (b->cancelled) absl::StrAppend(&out, Json({{"op", "cancel"}, {"batch", b->id}}).dump(), "\n");
    }
    return out;
  }

  // ---- state changes (mu held) ----

  void ReturnToPending(Task& t) {
    assigned.erase({t.deadline, t.id});
    t.state = TaskState::kPending;
    t.expired_labeler = t.labeler;
    t.labeler.clear();
    pending.insert({t.seq, t.id});
  }

  int64_t Withdraw(Batch& b) {
    int64_t n = 0;
    for (const std::string& id : b.task_ids) {
      Task& t = tasks.at(id);
      if (t.state == TaskState::kPending) pending.erase({t.seq, t.id});
      if (t.state == TaskState::kAssigned) assigned.erase({t.deadline, t.id});
      if (t.state == TaskState::kPending || t.state == TaskState::kAssigned) {
        t.state = TaskState::kWithdrawn;
        ++n;
      }
    }
    b.cancelled = true;
    return n;
  }

  // Expires assignments past their deadline and waits past their end, then hands pending tasks to waiters.
  // Returns whether an assignment expired.
  int64_t Advance(absl::Time now, std::vector<Delivery>* out) {
    int64_t expiries = 0;
    while (!assigned.empty() && assigned.begin()->first <= now) {
      Task& t = tasks.at(assigned.begin()->second);
      ReturnToPending(t);
      ++expired;
      ++expiries;
      // The expiry happens whether or not its record is written: a replay without it finds the assignment past
      // its deadline and expires it again, and takes a later assignment of the task as a reassignment.
      if (absl::Status s = Append({{"op", "expire"}, {"task", t.id}}, false); !s.ok()) {
        runtime::Logger("labeling")->warn("expiry of task_id={} not journaled (replay expires it again): {}", t.id,
                                          s.ToString());
      }
    }
    while (!waiters.empty() && !pending.empty()) {
      Waiter w = std::move(waiters.front());
      waiters.pop_front();
      out->emplace_back(std::move(w.done), AssignLocked(tasks.at(pending.begin()->second), w.labeler, now));
    }
    for (auto it = waiters.begin(); it != waiters.end();) {
      if (it->until <= now) {
        out->emplace_back(std::move(it->done), absl::NotFoundError("no labeling task is pending; ask again later"));
        it = waiters.erase(it);
      } else {
        ++it;
      }
    }
    return expiries;
  }

  // Assigns `t` to `labeler`, once its record is in the journal; when the record cannot be written (a full disk:
  // ResourceExhausted) the task stays pending and the labeler gets the error.
  absl::StatusOr<AssignedTask> AssignLocked(Task& t, const std::string& labeler, absl::Time now) {
    const Batch& b = batches.at(t.batch_id);
    Task assigned_task = t;
    assigned_task.state = TaskState::kAssigned;
    assigned_task.labeler = labeler;
    assigned_task.assigned_at = now;
    assigned_task.deadline =
        now + (b.task_timeout > absl::ZeroDuration() ? b.task_timeout : options.default_task_timeout);
    if (absl::Status s = Append(AssignRecord(assigned_task), false); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("cannot record the assignment of a labeling task: ", s.message()));
    }
    pending.erase({t.seq, t.id});
    t = std::move(assigned_task);
    assigned.insert({t.deadline, t.id});
    AssignedTask out;
    out.task_id = t.id;
    out.prompt = t.prompt;
    for (size_t p = 0; p < t.order.size(); ++p) {
      out.candidates.emplace_back(std::to_string(p + 1), t.responses[t.order[p]]);
    }
    out.deadline = t.deadline;
    out.run_id = b.run_id;
    out.round = b.round;
    out.instructions = b.instructions;
    return out;
  }

  // Expiries are counted before the tasks they freed reach their new labelers, so that whoever gets one sees the
  // count that includes its expiry.
  void Deliver(std::vector<Delivery>& deliveries, int64_t expiries) {
    for (int64_t i = 0; i < expiries; ++i) {
      if (options.on_expired) options.on_expired();
    }
    for (auto& [done, result] : deliveries) done(std::move(result));
    if ((!deliveries.empty() || expiries > 0) && options.on_change) options.on_change();
  }

  void TimerLoop() {
    std::unique_lock<std::mutex> lock(mu);
    while (!closed) {
      std::vector<Delivery> deliveries;
      const int64_t expiries = Advance(absl::Now(), &deliveries);
      if (!deliveries.empty() || expiries > 0) {
        lock.unlock();
        Deliver(deliveries, expiries);
        lock.lock();
        continue;
      }
      absl::Time wake = absl::InfiniteFuture();
      if (!assigned.empty()) wake = std::min(wake, assigned.begin()->first);
      for (const Waiter& w : waiters) wake = std::min(wake, w.until);
      if (wake == absl::InfiniteFuture()) {
        cv.wait(lock);
      } else {
        cv.wait_until(lock, absl::ToChronoTime(wake + absl::Milliseconds(1)));
      }
    }
  }
};

LabelingQueue::LabelingQueue(std::unique_ptr<State> state) : state_(std::move(state)) {}

LabelingQueue::~LabelingQueue() { Close(); }

absl::StatusOr<std::unique_ptr<LabelingQueue>> LabelingQueue::Open(LabelingQueueOptions options) {
  if (options.default_task_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("default_task_timeout must be > 0");
  }
  auto state = std::make_unique<State>();
  state->options = std::move(options);
  const std::string& dir = state->options.state_dir;
  if (!dir.empty()) {
    RETURN_IF_ERROR(util::MakeDirectories(dir));
    state->journal_path = dir + "/" + kJournal;
    // Compactions cut short by a kill leave temporary files; nothing else writes here.
    ASSIGN_OR_RETURN(std::vector<std::string> stale, util::RemoveTempFiles(dir));
    for (const std::string& path : stale) runtime::Logger("labeling")->info("removed a stale temp file path={}", path);
    uint64_t whole = 0;  // bytes of the journal up to its last newline
    if (util::PathExists(state->journal_path)) {
      ASSIGN_OR_RETURN(std::string text, util::ReadFile(state->journal_path));
      const size_t last_newline = text.rfind('\n');
      whole = last_newline == std::string::npos ? 0 : last_newline + 1;
      const std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
      for (size_t i = 0; i < lines.size(); ++i) {
        if (lines[i].empty()) continue;
        if (i + 1 == lines.size()) {
          // No newline: the write of this record was cut short, so it was never acknowledged (a record and its
          // newline are written together, then synced), even when what arrived happens to parse.
          runtime::Logger("labeling")->warn("dropping a torn last record path={}:{}", state->journal_path, i + 1);
          continue;
        }
        Json record = Json::parse(lines[i], nullptr, false);
        absl::Status applied = record.is_discarded() ? absl::DataLossError("not JSON") : absl::OkStatus();
        if (applied.ok()) {
          try {
            applied = state->Apply(record);
          } catch (const Json::exception& e) {
            applied = absl::DataLossError(e.what());
          }
        }
        if (!applied.ok()) {
          return absl::DataLossError(
              absl::StrCat(state->journal_path, ":", i + 1, ": corrupt queue record: ", applied.message()));
        }
      }
    }
    const std::string compacted = state->Compacted();
    if (absl::Status s = util::WriteFileAtomically(state->journal_path, compacted); s.ok()) {
      whole = compacted.size();
    } else {
      // No room to compact (a full disk): go on with the journal as it is, without its torn tail.
      runtime::Logger("labeling")->warn("journal not compacted, appending to it as it is path={}: {}",
                                        state->journal_path, s.ToString());
    }
    state->journal_fd = ::open(state->journal_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (state->journal_fd < 0) return util::ErrnoStatus("cannot open", state->journal_path, errno);
    if (::ftruncate(state->journal_fd, static_cast<off_t>(whole)) != 0) {
      return util::ErrnoStatus("cannot truncate the torn tail of", state->journal_path, errno);
    }
    state->journal_size = whole;
  }
  State* raw = state.get();
  state->timer = std::thread([raw] { raw->TimerLoop(); });
  return std::unique_ptr<LabelingQueue>(new LabelingQueue(std::move(state)));
}

void LabelingQueue::Close() {
  std::vector<Delivery> deliveries;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (!state_->closed) {
      state_->closed = true;
      for (Waiter& w : state_->waiters) {
        deliveries.emplace_back(std::move(w.done), absl::UnavailableError("the labeling queue is shutting down"));
      }
      state_->waiters.clear();
    }
    state_->cv.notify_all();
  }
  if (state_->timer.joinable()) state_->timer.join();
  for (auto& [done, result] : deliveries) done(std::move(result));
}

absl::StatusOr<BatchInfo> LabelingQueue::Enqueue(const NewBatch& batch) {
  if (batch.batch_id.empty()) return absl::InvalidArgumentError("batch_id: required");
  if (batch.tasks.empty()) return absl::InvalidArgumentError("tasks: at least one task is required");
  for (size_t i = 0; i < batch.tasks.size(); ++i) {
    if (batch.tasks[i].responses.size() < 2) {
      return absl::InvalidArgumentError(absl::StrCat("tasks[", i, "].responses: at least 2 are needed to rank, got ",
                                                     batch.tasks[i].responses.size()));
    }
  }
  if (batch.task_timeout < absl::ZeroDuration()) return absl::InvalidArgumentError("task_timeout: must be >= 0");
  State& s = *state_;
  std::vector<Delivery> deliveries;
  BatchInfo info;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto existing = s.batches.find(batch.batch_id);
    if (existing != s.batches.end()) {
      const Batch& b = existing->second;
      bool same = b.task_ids.size() == batch.tasks.size();
      for (size_t i = 0; same && i < batch.tasks.size(); ++i) {
        const Task& t = s.tasks.at(b.task_ids[i]);
        same = t.prompt == batch.tasks[i].prompt && t.responses == batch.tasks[i].responses;
      }
      if (!same) {
        return absl::AlreadyExistsError(
            absl::StrCat("batch_id '", batch.batch_id, "' exists with other tasks; choose a new batch_id"));
      }
      info.task_ids = b.task_ids;
      info.created = b.created;
      info.already_existed = true;
      return info;
    }
    Batch b;
    b.id = batch.batch_id;
    b.run_id = batch.run_id;
    b.round = batch.round;
    b.instructions = batch.instructions;
    b.task_timeout = batch.task_timeout;
    b.created = absl::Now();
    std::vector<Task> fresh;
    for (size_t i = 0; i < batch.tasks.size(); ++i) {
      Task t;
      t.seq = s.next_seq + static_cast<int64_t>(i);
      do {
        t.id = absl::StrFormat("t-%016x", absl::Uniform<uint64_t>(s.gen));
      } while (s.tasks.count(t.id) > 0);
      t.batch_id = b.id;
      t.index = static_cast<int32_t>(i);
      t.prompt = batch.tasks[i].prompt;
      t.responses = batch.tasks[i].responses;
      t.order.resize(t.responses.size());
      std::iota(t.order.begin(), t.order.end(), 0);
      std::shuffle(t.order.begin(), t.order.end(), s.gen);
      b.task_ids.push_back(t.id);
      fresh.push_back(std::move(t));
    }
    std::map<std::string, Task> staged;
    for (const Task& t : fresh) staged[t.id] = t;
    RETURN_IF_ERROR(s.Append(State::BatchRecord(b, staged), true));
    s.next_seq += static_cast<int64_t>(fresh.size());
    for (Task& t : fresh) {
      s.pending.insert({t.seq, t.id});
      s.tasks[t.id] = std::move(t);
    }
    info.task_ids = b.task_ids;
    info.created = b.created;
    s.batches[b.id] = std::move(b);
    s.Advance(absl::Now(), &deliveries);
    s.cv.notify_all();
  }
  s.Deliver(deliveries, 0);
  if (s.options.on_change) s.options.on_change();
  return info;
}

int64_t LabelingQueue::Next(const std::string& labeler_id, absl::Duration wait, TaskCallback done) {
  State& s = *state_;
  std::vector<Delivery> deliveries;
  int64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    id = s.next_wait_id++;
    if (s.closed) {
      deliveries.emplace_back(std::move(done), absl::UnavailableError("the labeling queue is shutting down"));
    } else {
      const absl::Time now = absl::Now();
      s.waiters.push_back({id, labeler_id, now + std::max(wait, absl::ZeroDuration()), std::move(done)});
      s.Advance(now, &deliveries);
      s.cv.notify_all();
    }
  }
  s.Deliver(deliveries, 0);
  return id;
}

void LabelingQueue::CancelWait(int64_t wait_id) {
  TaskCallback done;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    for (auto it = state_->waiters.begin(); it != state_->waiters.end(); ++it) {
      if (it->id == wait_id) {
        done = std::move(it->done);
        state_->waiters.erase(it);
        break;
      }
    }
  }
  if (done) done(absl::CancelledError("the caller went away"));
}

absl::StatusOr<int64_t> LabelingQueue::Submit(const std::string& task_id, const std::string& labeler_id,
                                              const std::vector<std::pair<std::string, int32_t>>& ranks) {
  State& s = *state_;
  std::vector<Delivery> deliveries;
  int64_t completed = 0;
  absl::Duration answer_time;
  int64_t expiries = 0;
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    const absl::Time now = absl::Now();
    expiries = s.Advance(now, &deliveries);  // an assignment past its deadline is expired first
    auto it = s.tasks.find(task_id);
    if (it == s.tasks.end()) {
      refused = absl::NotFoundError(absl::StrCat("task_id '", task_id, "': no such task"));
    } else {
      Task& t = it->second;
      switch (t.state) {
        case TaskState::kCompleted:
          refused = absl::AlreadyExistsError(absl::StrCat("task ", task_id, " is already answered"));
          break;
        case TaskState::kWithdrawn:
          refused = absl::FailedPreconditionError(absl::StrCat("task ", task_id, " was withdrawn by its producer"));
          break;
        case TaskState::kAssigned:
          if (t.labeler != labeler_id) {
            refused = absl::PermissionDeniedError(
                absl::StrCat("task ", task_id, " is assigned to another labeler, not '", labeler_id, "'"));
          }
          break;
        case TaskState::kPending:
          refused = t.expired_labeler == labeler_id
                        ? absl::FailedPreconditionError(absl::StrCat(
                              "task ", task_id, ": the deadline passed and the task went back to the queue"))
                        : absl::PermissionDeniedError(absl::StrCat("task ", task_id, " is not assigned to '",
                                                                   labeler_id, "'; take tasks with NextTask"));
          break;
      }
      std::vector<int32_t> by_response(t.responses.size(), 0);
      if (refused.ok()) {
        if (ranks.size() != t.order.size()) {
          refused = absl::InvalidArgumentError(
              absl::StrCat("ranks: the task has ", t.order.size(), " candidates, got ", ranks.size(), " ranks"));
        }
        for (size_t i = 0; refused.ok() && i < ranks.size(); ++i) {
          const auto& [candidate, rank] = ranks[i];
          int32_t p = 0;
          const bool known = absl::SimpleAtoi(candidate, &p) && p >= 1 && p <= static_cast<int32_t>(t.order.size()) &&
                             candidate == std::to_string(p);
          if (!known) {
            refused = absl::InvalidArgumentError(
                absl::StrCat("ranks[", i, "].candidate_id: '", candidate, "' is not a candidate of task ", task_id));
          } else if (rank < 1) {
            refused = absl::InvalidArgumentError(absl::StrCat("ranks[", i, "].rank: must be >= 1, got ", rank));
          } else if (by_response[t.order[p - 1]] != 0) {
            refused = absl::InvalidArgumentError(
                absl::StrCat("ranks[", i, "].candidate_id: '", candidate, "' is ranked twice"));
          } else {
            by_response[t.order[p - 1]] = rank;
          }
        }
      }
      if (refused.ok()) {
        Task done = t;
        done.ranking.task_index = t.index;
        done.ranking.task_id = t.id;
        done.ranking.labeler_id = labeler_id;
        done.ranking.ranks = by_response;
        done.ranking.completed_at = now;
        refused = s.Append(State::SubmitRecord(done), true);
        if (refused.ok()) {
          s.assigned.erase({t.deadline, t.id});
          done.state = TaskState::kCompleted;
          answer_time = now - t.assigned_at;
          t = std::move(done);
          completed = ++s.batches.at(t.batch_id).completed;
        }
      }
    }
  }
  s.Deliver(deliveries, expiries);
  if (!refused.ok()) return refused;
  if (s.options.on_answered) s.options.on_answered(answer_time);
  if (s.options.on_change) s.options.on_change();
  return completed;
}

absl::StatusOr<BatchRankings> LabelingQueue::Rankings(const std::string& batch_id) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->batches.find(batch_id);
  if (it == state_->batches.end()) return absl::NotFoundError(absl::StrCat("batch_id '", batch_id, "': no such batch"));
  const Batch& b = it->second;
  BatchRankings out;
  out.total = static_cast<int64_t>(b.task_ids.size());
  out.completed = b.completed;
  out.created = b.created;
  out.cancelled = b.cancelled;
  for (const std::string& id : b.task_ids) {
    const Task& t = state_->tasks.at(id);
    if (t.state == TaskState::kCompleted) out.rankings.push_back(t.ranking);
  }
  return out;
}

absl::StatusOr<int64_t> LabelingQueue::Cancel(const std::string& batch_id) {
  int64_t n = 0;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    auto it = state_->batches.find(batch_id);
    if (it == state_->batches.end()) {
      return absl::NotFoundError(absl::StrCat("batch_id '", batch_id, "': no such batch"));
    }
    if (it->second.cancelled) return 0;
    RETURN_IF_ERROR(state_->Append({{"op", "cancel"}, {"batch", batch_id}}, true));
    n = state_->Withdraw(it->second);
    state_->cv.notify_all();
  }
  if (state_->options.on_change) state_->options.on_change();
  return n;
}

QueueCounts LabelingQueue::Counts(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  QueueCounts c;
  c.expired = state_->expired;
  for (const auto& [id, t] : state_->tasks) {
    if (!run_id.empty() && state_->batches.at(t.batch_id).run_id != run_id) continue;
    switch (t.state) {
      case TaskState::kPending: ++c.pending; break;
      case TaskState::kAssigned: ++c.assigned; break;
      case TaskState::kCompleted: ++c.completed; break;
      case TaskState::kWithdrawn: break;
    }
  }
  return c;
}

}  // namespace rlhf::labeling
