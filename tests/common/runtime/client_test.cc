// The client side's helpers: ReplicaTargets (the per-server targets a weights update must reach behind one address)
// and ReadBearerTokenFile (the token a caller sends, or a server asks for).
#include <string>
#include <vector>

#include "common/runtime/auth.h"
#include "common/runtime/client.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_util.h"

namespace rlhf::runtime {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;

TEST(ReplicaTargetsTest, OneTargetPerServerBehindTheAddress) {
  EXPECT_THAT(ReplicaTargets("127.0.0.1:50053"), ElementsAre("127.0.0.1:50053"));
  EXPECT_THAT(ReplicaTargets("unix:/run/rlhf/reward.sock"), ElementsAre("unix:/run/rlhf/reward.sock"));
  EXPECT_THAT(ReplicaTargets("ipv4:127.0.0.1:1,127.0.0.2:2"), ElementsAre("ipv4:127.0.0.1:1", "ipv4:127.0.0.2:2"));
  EXPECT_THAT(ReplicaTargets("ipv6:[::1]:3"), ElementsAre("ipv6:[::1]:3"));
  // A DNS name: every address it resolves to, once each (localhost is 127.0.0.1, and ::1 where configured).
  EXPECT_THAT(ReplicaTargets("dns:///localhost:50053"), Contains("ipv4:127.0.0.1:50053"));
  EXPECT_THAT(ReplicaTargets("dns://10.0.0.10/localhost:7"), Contains("ipv4:127.0.0.1:7"));
  EXPECT_THAT(ReplicaTargets("dns:///127.0.0.1:9"), ElementsAre("ipv4:127.0.0.1:9"));
  // A name that does not resolve is left for the call to report.
  EXPECT_THAT(ReplicaTargets("dns:///no-such-host.invalid:1"), ElementsAre("dns:///no-such-host.invalid:1"));
}

TEST(ReadBearerTokenFileTest, TakesTheFirstLineTrimmedAndNamesTheFlagOnErrors) {
  const std::string dir = testing::MakeTempDir("token");
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/token", "  s3cret \nsecond line\n").ok());
  EXPECT_EQ(*ReadBearerTokenFile("--token_file", dir + "/token"), "s3cret");
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/empty", "\n").ok());
  auto empty = ReadBearerTokenFile("--services_auth_token_file", dir + "/empty");
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(empty.status().message()), ::testing::HasSubstr("--services_auth_token_file: "));
  auto missing = ReadBearerTokenFile("--reward_auth_token_file", dir + "/missing");
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), ::testing::HasSubstr("--reward_auth_token_file: "));
}

}  // namespace
}  // namespace rlhf::runtime
