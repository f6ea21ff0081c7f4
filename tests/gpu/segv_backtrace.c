// LD_PRELOAD helper for the GPU check: on SIGSEGV/SIGABRT/SIGBUS prints the faulting address,
// the instruction pointer and every word of the top of the stack that points into a loaded
// object's code (return addresses, since a jump to a bad address leaves backtrace() with
// nothing to unwind), each as "object(symbol+offset)", then lets the signal take its default
// course. Build:
//   cc -shared -fPIC -o segv_backtrace.so tests/gpu/segv_backtrace.c -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

static void describe(const char* what, uintptr_t address) {
  Dl_info info;
  char line[512];
  int n;
  if (dladdr((void*)address, &info) == 0 || info.dli_fname == NULL) {
    if (what[0] != 's') {  // stack words outside any object are data: skip them
      n = snprintf(line, sizeof line, "  %s %#lx (no object)\n", what, (unsigned long)address);
      (void)!write(2, line, (size_t)n);
    }
    return;
  }
  n = snprintf(line, sizeof line, "  %s %#lx %s(+%#lx) %s+%#lx\n", what, (unsigned long)address,
               info.dli_fname, (unsigned long)(address - (uintptr_t)info.dli_fbase),
               info.dli_sname ? info.dli_sname : "?",
               info.dli_sname ? (unsigned long)(address - (uintptr_t)info.dli_saddr) : 0ul);
  (void)!write(2, line, (size_t)n);
}

static void on_fault(int sig, siginfo_t* si, void* context) {
  static const char head[] = "\n*** fatal signal: fault address, ip, then stack words:\n";
  (void)!write(2, head, sizeof head - 1);
  describe("fault", (uintptr_t)si->si_addr);
#if defined(__x86_64__)
  const ucontext_t* uc = (const ucontext_t*)context;
  describe("ip", (uintptr_t)uc->uc_mcontext.gregs[REG_RIP]);
  const uintptr_t* sp = (const uintptr_t*)uc->uc_mcontext.gregs[REG_RSP];
  for (int i = 0; i < 256; ++i) describe("stack", sp[i]);
#else
  (void)context;
#endif
  signal(sig, SIG_DFL);
  raise(sig);
}

__attribute__((constructor)) static void install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &sa, NULL);
  sigaction(SIGBUS, &sa, NULL);
  sigaction(SIGABRT, &sa, NULL);
}
