/* test_smtp_send.c: libcurl delivers one message to the real SMTP server of the stack and it
 * appears in the Maildir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_env.h"
#include "kpi_it.h"

typedef struct {
  const char *data;
  size_t len, pos;
} upload;

static size_t on_curl_read(char *buf, size_t size, size_t nmemb, void *arg) {
  upload *u = arg;
  size_t n = size * nmemb;
  if (n > u->len - u->pos) n = u->len - u->pos;
  memcpy(buf, u->data + u->pos, n);
  u->pos += n;
  return n;
}

static void test_deliver_one(void **state) {
  (void)state;
  const char *url = getenv("KPI_SMTP_URL");
  const char *maildir = kpi_it_maildir();
  assert_non_null(url);
  assert_non_null(maildir);
  char rcpt[128], tag[64];
  kpi_it_unique("it_smtp", tag, sizeof(tag));
  snprintf(rcpt, sizeof(rcpt), "<%s@test.example>", tag);
  char msg[1024];
  int n = snprintf(msg, sizeof(msg),
                   "From: <kpi@test.example>\r\nTo: %s\r\nSubject: foundation %s\r\n"
                   "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n"
                   "smtp round trip %s\r\n",
                   rcpt, tag, tag);
  upload u = {msg, (size_t)n, 0};

  CURL *curl = curl_easy_init();
  struct curl_slist *rcpts = curl_slist_append(NULL, rcpt);
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_MAIL_FROM, "<kpi@test.example>");
  curl_easy_setopt(curl, CURLOPT_MAIL_RCPT, rcpts);
  curl_easy_setopt(curl, CURLOPT_READFUNCTION, on_curl_read);
  curl_easy_setopt(curl, CURLOPT_READDATA, &u);
  curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
  CURLcode rc = curl_easy_perform(curl);
  long code = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
  curl_slist_free_all(rcpts);
  curl_easy_cleanup(curl);
  if (rc != CURLE_OK) fail_msg("curl: %s", curl_easy_strerror(rc));
  assert_int_equal(code, 250);

  /* The server writes the Maildir file right after answering 250; wait briefly for it. */
  int found = 0;
  for (int tries = 0; tries < 50 && !found; tries++) {
    int count;
    char **msgs = kpi_it_maildir_read(maildir, &count);
    for (int i = 0; i < count; i++)
      if (strstr(msgs[i], tag) && strstr(msgs[i], "smtp round trip")) found++;
    kpi_it_strv_free(msgs);
    if (!found) kpi_it_sleep_ms(100);
  }
  assert_int_equal(found, 1);
}

int main(void) {
  kpi_it_init();
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_deliver_one)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  curl_global_cleanup();
  return rc;
}
