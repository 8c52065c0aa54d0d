// One background thread running posted closures in order: for slow work (loading weights) that a gRPC reactor
// must not do on its own thread.
#ifndef RLHF_COMMON_RUNTIME_WORKER_THREAD_H_
#define RLHF_COMMON_RUNTIME_WORKER_THREAD_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace rlhf::runtime {

class WorkerThread {
 public:
  WorkerThread() : thread_([this] { Loop(); }) {}
  // Runs what was posted, then joins.
  ~WorkerThread() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  WorkerThread(const WorkerThread&) = delete;
  WorkerThread& operator=(const WorkerThread&) = delete;

  void Post(std::function<void()> work) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(work));
    }
    cv_.notify_all();
  }

 private:
  void Loop() {
    while (true) {
      std::function<void()> work;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        work = std::move(queue_.front());
        queue_.pop_front();
      }
      work();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts after the other members exist
};

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_WORKER_THREAD_H_
