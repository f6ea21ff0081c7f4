#include "trainer/progress/progress_reporter.h"

#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>

namespace tessera::trainer {
namespace {

constexpr double kRateWindowSeconds = 10.0;  // time constant of the rate smoothing
constexpr double kRedrawSeconds = 0.1;       // terminal redraw interval

double steadySeconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::string format(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

std::string formatRate(double v) {
  if (v >= 100) return format("%.0f", v);
  if (v >= 10) return format("%.1f", v);
  return format("%.2f", v);
}

int terminalWidth(std::FILE* f) {
  winsize ws{};
  if (ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 0;
}

}  // namespace

std::string formatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<std::int64_t>(std::llround(seconds));
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  } else if (s < 86400) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lldd%02lldh", static_cast<long long>(s / 86400),
                  static_cast<long long>(s % 86400 / 3600));
  }
  return buf;
}

ProgressReporter::ProgressReporter(std::int64_t total_steps, std::int64_t start_step,
                                   std::int64_t every, bool enabled)
    : ProgressReporter(total_steps, start_step, every, enabled,
                       isatty(fileno(stderr)) ? Mode::kTerminal : Mode::kLog, stderr,
                       steadySeconds) {}

ProgressReporter::ProgressReporter(std::int64_t total_steps, std::int64_t start_step,
                                   std::int64_t every, bool enabled, Mode mode, std::FILE* terminal,
                                   Clock clock)
    : total_(total_steps),
      every_(std::max<std::int64_t>(every, 1)),
      enabled_(enabled),
      mode_(mode),
      terminal_(terminal),
      clock_(std::move(clock)),
      step_(start_step),
      last_logged_step_(start_step),
      last_time_(clock_()),
      last_rate_step_(start_step) {}

ProgressReporter::~ProgressReporter() {
  finish();
}

void ProgressReporter::update(std::int64_t step, double loss, double samples_per_second) {
  if (!enabled_ || finished_) return;
  const double now = clock_();
  const double dt = now - last_time_;
  // Too short an interval gives a noisy rate; wait until a little time has passed.
  if (dt >= 0.05 && step > last_rate_step_) {
    const double rate = static_cast<double>(step - last_rate_step_) / dt;
    const double alpha = 1.0 - std::exp(-dt / kRateWindowSeconds);
    steps_per_second_ =
        steps_per_second_ > 0 ? steps_per_second_ + alpha * (rate - steps_per_second_) : rate;
    last_time_ = now;
    last_rate_step_ = step;
  }
  step_ = step;
  loss_ = loss;
  samples_per_second_ = samples_per_second;

  const bool last = step >= total_;
  if (mode_ == Mode::kTerminal) {
    if (last || now - last_draw_ >= kRedrawSeconds) {
      last_draw_ = now;
      draw();
    }
  } else if (last || step / every_ > last_logged_step_ / every_) {
    last_logged_step_ = step;
    spdlog::info("{}", line());
  }
}

void ProgressReporter::finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  if (mode_ == Mode::kTerminal) {
    if (step_ > last_logged_step_) draw();
    if (line_open_) std::fputc('\n', terminal_);
    std::fflush(terminal_);
    line_open_ = false;
  } else if (step_ > last_logged_step_) {
    last_logged_step_ = step_;
    spdlog::info("{}", line());
  }
}

std::string ProgressReporter::line() const {
  std::string s = "step " + std::to_string(step_);
  if (total_ > 0) {
    s += "/" + std::to_string(total_) +
         format(" (%.1f%%)", 100.0 * static_cast<double>(step_) / static_cast<double>(total_));
  }
  s += " | loss " + format("%.4g", loss_);
  if (steps_per_second_ > 0) s += " | " + formatRate(steps_per_second_) + " steps/s";
  if (samples_per_second_ > 0) s += " | " + formatRate(samples_per_second_) + " samples/s";
  if (total_ > 0 && steps_per_second_ > 0) {
    const auto left = static_cast<double>(std::max<std::int64_t>(total_ - step_, 0));
    s += " | ETA " + formatDuration(left / steps_per_second_);
  }
  return s;
}

void ProgressReporter::draw() {
  std::string text = line();
  // A line wider than the terminal wraps, and \r could no longer overwrite it.
  if (const int width = terminalWidth(terminal_); width > 1 && text.size() >= size_t(width)) {
    text.resize(static_cast<size_t>(width - 1));
  }
  std::fprintf(terminal_, "\r%s\033[K", text.c_str());
  std::fflush(terminal_);
  line_open_ = true;
  last_logged_step_ = step_;
}

}  // namespace tessera::trainer
