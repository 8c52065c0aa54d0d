// The server runtime, tested through real servers on ephemeral loopback ports.
#include "common/runtime/server.h"

#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/generic/generic_stub.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <future>
#include <sstream>
#include <string>
#include <thread>

#include "common/runtime/client.h"
#include "common/runtime/logging.h"
#include "spdlog/sinks/ostream_sink.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rlhf/v1/labeling.grpc.pb.h"
#include "common/util/file_util.h"
#include "tests/testing/test_certs.h"
#include "tests/testing/test_util.h"

extern char** environ;

namespace rlhf::runtime {
namespace {

using ::rlhf::testing::CallRaw;
using ::rlhf::testing::EchoService;
using ::rlhf::testing::kEchoMethod;
using ::rlhf::testing::kSlowMethod;
using ::testing::HasSubstr;

// One caller with a bearer token: `name` holding `roles`.
std::shared_ptr<const Authenticator> OneToken(const std::string& token, const std::string& name = "default",
                                              RoleSet roles = kRoleAdmin) {
  return std::make_shared<const Authenticator>(std::vector<Authenticator::Token>{{token, {name, roles}}},
                                               std::map<std::string, RoleSet, std::less<>>{});
}

ServerOptions LoopbackOptions() {
  ServerOptions options;
  options.name = "runtime-test";
  options.listen_address = "127.0.0.1:0";
  options.metrics_address = "127.0.0.1:0";
  options.shutdown_deadline = absl::Seconds(5);
  // The echo service's methods, for clients.
  options.access.Add({kEchoMethod, kRoleClient}).Add({kSlowMethod, kRoleClient});
  return options;
}

struct TestServer {
  rlhf::v1::LabelingService::CallbackService labeling;  // every method UNIMPLEMENTED: enough for health/reflection
  EchoService echo{300};
  std::unique_ptr<Server> server;
  std::shared_ptr<grpc::Channel> channel;

  explicit TestServer(const ServerOptions& options) {
    auto started = Server::Start(options, {{"rlhf.v1.LabelingService", &labeling}},
                                 std::make_shared<prometheus::Registry>(), &echo);
    EXPECT_TRUE(started.ok()) << started.status();
    if (!started.ok()) return;
    server = *std::move(started);
    ClientOptions client;
    client.target = "127.0.0.1:" + std::to_string(server->port());
    channel = *MakeChannel(client);
  }
};

TEST(Server, ReportsServingThenNotServingOnShutdown) {
  ServerOptions options = LoopbackOptions();
  options.drain_delay = absl::Milliseconds(800);
  TestServer t(options);
  ASSERT_NE(t.server, nullptr);
  EXPECT_EQ(*CheckHealth(*t.channel, "", absl::Seconds(5)), HealthState::kServing);
  EXPECT_EQ(*CheckHealth(*t.channel, "rlhf.v1.LabelingService", absl::Seconds(5)), HealthState::kServing);
  EXPECT_EQ(*CheckHealth(*t.channel, "rlhf.v1.NoSuchService", absl::Seconds(5)), HealthState::kUnknownService);

  std::thread shutdown([&] { t.server->Shutdown(); });
  // During the drain delay health answers NOT_SERVING for the server and for each service.
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(*CheckHealth(*t.channel, "", absl::Seconds(5)), HealthState::kNotServing);
  EXPECT_EQ(*CheckHealth(*t.channel, "rlhf.v1.LabelingService", absl::Seconds(5)), HealthState::kNotServing);
  shutdown.join();
  // Afterwards the server takes no calls at all.
  EXPECT_FALSE(CheckHealth(*t.channel, "", absl::Seconds(1)).ok());
}

// Lists services over grpc.reflection.v1alpha with raw protobuf bytes (the reflection stubs are not installed by
// Debian's gRPC): request `list_services: ""` is field 7; the reply's list_services_response is field 6.
std::vector<std::string> ListServicesByReflection(grpc::Channel& channel) {
  grpc::GenericStub stub(std::shared_ptr<grpc::Channel>(&channel, [](grpc::Channel*) {}));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  auto step = [&](int id) {
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(tag, reinterpret_cast<void*>(id));
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  step(1);
  const std::string request("\x3a\x00", 2);
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  call->WriteLast(request_buffer, grpc::WriteOptions(), reinterpret_cast<void*>(2));
  step(2);
  grpc::ByteBuffer reply_buffer;
  call->Read(&reply_buffer, reinterpret_cast<void*>(3));
  std::vector<std::string> names;
  if (step(3)) {
    std::vector<grpc::Slice> slices;
    reply_buffer.Dump(&slices);
    std::string bytes;
    for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    google::protobuf::UnknownFieldSet reply;
    EXPECT_TRUE(reply.ParseFromString(bytes));
    for (int i = 0; i < reply.field_count(); ++i) {
      if (reply.field(i).number() != 6) continue;
      google::protobuf::UnknownFieldSet list;
      EXPECT_TRUE(list.ParseFromString(reply.field(i).length_delimited()));
      for (int j = 0; j < list.field_count(); ++j) {
        google::protobuf::UnknownFieldSet service;
        EXPECT_TRUE(service.ParseFromString(list.field(j).length_delimited()));
        names.push_back(service.field(0).length_delimited());
      }
    }
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  step(4);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return names;
}

TEST(Server, ReflectionListsTheServices) {
  TestServer t(LoopbackOptions());
  ASSERT_NE(t.server, nullptr);
  const auto names = ListServicesByReflection(*t.channel);
  EXPECT_THAT(names, ::testing::IsSupersetOf({"rlhf.v1.LabelingService", "grpc.health.v1.Health"}));
}

TEST(Server, RefusesCallsWithoutTheBearerTokenButKeepsHealthOpen) {
  ServerOptions options = LoopbackOptions();
  options.security.authenticator = OneToken("s3cret-token");
  TestServer t(options);
  ASSERT_NE(t.server, nullptr);
  std::string reply;
  grpc::Status status = CallRaw(*t.channel, kEchoMethod, "hello", &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(status.error_message(), HasSubstr("bearer token"));
  status = CallRaw(*t.channel, kEchoMethod, "hello", &reply, 5000, "wrong-token");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  status = CallRaw(*t.channel, kEchoMethod, "hello", &reply, 5000, "s3cret-token-and-more");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  status = CallRaw(*t.channel, kEchoMethod, "hello", &reply, 5000, "s3cret-token");
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(reply, "hello");
  // Health needs no token.
  EXPECT_EQ(*CheckHealth(*t.channel, "", absl::Seconds(5)), HealthState::kServing);

  // A client channel configured with the token passes.
  ClientOptions client;
  client.target = "127.0.0.1:" + std::to_string(t.server->port());
  client.bearer_token = "s3cret-token";
  auto with_token = MakeChannel(client);
  ASSERT_TRUE(with_token.ok());
  EXPECT_TRUE(CallRaw(**with_token, kEchoMethod, "x", &reply).ok());
}

TEST(Server, ExportsRequestCounterAndLatencyHistogram) {
  TestServer t(LoopbackOptions());
  ASSERT_NE(t.server, nullptr);
  std::string reply;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(CallRaw(*t.channel, kEchoMethod, "ping", &reply).ok());
  rlhf::v1::LabelingService::Stub stub(t.channel);
  grpc::ClientContext context;
  rlhf::v1::QueueStats stats;
  EXPECT_EQ(stub.GetQueueStats(&context, {}, &stats).error_code(), grpc::StatusCode::UNIMPLEMENTED);

  auto text = rlhf::testing::HttpGet(t.server->metrics_port(), "/metrics");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr("rlhf_rpc_requests_total{code=\"OK\",method=\"/rlhf.test.Echo/Echo\","
                               "service=\"runtime-test\"} 3"));
  EXPECT_THAT(*text, HasSubstr("rlhf_rpc_requests_total{code=\"UNIMPLEMENTED\","
                               "method=\"/rlhf.v1.LabelingService/GetQueueStats\""));
  EXPECT_THAT(*text, HasSubstr("rlhf_rpc_latency_seconds_bucket{code=\"OK\",method=\"/rlhf.test.Echo/Echo\""));
  EXPECT_THAT(*text, HasSubstr("rlhf_rpc_latency_seconds_count{code=\"OK\",method=\"/rlhf.test.Echo/Echo\","
                               "service=\"runtime-test\"} 3"));
  EXPECT_THAT(*text, HasSubstr("rlhf_build_info{"));
}

TEST(Server, RejectsOversizeMessagesWithResourceExhausted) {
  ServerOptions options = LoopbackOptions();
  options.max_request_bytes = 1024;
  options.max_message_bytes = 1024;
  TestServer t(options);
  ASSERT_NE(t.server, nullptr);
  std::string reply;
  EXPECT_TRUE(CallRaw(*t.channel, kEchoMethod, std::string(512, 'x'), &reply).ok());
  const grpc::Status status = CallRaw(*t.channel, kEchoMethod, std::string(4096, 'x'), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST(Server, FailsToStartOnBadOptions) {
  ServerOptions options = LoopbackOptions();
  options.max_message_bytes = 0;
  EchoService echo;
  auto server = Server::Start(options, {}, nullptr, &echo);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("max_message_bytes"));

  options = LoopbackOptions();
  options.security.tls_cert_file = "/nonexistent/cert.pem";
  server = Server::Start(options, {}, nullptr, &echo);
  EXPECT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("tls_key_file"));

  options = LoopbackOptions();
  options.listen_address = "not-an-address";
  server = Server::Start(options, {}, nullptr, &echo);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable);
}

TEST(Server, CountsAndLogsCallsRefusedForWantOfAToken) {
  ServerOptions options = LoopbackOptions();
  options.security.authenticator = OneToken("s3cret-token");
  TestServer t(options);
  ASSERT_NE(t.server, nullptr);
  auto log = std::make_shared<std::ostringstream>();
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(*log);
  Logger("rpc")->sinks().push_back(sink);
  std::string reply;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(CallRaw(*t.channel, kEchoMethod, "x", &reply).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  Logger("rpc")->sinks().pop_back();
  EXPECT_THAT(log->str(), HasSubstr("rpc refused method=/rlhf.test.Echo/Echo code=UNAUTHENTICATED"));
  EXPECT_THAT(log->str(), HasSubstr("missing bearer token"));
  auto text = rlhf::testing::HttpGet(t.server->metrics_port(), "/metrics");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr("rlhf_rpc_requests_total{code=\"UNAUTHENTICATED\",method=\"/rlhf.test.Echo/Echo\","
                               "service=\"runtime-test\"} 3"));
  // A path the server does not know is counted under "unknown": callers choose paths, and labels must stay few.
  ASSERT_EQ(CallRaw(*t.channel, "/no.Such/Method-1", "x", &reply).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  ASSERT_EQ(CallRaw(*t.channel, "/no.Such/Method-2", "x", &reply).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  text = rlhf::testing::HttpGet(t.server->metrics_port(), "/metrics");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr("rlhf_rpc_requests_total{code=\"UNAUTHENTICATED\",method=\"unknown\","
                               "service=\"runtime-test\"} 2"));
  EXPECT_THAT(*text, ::testing::Not(HasSubstr("Method-1")));
}

TEST(Server, NamesATlsKeyThatDoesNotMatchItsCertificate) {
  const std::string dir = rlhf::testing::MakeTempDir("tls_mismatch");
  auto ca = rlhf::testing::MakeCertificateAuthority("test-ca");
  ASSERT_TRUE(ca.ok()) << ca.status();
  auto server_cert = rlhf::testing::MakeSignedCertificate(*ca, "localhost", /*server=*/true);
  ASSERT_TRUE(server_cert.ok()) << server_cert.status();
  auto other_key = rlhf::testing::MakePrivateKey();
  ASSERT_TRUE(other_key.ok()) << other_key.status();
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/cert.pem", server_cert->cert).ok());
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/key.pem", *other_key).ok());
  ServerOptions options = LoopbackOptions();
  options.security.tls_cert_file = dir + "/cert.pem";
  options.security.tls_key_file = dir + "/key.pem";
  EchoService echo;
  auto server = Server::Start(options, {}, nullptr, &echo);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("--tls_key_file"));
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("--tls_cert_file"));
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("does not match"));
  EXPECT_THAT(std::string(server.status().message()), ::testing::Not(HasSubstr("address in use")));
}

// Requests to methods that carry small messages are refused above the small limit, naming it, before any handler.
TEST(Server, RefusesOversizeRequestsToSmallMethodsNamingTheLimit) {
  TestServer t(LoopbackOptions());
  ASSERT_NE(t.server, nullptr);
  rlhf::v1::GetQueueStatsRequest request;
  request.set_run_id(std::string(5 << 20, 'r'));
  std::string reply;
  const grpc::Status status =
      CallRaw(*t.channel, "/rlhf.v1.LabelingService/GetQueueStats", request.SerializeAsString(), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("4194304"));
}

// gRPC buffers a whole request before any check; after a large one the freed memory goes back to the kernel.
TEST(Server, GivesMemoryBackAfterALargeRequest) {
  TestServer t(LoopbackOptions());
  ASSERT_NE(t.server, nullptr);
  const int64_t before = t.server->memory_trims();
  rlhf::v1::GetQueueStatsRequest request;
  request.set_run_id(std::string(5 << 20, 'r'));
  std::string reply;
  ASSERT_EQ(CallRaw(*t.channel, "/rlhf.v1.LabelingService/GetQueueStats", request.SerializeAsString(), &reply)
                .error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  for (int i = 0; i < 600 && t.server->memory_trims() == before; ++i) absl::SleepFor(absl::Milliseconds(50));
  EXPECT_GT(t.server->memory_trims(), before);
}

TEST(Server, AnswersAnUnparseableRequestWithInvalidArgument) {
  TestServer t(LoopbackOptions());
  ASSERT_NE(t.server, nullptr);
  std::string reply;
  const grpc::Status status =
      CallRaw(*t.channel, "/rlhf.v1.LabelingService/GetQueueStats", std::string("\xff\xff\xff\xff", 4), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("not a valid rlhf.v1.GetQueueStatsRequest"));
}

TEST(BearerTokenMatches, AcceptsTheSchemeInAnyCase) {
  EXPECT_TRUE(BearerTokenMatches("Bearer s3cret", "s3cret"));
  EXPECT_TRUE(BearerTokenMatches("bearer s3cret", "s3cret"));
  EXPECT_TRUE(BearerTokenMatches("BEARER s3cret", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("bearer S3cret", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Basic s3cret", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("bearers3cret", "s3cret"));
}

// A server process receives SIGTERM while a slow call is in flight: health turns NOT_SERVING, the call completes,
// the process exits 0.
TEST(Server, SigtermDrainsInFlightCallsAndExitsZero) {
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  const std::string binary = RLHF_ECHO_SERVER;
  char* argv[] = {const_cast<char*>(binary.c_str()), const_cast<char*>("500"), nullptr};
  pid_t child = -1;
  ASSERT_EQ(::posix_spawn(&child, binary.c_str(), &actions, nullptr, argv, environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  // Whatever happens below, the child does not outlive the test.
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      if (pid > 0 && ::waitpid(pid, nullptr, WNOHANG) == 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
  } reaper{child};
  FILE* child_out = ::fdopen(out[0], "r");
  int port = 0;
  ASSERT_EQ(std::fscanf(child_out, "port=%d", &port), 1);
  ClientOptions client;
  client.target = "127.0.0.1:" + std::to_string(port);
  auto channel = *MakeChannel(client);
  ASSERT_EQ(*CheckHealth(*channel, "", absl::Seconds(5)), HealthState::kServing);

  auto slow = std::async(std::launch::async, [&] {
    std::string reply;
    grpc::Status status = CallRaw(*channel, kSlowMethod, "in-flight", &reply, 10000);
    return std::make_pair(status, reply);
  });
  absl::SleepFor(absl::Milliseconds(300));  // the slow call is now running on the server
  ASSERT_EQ(::kill(child, SIGTERM), 0);
  absl::SleepFor(absl::Milliseconds(150));
  auto health = CheckHealth(*channel, "", absl::Seconds(2));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, HealthState::kNotServing);

  auto [status, reply] = slow.get();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(reply, "in-flight");
  int wait_status = 0;
  ASSERT_EQ(::waitpid(child, &wait_status, 0), child);
  reaper.pid = -1;
  std::fclose(child_out);
  ASSERT_TRUE(WIFEXITED(wait_status));
  EXPECT_EQ(WEXITSTATUS(wait_status), 0);
}

}  // namespace
}  // namespace rlhf::runtime
