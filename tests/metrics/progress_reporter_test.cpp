#include "trainer/progress/progress_reporter.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace tessera::trainer {
namespace {

using Mode = ProgressReporter::Mode;

class LogLines {
 public:
  LogLines() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(text_);
    auto logger = std::make_shared<spdlog::logger>("capture", sink);
    logger->set_pattern("%v");
    spdlog::set_default_logger(logger);
  }
  ~LogLines() { spdlog::set_default_logger(previous_); }
  std::vector<std::string> lines() const {
    std::vector<std::string> out;
    std::istringstream in(text_.str());
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream text_;
};

// A terminal stand-in: an anonymous temporary file read back as text.
class FakeTerminal {
 public:
  FakeTerminal() : f_(std::tmpfile()) {}
  ~FakeTerminal() { std::fclose(f_); }
  std::FILE* get() { return f_; }
  std::string text() {
    std::fflush(f_);
    std::rewind(f_);
    std::string s;
    for (int c; (c = std::fgetc(f_)) != EOF;) s += static_cast<char>(c);
    return s;
  }

 private:
  std::FILE* f_;
};

TEST(FormatDuration, ChoosesTwoUnits) {
  EXPECT_EQ(formatDuration(0), "0s");
  EXPECT_EQ(formatDuration(44.6), "45s");
  EXPECT_EQ(formatDuration(187), "3m07s");
  EXPECT_EQ(formatDuration(2 * 3600 + 5 * 60 + 10), "2h05m");
  EXPECT_EQ(formatDuration(3 * 86400 + 4 * 3600), "3d04h");
  EXPECT_EQ(formatDuration(-1), "?");
  EXPECT_EQ(formatDuration(1.0 / 0.0), "?");
}

TEST(ProgressReporter, LogModeWritesEveryNStepsAndTheLast) {
  LogLines log;
  double now = 100;
  {
    ProgressReporter p(25, 0, 10, true, Mode::kLog, nullptr, [&] { return now; });
    for (int step = 1; step <= 25; ++step) {
      now += 0.125;  // 8 steps/s (exact in binary, so the ETA has no rounding tie)
      p.update(step, 1.0 / step, 320);
    }
    p.finish();
  }
  const auto lines = log.lines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "step 10/25 (40.0%) | loss 0.1 | 8.00 steps/s | 320 samples/s | ETA 2s");
  EXPECT_EQ(lines[1].rfind("step 20/25 (80.0%) | loss 0.05 |", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2].rfind("step 25/25 (100.0%) | loss 0.04 |", 0), 0u) << lines[2];
  EXPECT_NE(lines[2].find("ETA 0s"), std::string::npos) << lines[2];
}

TEST(ProgressReporter, ResumedRunCountsFromItsStartStep) {
  LogLines log;
  double now = 0;
  ProgressReporter p(1000, 500, 100, true, Mode::kLog, nullptr, [&] { return now; });
  for (int step = 501; step <= 600; ++step) {
    now += 0.5;  // 2 steps/s: 400 steps left after step 600 take 200 s
    p.update(step, 0.25, 0);
  }
  const auto lines = log.lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "step 600/1000 (60.0%) | loss 0.25 | 2.00 steps/s | ETA 3m20s");
}

TEST(ProgressReporter, SmoothedRateFollowsASpeedChange) {
  double now = 0;
  ProgressReporter p(100000, 0, 1000000, true, Mode::kLog, nullptr, [&] { return now; });
  int step = 0;
  for (int i = 0; i < 100; ++i) p.update(++step, 1, 0), now += 0.1;  // 10 steps/s
  for (int i = 0; i < 600; ++i) p.update(++step, 1, 0), now += 0.2;  // 5 steps/s for 120 s
  EXPECT_NE(p.line().find("| 5.00 steps/s"), std::string::npos) << p.line();
}

TEST(ProgressReporter, TerminalModeOverwritesOneLineAndThrottlesRedraws) {
  FakeTerminal term;
  double now = 0;
  {
    ProgressReporter p(100, 0, 10, true, Mode::kTerminal, term.get(), [&] { return now; });
    for (int step = 1; step <= 100; ++step) {
      now += 0.01;  // 100 steps/s: redraws at most every 0.1 s, so about every 10 steps
      p.update(step, 0.5, 0);
    }
    p.finish();
  }
  const std::string text = term.text();
  size_t redraws = 0;
  for (char c : text) redraws += c == '\r';
  EXPECT_GE(redraws, 9u);
  EXPECT_LE(redraws, 12u);
  EXPECT_EQ(text.find('\n'), text.size() - 1) << "only the final newline";
  EXPECT_NE(text.find("\rstep 100/100 (100.0%) | loss 0.5 | 100 steps/s | ETA 0s\033[K\n"),
            std::string::npos)
      << text;
}

TEST(ProgressReporter, DisabledWritesNothing) {
  LogLines log;
  FakeTerminal term;
  double now = 0;
  for (const Mode mode : {Mode::kLog, Mode::kTerminal}) {
    ProgressReporter p(10, 0, 1, false, mode, term.get(), [&] { return now; });
    for (int step = 1; step <= 10; ++step) now += 1, p.update(step, 1, 1);
    p.finish();
  }
  EXPECT_TRUE(log.lines().empty());
  EXPECT_TRUE(term.text().empty());
}

}  // namespace
}  // namespace tessera::trainer
