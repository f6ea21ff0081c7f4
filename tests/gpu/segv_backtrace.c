// LD_PRELOAD helper for the GPU check: prints a backtrace to stderr when the process receives
// SIGSEGV/SIGABRT/SIGBUS, then lets the signal take its default course. Build:
//   cc -shared -fPIC -o segv_backtrace.so tests/gpu/segv_backtrace.c
#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static void on_fault(int sig) {
  void* frames[64];
  const int n = backtrace(frames, 64);
  static const char head[] = "\n*** fatal signal; backtrace (binary(+offset) for addr2line):\n";
  (void)!write(2, head, sizeof head - 1);
  backtrace_symbols_fd(frames, n, 2);
  signal(sig, SIG_DFL);
  raise(sig);
}

__attribute__((constructor)) static void install(void) {
  signal(SIGSEGV, on_fault);
  signal(SIGBUS, on_fault);
  signal(SIGABRT, on_fault);
}
