// Structured logging for every binary: spdlog, one logger per component, text or JSON lines.
#ifndef RLHF_COMMON_RUNTIME_LOGGING_H_
#define RLHF_COMMON_RUNTIME_LOGGING_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "spdlog/logger.h"

namespace rlhf::runtime {

enum class LogFormat { kText, kJson };

struct LoggingOptions {
  // trace, debug, info, warn, error, critical, off.
  std::string level = "info";
  LogFormat format = LogFormat::kText;
};

// Configures the sink (stderr), the level and the format for all loggers, present and future, and routes the lines
// libprotobuf (SetLogHandler) and gRPC core (gpr_set_log_function) write on their own into the loggers "protobuf"
// and "grpc", so that with kJson every line is JSON. Thread-safe; call early in main. InvalidArgument for an unknown
// level or format name.
absl::Status InitLogging(const LoggingOptions& options);

// Parses "text" or "json".
absl::Status ParseLogFormat(const std::string& name, LogFormat* format);

// The logger of a component ("runtime", "rpc", "reward", ...), created on first use with the current settings.
std::shared_ptr<spdlog::logger> Logger(const std::string& component);

// Escapes `text` for use inside a JSON string literal (no surrounding quotes); bytes that are not UTF-8 become U+FFFD.
std::string JsonEscape(const std::string& text);

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_LOGGING_H_
