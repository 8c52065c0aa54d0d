// Scratch directories for the task tests.
#ifndef RLHF_TESTS_COMMON_TASK_TEST_DIR_H_
#define RLHF_TESTS_COMMON_TASK_TEST_DIR_H_

#include <stdlib.h>

#include <string>

#include "gtest/gtest.h"

namespace rlhf::task::testing {

// A fresh empty directory under the test's temp dir.
inline std::string MakeTempDir() {
  std::string pattern = ::testing::TempDir() + "/rlhf_task_XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed for " << pattern;
  return pattern;
}

}  // namespace rlhf::task::testing

#endif  // RLHF_TESTS_COMMON_TASK_TEST_DIR_H_
