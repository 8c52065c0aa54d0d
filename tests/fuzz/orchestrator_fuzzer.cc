// Input: a StartRunRequest (binary), validated as the orchestrator's StartRun handler does it: run id, defaults,
// every config field, then the confinement of the files and the run folder it names (RunManager::StartRun with
// validate_only set, so that nothing runs). The answer is OK, INVALID_ARGUMENT (a bad field), PERMISSION_DENIED (a
// path outside --path_roots / --runs_root), NOT_FOUND (a file it names that does not exist) or FAILED_PRECONDITION
// (a run folder that holds other files); an accepted config, with its defaults filled in, validates again unchanged.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "google/protobuf/util/message_differencer.h"
#include "rlhf/v1/orchestrator.pb.h"
#include "services/orchestrator/run_config.h"
#include "services/orchestrator/run_manager.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using rlhf::fuzz::Expect;
using rlhf::fuzz::ExpectOkOr;
using rlhf::fuzz::Fail;

rlhf::orchestrator::RunManager& Manager() {
  static rlhf::orchestrator::RunManager* manager = [] {
    rlhf::orchestrator::RunManagerOptions options;
    options.runs_root = rlhf::fuzz::FreshScratchDir("runs");
    options.resume = false;
    auto created = rlhf::orchestrator::RunManager::Create(options);
    if (!created.ok()) Fail("RunManager::Create", created.status());
    return created->release();
  }();
  return *manager;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Manager();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rlhf::v1::StartRunRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  request.set_validate_only(true);  // validation only: a fuzzer must not start runs
  auto run = Manager().StartRun(request);
  if (!run.ok()) {
    ExpectOkOr(run.status(), "StartRun(validate_only)",
               {absl::StatusCode::kInvalidArgument, absl::StatusCode::kPermissionDenied, absl::StatusCode::kNotFound,
                absl::StatusCode::kFailedPrecondition});
    return 0;
  }
  Expect(run->state() == rlhf::v1::RUN_STATE_PENDING, "a validated run is not PENDING");
  // The filled-in config is a fixed point: defaults again change nothing, and it still validates.
  const rlhf::v1::RunConfig again = rlhf::orchestrator::WithDefaults(run->config());
  Expect(google::protobuf::util::MessageDifferencer::Equals(again, run->config()),
         "WithDefaults of a filled-in config changed it");
  ExpectOkOr(rlhf::orchestrator::ValidateRunConfig(again), "ValidateRunConfig of an accepted config", {});
  return 0;
}
