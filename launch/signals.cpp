#include "launch/signals.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace peftrun {

namespace {

volatile sig_atomic_t g_first_signal = 0;
// The handler may only use async-signal-safe calls: the messages are built before it is
// installed and written with write(2).
char g_stopping_term[256], g_stopping_int[256];
char g_abort_line[256];
struct sigaction g_previous_term, g_previous_int;

void write_line(const char* text) {
  const ssize_t ignored = ::write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
}

extern "C" void on_stop_signal(int signo) {
  if (g_first_signal != 0) {
    write_line(g_abort_line);
    ::_exit(128 + signo);
  }
  g_first_signal = signo;
  write_line(signo == SIGINT ? g_stopping_int : g_stopping_term);
}

}  // namespace

std::string signal_name(int signo) {
  if (signo == SIGTERM) return "SIGTERM";
  if (signo == SIGINT) return "SIGINT";
  return "signal " + std::to_string(signo);
}

SignalStop::SignalStop(const std::string& who) {
  auto prepare = [&](char* dst, std::size_t size, const std::string& line) {
    std::strncpy(dst, line.c_str(), size - 1);
    dst[size - 1] = '\0';
  };
  for (int signo : {SIGTERM, SIGINT}) {
    prepare(signo == SIGINT ? g_stopping_int : g_stopping_term, sizeof(g_stopping_term),
            who + signal_name(signo) +
                " received: finishing the current step, then writing a checkpoint (a second "
                "signal aborts at once)\n");
  }
  prepare(g_abort_line, sizeof(g_abort_line), who + "second stop signal: aborting now\n");
  g_first_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  // Both blocked while either handler runs, so a second signal always sees the first's flag.
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGTERM);
  sigaddset(&sa.sa_mask, SIGINT);
  // SA_RESTART: reads, writes and fsyncs in flight carry on instead of failing with EINTR.
  sa.sa_flags = SA_RESTART;
  if (::sigaction(SIGTERM, &sa, &g_previous_term) != 0 ||
      ::sigaction(SIGINT, &sa, &g_previous_int) != 0) {
    throw std::runtime_error(std::string("cannot install signal handlers: ") +
                             std::strerror(errno));
  }
}

SignalStop::~SignalStop() {
  ::sigaction(SIGTERM, &g_previous_term, nullptr);
  ::sigaction(SIGINT, &g_previous_int, nullptr);
}

int SignalStop::pending() const {
  return g_first_signal;
}

}  // namespace peftrun
