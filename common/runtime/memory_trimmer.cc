#include "common/runtime/memory_trimmer.h"

#include <malloc.h>

namespace rlhf::runtime {

MemoryTrimmer::MemoryTrimmer(MemoryTrimmerOptions options)
    : options_(std::move(options)), thread_([this] { Loop(); }) {}

MemoryTrimmer::~MemoryTrimmer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void MemoryTrimmer::Request() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    requested_ = true;
  }
  cv_.notify_all();
}

void MemoryTrimmer::Trim() {
  malloc_trim(0);
  trims_.fetch_add(1);
}

void MemoryTrimmer::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    const bool asked = cv_.wait_for(lock, absl::ToChronoNanoseconds(options_.idle_check_interval),
                                    [&] { return stopping_ || requested_; });
    if (stopping_) return;
    if (asked) {
      // Let the asking call's buffers go first.
      if (cv_.wait_for(lock, absl::ToChronoNanoseconds(options_.settle), [&] { return stopping_; })) return;
      requested_ = false;
      lock.unlock();
      Trim();
      lock.lock();
    } else if (options_.idle) {
      lock.unlock();
      if (options_.idle() && mallinfo2().fordblks >= options_.idle_free_bytes) Trim();
      lock.lock();
    } else {
      continue;
    }
    // At most one trim per interval.
    if (cv_.wait_for(lock, absl::ToChronoNanoseconds(options_.min_interval), [&] { return stopping_; })) return;
  }
}

}  // namespace rlhf::runtime
