#include "common/runtime/metrics_http_server.h"

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

}  // namespace
}  // namespace rlhf::runtime
