// A server-streaming reactor fed from another thread: a producer (a training loop, a weights exporter) pushes
// messages and finally a status; the reactor writes them in order, one write in flight at a time, and never blocks
// a gRPC thread. The producer holds a QueuedWriter::Handle, which stays valid after the call ended (pushes are then
// dropped and report false), so no producer ever touches a deleted reactor.
#ifndef RLHF_COMMON_RUNTIME_QUEUED_WRITER_H_
#define RLHF_COMMON_RUNTIME_QUEUED_WRITER_H_

#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include <grpcpp/server_context.h>
#include <grpcpp/support/server_callback.h>

namespace rlhf::runtime {

template <typename Response>
class QueuedWriter {
  struct Shared;

 public:
  // What producers hold. Thread-safe.
  class Handle {
   public:
    // Queues `message`; false when the call already ended (cancelled, deadline, finished).
    bool Push(Response message) {
      std::unique_lock<std::mutex> lock(shared_->mu);
      if (shared_->ended || shared_->closing || shared_->finished || shared_->cancelled) return false;
      shared_->queue.push_back(std::move(message));
      return shared_->MaybeStartWrite(lock);
    }
    // Ends the call with `status` once every queued message is written. Later calls are ignored.
    void Close(const grpc::Status& status) {
      std::unique_lock<std::mutex> lock(shared_->mu);
      if (shared_->ended || shared_->closing) return;
      shared_->closing = true;
      shared_->status = status;
      shared_->MaybeStartWrite(lock);
    }
    // True once the client cancelled or the call ended otherwise: stop producing.
    bool Cancelled() const {
      std::lock_guard<std::mutex> lock(shared_->mu);
      return shared_->ended || shared_->cancelled;
    }

   private:
    friend class QueuedWriter;
    explicit Handle(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
    std::shared_ptr<Shared> shared_;
  };

  // Returns the reactor to hand back to gRPC and the handle for the producer.
  static std::pair<grpc::ServerWriteReactor<Response>*, Handle> Create() {
    auto shared = std::make_shared<Shared>();
    auto* reactor = new Reactor(shared);
    shared->reactor = reactor;
    return {reactor, Handle(shared)};
  }

 private:
  class Reactor;

  struct Shared {
    std::mutex mu;
    std::deque<Response> queue;
    bool write_in_flight = false;
    bool closing = false;
    bool finished = false;  // Finish called
    bool ended = false;     // OnDone ran (reactor deleted)
    bool cancelled = false;
    grpc::Status status;
    Reactor* reactor = nullptr;

    // Starts the next write, or Finish when closing and drained. Called with `lock` held; releases it.
    bool MaybeStartWrite(std::unique_lock<std::mutex>& lock) {
      if (ended || finished || write_in_flight) return true;
      Reactor* r = reactor;
      if (!queue.empty()) {
        write_in_flight = true;
        const Response* next = &queue.front();  // deque keeps element addresses stable on push_back
        lock.unlock();
        r->StartWrite(next);
        return true;
      }
      if (closing) {
        finished = true;
        grpc::Status s = status;
        lock.unlock();
        r->Finish(s);
      }
      return true;
    }
  };

  class Reactor final : public grpc::ServerWriteReactor<Response> {
   public:
    explicit Reactor(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
    void OnWriteDone(bool ok) override {
      std::unique_lock<std::mutex> lock(shared_->mu);
      shared_->write_in_flight = false;
      shared_->queue.pop_front();
      if (!ok) {  // the stream broke: nothing more can be written
        shared_->cancelled = true;
        shared_->queue.clear();
        if (!shared_->finished) {
          shared_->finished = true;
          lock.unlock();
          this->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the stream was closed"));
        }
        return;
      }
      shared_->MaybeStartWrite(lock);
    }
    void OnCancel() override {
      std::unique_lock<std::mutex> lock(shared_->mu);
      shared_->cancelled = true;
      if (!shared_->finished && !shared_->write_in_flight) {  // else OnWriteDone(false) finishes
        shared_->finished = true;
        lock.unlock();
        this->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled"));
      }
    }
    void OnDone() override {
      {
        std::lock_guard<std::mutex> lock(shared_->mu);
        shared_->ended = true;
        shared_->reactor = nullptr;
        shared_->queue.clear();
      }
      delete this;
    }

   private:
    std::shared_ptr<Shared> shared_;
  };
};

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_QUEUED_WRITER_H_
