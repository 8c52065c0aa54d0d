// Gives memory that large transient messages held back to the kernel. glibc keeps freed heap pages in the process
// (and the reward service raises its trim threshold on purpose), and gRPC 1.51 buffers a whole request before any
// size check, so a burst of big requests would leave the RSS at its peak for good; malloc_trim(0) returns the free
// pages of every arena.
#ifndef RLHF_COMMON_RUNTIME_MEMORY_TRIMMER_H_
#define RLHF_COMMON_RUNTIME_MEMORY_TRIMMER_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>

#include "absl/time/time.h"

namespace rlhf::runtime {

struct MemoryTrimmerOptions {
  // At most one trim per interval; requests in between are merged into the next trim.
  absl::Duration min_interval = absl::Seconds(1);
  // How long after a request the trim runs, so that the buffers of the call that asked are freed by then.
  absl::Duration settle = absl::Milliseconds(100);
  // Besides requests, every `idle_check_interval` the trimmer trims when `idle()` says no call is running and malloc
  // holds at least `idle_free_bytes` freed: this catches what no call saw (requests gRPC refused for size before
  // any handler, whose buffers it freed itself). Never while calls run, so a busy service keeps its warm heap.
  absl::Duration idle_check_interval = absl::Seconds(2);
  size_t idle_free_bytes = size_t{64} << 20;
  std::function<bool()> idle;  // empty: no idle trims
};

// Trims on its own thread. Thread-safe.
class MemoryTrimmer {
 public:
  explicit MemoryTrimmer(MemoryTrimmerOptions options = {});
  ~MemoryTrimmer();  // stops the thread; a pending trim is dropped
  MemoryTrimmer(const MemoryTrimmer&) = delete;
  MemoryTrimmer& operator=(const MemoryTrimmer&) = delete;

  // Asks for a trim (after a call that held a large message); never blocks on one.
  void Request();
  // Trims done so far.
  int64_t trims() const { return trims_.load(); }

 private:
  void Loop();
  void Trim();

  const MemoryTrimmerOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool requested_ = false;
  bool stopping_ = false;
  std::atomic<int64_t> trims_{0};
  std::thread thread_;  // last: starts after the other members exist
};

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_MEMORY_TRIMMER_H_
