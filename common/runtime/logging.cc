#include "common/runtime/logging.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

#include <google/protobuf/stubs/logging.h>
#include <grpc/support/log.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/runtime/status_util.h"
#include "spdlog/formatter.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace rlhf::runtime {
namespace {

std::mutex& LoggingMutex() {
  static std::mutex mu;
  return mu;
}

LoggingOptions& CurrentOptions() {
  static LoggingOptions options;
  return options;
}

// One JSON object a line: {"ts":"...","level":"info","logger":"rpc","msg":"..."}.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto since_epoch = msg.time.time_since_epoch();
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
    const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(since_epoch - seconds).count();
    const std::time_t tt = static_cast<std::time_t>(seconds.count());
    std::tm tm_utc;
    gmtime_r(&tt, &tm_utc);
    char ts[32];
    std::strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm_utc);
    const auto level = spdlog::level::to_string_view(msg.level);
    std::string line = absl::StrFormat("{\"ts\":\"%s.%06dZ\",\"level\":\"%s\",\"logger\":\"%s\",\"msg\":\"%s\"}\n", ts,
                                       micros, std::string(level.data(), level.size()),
                                       JsonEscape(std::string(msg.logger_name.data(), msg.logger_name.size())),
                                       JsonEscape(std::string(msg.payload.data(), msg.payload.size())));
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

void ApplyFormat(spdlog::logger& logger, LogFormat format) {
  if (format == LogFormat::kJson) {
    logger.set_formatter(std::make_unique<JsonFormatter>());
  } else {
    logger.set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %L %n] %v", spdlog::pattern_time_type::utc);
  }
}

// libprotobuf's lines ("[libprotobuf ERROR ...]" on stderr by default) on the "protobuf" logger.
void ProtobufLogHandler(google::protobuf::LogLevel level, const char* filename, int line, const std::string& message) {
  spdlog::level::level_enum to = spdlog::level::info;
  switch (level) {
    case google::protobuf::LOGLEVEL_INFO:
      to = spdlog::level::info;
      break;
    case google::protobuf::LOGLEVEL_WARNING:
      to = spdlog::level::warn;
      break;
    case google::protobuf::LOGLEVEL_ERROR:
      to = spdlog::level::err;
      break;
    case google::protobuf::LOGLEVEL_FATAL:
      to = spdlog::level::critical;
      break;
  }
  auto logger = Logger("protobuf");
  logger->log(to, "{} ({}:{})", message, filename != nullptr ? filename : "?", line);
  if (to == spdlog::level::critical) logger->flush();  // libprotobuf aborts after a fatal line
}

// gRPC core's lines (gpr_log, filtered by GRPC_VERBOSITY, ERROR by default) on the "grpc" logger.
void GrpcLogFunction(gpr_log_func_args* args) {
  spdlog::level::level_enum to = spdlog::level::info;
  if (args->severity == GPR_LOG_SEVERITY_DEBUG) to = spdlog::level::debug;
  if (args->severity == GPR_LOG_SEVERITY_ERROR) to = spdlog::level::err;
  Logger("grpc")->log(to, "{} ({}:{})", args->message != nullptr ? args->message : "",
                      args->file != nullptr ? args->file : "?", args->line);
}

}  // namespace

std::string JsonEscape(const std::string& raw) {
  // JSON text is UTF-8: bytes that are not become U+FFFD.
  const std::string text = Utf8Safe(raw);
  std::string out;
  out.reserve(text.size() + 8);
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<int>(c));
        } else {
          out += c;
        }
    }
  }
  return out;
}

absl::Status ParseLogFormat(const std::string& name, LogFormat* format) {
  if (name == "text") {
    *format = LogFormat::kText;
  } else if (name == "json") {
    *format = LogFormat::kJson;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("log format '", name, "' is not one of: text, json"));
  }
  return absl::OkStatus();
}

absl::Status InitLogging(const LoggingOptions& options) {
  const auto level = spdlog::level::from_str(options.level);
  if (level == spdlog::level::off && options.level != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("log level '", options.level, "' is not one of: trace, debug, info, warn, error, critical, off"));
  }
  // The libraries that log on their own do so through our loggers from now on, in the same format.
  static std::once_flag routed;
  std::call_once(routed, [] {
    google::protobuf::SetLogHandler(&ProtobufLogHandler);
    gpr_set_log_function(&GrpcLogFunction);
  });
  std::lock_guard<std::mutex> lock(LoggingMutex());
  CurrentOptions() = options;
  spdlog::set_level(level);
  spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& logger) {
    logger->set_level(level);
    ApplyFormat(*logger, options.format);
  });
  return absl::OkStatus();
}

std::shared_ptr<spdlog::logger> Logger(const std::string& component) {
  std::lock_guard<std::mutex> lock(LoggingMutex());
  if (auto existing = spdlog::get(component)) return existing;
  auto logger = spdlog::stderr_logger_mt(component);
  logger->set_level(spdlog::level::from_str(CurrentOptions().level));
  ApplyFormat(*logger, CurrentOptions().format);
  logger->flush_on(spdlog::level::warn);
  return logger;
}

}  // namespace rlhf::runtime
