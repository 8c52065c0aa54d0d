#include "common/runtime/metrics_http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "tests/testing/test_util.h"

namespace rlhf::runtime {
namespace {

using ::testing::HasSubstr;

TEST(MetricsHttpServer, ServesTheRegistryInPrometheusTextFormat) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter().Name("rlhf_test_events_total").Help("test").Register(*registry).Add({}).Increment(3);
  auto server = MetricsHttpServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(server.ok()) << server.status();
  auto body = rlhf::testing::HttpGet((*server)->port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_THAT(*body, HasSubstr("# TYPE rlhf_test_events_total counter\nrlhf_test_events_total 3"));
  EXPECT_EQ(*rlhf::testing::HttpGet((*server)->port(), "/healthz"), "ok\n");
  auto missing = rlhf::testing::HttpGet((*server)->port(), "/nope");
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("404"));
}

TEST(MetricsHttpServer, RejectsBadAddressesAndBusyPorts) {
  auto registry = std::make_shared<prometheus::Registry>();
  EXPECT_EQ(MetricsHttpServer::Start("no-port", registry).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsHttpServer::Start("example.com:80", registry).status().code(), absl::StatusCode::kInvalidArgument);
  auto first = MetricsHttpServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(first.ok());
  auto second = MetricsHttpServer::Start("127.0.0.1:" + std::to_string((*first)->port()), registry);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
}

// A client that connects and never sends (or never reads) does not hold up the server's shutdown, however long the
// request timeout.
TEST(MetricsHttpServer, StopsAtOnceWhileAClientHoldsAConnection) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto server = MetricsHttpServer::Start("127.0.0.1:0", registry, absl::Hours(1));
  ASSERT_TRUE(server.ok()) << server.status();
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>((*server)->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::send(fd, "GET /metr", 9, 0), 9);  // half a request, then silence
  absl::SleepFor(absl::Milliseconds(100));       // the server is now waiting on this connection (or about to)
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> stopped = done->get_future();
  std::thread([s = *std::move(server), done]() mutable {
    s.reset();
    done->set_value();
  }).detach();
  // Bounded so that a regression fails rather than hangs: without the fix it waits for the hour.
  EXPECT_EQ(stopped.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  ::close(fd);
}

}  // namespace
}  // namespace rlhf::runtime
