// Error text of nlohmann::json's exceptions, made fit for a caller: the parser's own message quotes the bytes it
// read before the error ("last read: '...'"), which may be hundreds of bytes of a file the caller should not see,
// and invalid UTF-8. LibTorch-free, nlohmann-free.
#ifndef RLHF_COMMON_UTIL_JSON_ERRORS_H_
#define RLHF_COMMON_UTIL_JSON_ERRORS_H_

#include <string>

#include "absl/strings/string_view.h"

namespace rlhf::util {

// "[json.exception.parse_error.101] parse error at line 1, column 7: syntax error while parsing value - invalid
// literal; last read: 'tru?'" -> "parse error at line 1, column 7: syntax error while parsing value - invalid
// literal". Messages of other shapes lose only the "[json.exception...] " tag.
std::string JsonErrorText(absl::string_view what);

}  // namespace rlhf::util

#endif  // RLHF_COMMON_UTIL_JSON_ERRORS_H_
