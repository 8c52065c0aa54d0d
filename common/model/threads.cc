#include "common/model/threads.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include "absl/strings/str_cat.h"

namespace rlhf::model {

absl::Status SetIntraOpThreads(int threads) {
  if (threads < 1) return absl::InvalidArgumentError(absl::StrCat("intra-op threads must be >= 1, got ", threads));
  try {
    at::set_num_threads(threads);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("at::set_num_threads(", threads, "): ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

int IntraOpThreads() { return at::get_num_threads(); }

}  // namespace rlhf::model
