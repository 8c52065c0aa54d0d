// The Prometheus /metrics endpoint: a small HTTP/1.x server that answers GET /metrics with the text exposition of a
// registry (and GET /healthz with "ok"). One thread, one request per connection, bounded request size and time.
//
// Why not prometheus-cpp's Exposer: it runs on civetweb, whose worker threads get a fixed 100 KB stack; in a process
// that also loads LibTorch, OpenBLAS and glog, the libraries' static thread-local storage alone exceeds that, so
// civetweb cannot start a thread (pthread_create fails with EINVAL) and the endpoint never comes up. This server
// uses default-sized threads and stops at once on shutdown.
#ifndef RLHF_COMMON_RUNTIME_METRICS_HTTP_SERVER_H_
#define RLHF_COMMON_RUNTIME_METRICS_HTTP_SERVER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "prometheus/registry.h"

namespace rlhf::runtime {

class MetricsHttpServer {
 public:
  // Listens on `address` (host:port; port 0 picks a free one; host may be an IPv4 address, "localhost" or "0.0.0.0")
  // and serves `registry`. A connection gets `request_timeout` in all to send its request and take the answer.
  // UNAVAILABLE naming the address when it cannot listen, INVALID_ARGUMENT when the address is malformed.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& address,
                                                                  std::shared_ptr<prometheus::Registry> registry,
                                                                  absl::Duration request_timeout = absl::Seconds(5));
  ~MetricsHttpServer();  // stops serving at once (dropping a connection being served) and joins the thread

  int port() const { return port_; }

 private:
  MetricsHttpServer() = default;
  void Loop();
  void Serve(int fd);
  // Waits until `fd` is ready for `events`; false on the deadline, an error, or shutdown.
  bool WaitFor(int fd, short events, absl::Time deadline);
  void WriteAll(int fd, const std::string& data, absl::Time deadline);

  std::shared_ptr<prometheus::Registry> registry_;
  absl::Duration request_timeout_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  int port_ = 0;
  std::thread thread_;
};

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_METRICS_HTTP_SERVER_H_
