/* ev_startup.c: waits during start-up (database, broker) that end at once on SIGTERM or SIGINT,
 * before the loop can deliver signals. */
#include <signal.h>

#include "evaluator.h"

/* A stop asked for while start-up waits is remembered here: the waits end at once, and a stop
 * that arrives after them is handed on to the loop just before it starts (ev_service.c). */
static volatile sig_atomic_t startup_stop;

static void on_startup_signal(int signum) {
  if (signum != SIGHUP) startup_stop = 1; /* the catalog was just loaded: nothing to reload */
}

void ev_startup_signals(void) {
  struct sigaction sa = {.sa_handler = on_startup_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
}

bool ev_startup_wait(unsigned ms) {
  for (unsigned waited = 0; waited < ms && !startup_stop; waited += 50) uv_sleep(50);
  return startup_stop != 0;
}

bool ev_startup_stop_requested(void) { return startup_stop != 0; }
