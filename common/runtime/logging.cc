#include "common/runtime/logging.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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

}  // namespace

std::string JsonEscape(const std::string& text) {
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
