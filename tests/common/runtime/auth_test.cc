// Authentication: token files with identities and roles, client certificates naming identities, and what a server
// does with callers it refuses.
#include "common/runtime/auth.h"

#include <map>
#include <memory>
#include <string>

#include "common/runtime/client.h"
#include "common/runtime/server.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rlhf/v1/labeling.grpc.pb.h"
#include "tests/testing/test_certs.h"
#include "tests/testing/test_util.h"

namespace rlhf::runtime {
namespace {

using ::rlhf::testing::CallRaw;
using ::testing::HasSubstr;
using ::testing::Not;

absl::StatusOr<std::vector<Authenticator::Token>> Parse(const std::string& text) {
  return Authenticator::ParseTokens("--auth_token_file: tokens.txt", text);
}

TEST(Authenticator, ABareTokenAloneIsTheDefaultIdentityWithRoleAdmin) {
  auto tokens = Parse("  0123abcd \n");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(tokens->size(), 1u);
  EXPECT_EQ((*tokens)[0].token, "0123abcd");
  EXPECT_EQ((*tokens)[0].identity.name, "default");
  EXPECT_EQ((*tokens)[0].identity.roles, kRoleAdmin);
}

TEST(Authenticator, ReadsNamedTokensWithRolesAndSkipsComments) {
  auto tokens = Parse(
      "# the orchestrator\n"
      "tok-orch orchestrator operator\n"
      "\n"
      "\ttok-alice\talice labeler,client\n"
      "tok-alice-2 alice labeler\n");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(tokens->size(), 3u);
  EXPECT_EQ((*tokens)[0].identity.name, "orchestrator");
  EXPECT_EQ((*tokens)[0].identity.roles, kRoleOperator);
  EXPECT_EQ((*tokens)[1].identity.roles, kRoleLabeler | kRoleClient);
  EXPECT_EQ((*tokens)[2].identity.name, "alice");  // a second token for the same name (rotation)
}

TEST(Authenticator, ErrorsNameTheFileAndLineAndNeverQuoteAToken) {
  auto bad = Parse("s3cret-one orchestrator operator\ns3cret-two bob superuser\n");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("--auth_token_file: tokens.txt:2: unknown role"));
  bad = Parse("s3cret-one orchestrator operator\ns3cret-one bob client\n");
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("tokens.txt:2: the same token as line 1"));
  bad = Parse("s3cret-one orchestrator operator\ns3cret-two\n");
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("tokens.txt:2: expected 'TOKEN NAME ROLE"));
  bad = Parse("s3cret-one bob client extra\n");
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("tokens.txt:1: expected 'TOKEN NAME ROLE"));
  bad = Parse("s3cret\"one bob client\n");
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("b64token"));
  bad = Parse("s3cret-one b/o/b client\n");
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("name 'b/o/b'"));
  bad = Parse("# nothing\n\n");
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("holds no token"));
  for (const auto& text : {"s3cret-one orchestrator operator\ns3cret-one bob client\n", "s3cret\"one bob client\n"}) {
    EXPECT_THAT(std::string(Parse(text).status().message()), Not(HasSubstr("s3cret")));
  }
}

TEST(Authenticator, IdentifiesByTokenInAnySchemeCaseAndRefusesUnknownTokens) {
  Authenticator auth(*Parse("tok-a alice labeler\ntok-o orch operator\n"), {});
  EXPECT_EQ(auth.Identify({"Bearer tok-a"}, "")->name, "alice");
  EXPECT_EQ(auth.Identify({"bearer   tok-o"}, "")->name, "orch");
  EXPECT_EQ(auth.Identify({"BEARER tok-o"}, "")->roles, kRoleOperator);
  EXPECT_EQ(auth.Identify({"Bearer tok-x"}, "").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Identify({"Basic tok-a"}, "").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Identify({}, "").status().code(), absl::StatusCode::kUnauthenticated);
  // Without certificate roles, a certificate identifies nobody.
  EXPECT_EQ(auth.Identify({}, "alice").status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(ReadBearerTokenFile, TakesTheFirstFieldSoAServerTokenFileServesItsFirstCaller) {
  const std::string dir = rlhf::testing::MakeTempDir("token_file");
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/tokens", "# callers\n\ntok-o orchestrator operator\ntok-a a labeler\n")
                  .ok());
  EXPECT_EQ(*ReadBearerTokenFile("--token_file", dir + "/tokens"), "tok-o");
}

// A server whose callers come from a token file.
struct TokenServer {
  rlhf::v1::LabelingService::CallbackService labeling;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<Server> server;
  std::shared_ptr<grpc::Channel> channel;

  explicit TokenServer(const std::string& tokens) {
    ServerOptions options;
    options.name = "auth-test";
    options.listen_address = "127.0.0.1:0";
    options.metrics_address = "127.0.0.1:0";
    options.security.authenticator = std::make_shared<const Authenticator>(
        *Authenticator::ParseTokens("tokens", tokens), std::map<std::string, RoleSet, std::less<>>{});
    auto started = Server::Start(options, {{"rlhf.v1.LabelingService", &labeling}}, registry);
    EXPECT_TRUE(started.ok()) << started.status();
    if (!started.ok()) return;
    server = *std::move(started);
    ClientOptions client;
    client.target = "127.0.0.1:" + std::to_string(server->port());
    channel = *MakeChannel(client);
  }
};

TEST(Server, CountsCallsRefusedForWantOfARole) {
  TokenServer t("tok-a alice labeler\n");
  ASSERT_NE(t.server, nullptr);
  std::string reply;
  const grpc::Status status = CallRaw(*t.channel, "/rlhf.v1.LabelingService/CancelTasks", "", &reply, 5000, "tok-a");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(), HasSubstr("'alice' (roles: labeler) may not call"));
  auto text = rlhf::testing::HttpGet(t.server->metrics_port(), "/metrics");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr("rlhf_rpc_requests_total{code=\"PERMISSION_DENIED\","
                               "method=\"/rlhf.v1.LabelingService/CancelTasks\",service=\"auth-test\"} 1"));
}

// Mutual TLS: a caller without a token is the identity its certificate's subject names, with the roles
// --tls_client_roles_file gives it; a token, when sent, decides instead.
TEST(Server, ClientCertificatesNameIdentitiesUnderMutualTls) {
  const std::string dir = rlhf::testing::MakeTempDir("mtls");
  auto ca = rlhf::testing::MakeCertificateAuthority("rlhf-test-ca");
  ASSERT_TRUE(ca.ok()) << ca.status();
  auto server_cert = rlhf::testing::MakeSignedCertificate(*ca, "localhost", /*server=*/true);
  auto alice = rlhf::testing::MakeSignedCertificate(*ca, "alice", /*server=*/false);
  auto mallory = rlhf::testing::MakeSignedCertificate(*ca, "mallory", /*server=*/false);
  ASSERT_TRUE(server_cert.ok() && alice.ok() && mallory.ok());
  const std::map<std::string, std::string> files = {
      {"ca.pem", ca->cert},           {"server.pem", server_cert->cert}, {"server.key", server_cert->key},
      {"alice.pem", alice->cert},     {"alice.key", alice->key},         {"mallory.pem", mallory->cert},
      {"mallory.key", mallory->key},  {"roles", "# subject CN -> roles\nalice labeler\n"},
      {"tokens", "tok-o orch operator\n"}};
  for (const auto& [name, text] : files) ASSERT_TRUE(util::WriteFileAtomically(dir + "/" + name, text).ok());

  rlhf::v1::LabelingService::CallbackService labeling;
  ServerOptions options;
  options.name = "mtls-test";
  options.listen_address = "127.0.0.1:0";
  options.metrics_address.clear();
  options.security.tls_cert_file = dir + "/server.pem";
  options.security.tls_key_file = dir + "/server.key";
  options.security.client_ca_file = dir + "/ca.pem";
  auto authenticator = Authenticator::FromFiles(dir + "/tokens", dir + "/roles");
  ASSERT_TRUE(authenticator.ok()) << authenticator.status();
  options.security.authenticator = *authenticator;
  auto server = Server::Start(options, {{"rlhf.v1.LabelingService", &labeling}}, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();

  auto channel_as = [&](const std::string& who) {
    ClientOptions client;
    client.target = "localhost:" + std::to_string((*server)->port());
    client.tls_ca_file = dir + "/ca.pem";
    client.tls_cert_file = dir + "/" + who + ".pem";
    client.tls_key_file = dir + "/" + who + ".key";
    return *MakeChannel(client);
  };
  std::string reply;
  auto alice_channel = channel_as("alice");
  // alice is a labeler: NextTask reaches the (unimplemented) handler, CancelTasks does not.
  EXPECT_EQ(CallRaw(*alice_channel, "/rlhf.v1.LabelingService/NextTask", "", &reply).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  grpc::Status status = CallRaw(*alice_channel, "/rlhf.v1.LabelingService/CancelTasks", "", &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(), HasSubstr("'alice' (roles: labeler)"));
  // With the operator's token, the token decides.
  EXPECT_EQ(CallRaw(*alice_channel, "/rlhf.v1.LabelingService/CancelTasks", "", &reply, 10000, "tok-o").error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  // mallory's certificate is signed by the CA, but the roles file gives it nothing.
  status = CallRaw(*channel_as("mallory"), "/rlhf.v1.LabelingService/NextTask", "", &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(), HasSubstr("'mallory' (roles: none)"));

  // A roles file without mutual TLS would trust certificates nobody verified.
  options.security.client_ca_file.clear();
  auto refused = Server::Start(options, {}, nullptr);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("--tls_client_roles_file needs --tls_client_ca_file"));
}

}  // namespace
}  // namespace rlhf::runtime
