// Names of the built-in functions, methods, filters and tests of the Jinja subset (jinja.h), known to the parser
// so that a template using anything else is refused when it is loaded. Internal to common/tokenizer.
#ifndef RLHF_COMMON_TOKENIZER_JINJA_BUILTINS_H_
#define RLHF_COMMON_TOKENIZER_JINJA_BUILTINS_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace rlhf::tokenizer::jinja {

// range, namespace, dict, raise_exception, strftime_now.
bool IsGlobalFunction(absl::string_view name);

// A method some supported type has (str, dict, or the loop's cycle).
bool IsMethodName(absl::string_view name);

bool IsFilterName(absl::string_view name);
bool IsTestName(absl::string_view name);

// Python's str.isspace(): Unicode White_Space plus U+001C..U+001F.
bool IsPythonSpace(uint32_t code_point);

}  // namespace rlhf::tokenizer::jinja

#endif  // RLHF_COMMON_TOKENIZER_JINJA_BUILTINS_H_
