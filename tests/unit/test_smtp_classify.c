/* test_smtp_classify.c: unit tests for kpi_smtp_classify: what counts against a mail and what is the relay's state. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "kpi_smtp.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static void test_classify_table(void **state) {
  (void)state;
  static const struct {
    const char *what;
    int rc;
    long code;
    int mail_started;
    kpi_smtp_outcome want;
  } cases[] = {
      {"accepted", CURLE_OK, 250, 1, KPI_SMTP_SENT},
      {"probe NOOP answered", CURLE_OK, 250, 0, KPI_SMTP_SENT},
      /* The relay's state: nothing said about the mail. */
      {"connection refused", CURLE_COULDNT_CONNECT, 0, 0, KPI_SMTP_RELAY},
      {"name not resolved", CURLE_COULDNT_RESOLVE_HOST, 0, 0, KPI_SMTP_RELAY},
      {"timeout before the greeting", CURLE_OPERATION_TIMEDOUT, 0, 0, KPI_SMTP_RELAY},
      {"timeout waiting after DATA", CURLE_OPERATION_TIMEDOUT, 354, 1, KPI_SMTP_RELAY},
      {"TLS handshake", CURLE_SSL_CONNECT_ERROR, 220, 0, KPI_SMTP_RELAY},
      {"certificate", CURLE_PEER_FAILED_VERIFICATION, 220, 0, KPI_SMTP_RELAY},
      {"STARTTLS required, not offered", CURLE_USE_SSL_FAILED, 250, 0, KPI_SMTP_RELAY},
      {"421 greeting", CURLE_WEIRD_SERVER_REPLY, 421, 0, KPI_SMTP_RELAY},
      {"554 greeting", CURLE_WEIRD_SERVER_REPLY, 554, 0, KPI_SMTP_RELAY},
      {"EHLO refused", CURLE_WEIRD_SERVER_REPLY, 502, 0, KPI_SMTP_RELAY},
      {"AUTH refused 535", CURLE_LOGIN_DENIED, 535, 0, KPI_SMTP_RELAY},
      {"530 to MAIL FROM", CURLE_SEND_ERROR, 530, 1, KPI_SMTP_RELAY},
      {"534 to MAIL FROM", CURLE_SEND_ERROR, 534, 1, KPI_SMTP_RELAY},
      {"538 to MAIL FROM", CURLE_SEND_ERROR, 538, 1, KPI_SMTP_RELAY},
      {"421 to RCPT TO", CURLE_SEND_ERROR, 421, 1, KPI_SMTP_RELAY},
      {"421 after DATA", CURLE_RECV_ERROR, 421, 1, KPI_SMTP_RELAY},
      {"connection reset after MAIL FROM 250", CURLE_RECV_ERROR, 250, 1, KPI_SMTP_RELAY},
      {"nothing back", CURLE_GOT_NOTHING, 0, 0, KPI_SMTP_RELAY},
      {"send failed before MAIL FROM", CURLE_SEND_ERROR, 250, 0, KPI_SMTP_RELAY},
      /* What the relay said about the mail. */
      {"451 to MAIL FROM", CURLE_SEND_ERROR, 451, 1, KPI_SMTP_TRANSIENT},
      {"452 to RCPT TO", CURLE_SEND_ERROR, 452, 1, KPI_SMTP_TRANSIENT},
      {"450 after DATA", CURLE_RECV_ERROR, 450, 1, KPI_SMTP_TRANSIENT},
      {"550 to RCPT TO", CURLE_SEND_ERROR, 550, 1, KPI_SMTP_PERMANENT},
      {"554 after DATA", CURLE_RECV_ERROR, 554, 1, KPI_SMTP_PERMANENT},
      {"552 to DATA", CURLE_SEND_ERROR, 552, 1, KPI_SMTP_PERMANENT},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    kpi_smtp_outcome got = kpi_smtp_classify(cases[i].rc, cases[i].code, cases[i].mail_started);
    if (got != cases[i].want)
      fail_msg("%s: got %s, want %s", cases[i].what, kpi_smtp_outcome_name(got),
               kpi_smtp_outcome_name(cases[i].want));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_classify_table),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
