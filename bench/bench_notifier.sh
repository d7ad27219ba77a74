#!/usr/bin/env bash
# bench/bench_notifier.sh: mails per minute from kpi-notifier to a local SMTP server (aiosmtpd ->
# Maildir) with connection reuse, against a native baseline in the same run: one curl process
# sending the same number of messages sequentially over one reused connection. Prints both
# rates, their ratio and the notifier's peak RSS (VmHWM).
#
#   bench/bench_notifier.sh            N=2000 rows, 1 and 4 SMTP connections
#   N=5000 CONNS="1 4 8" bench/bench_notifier.sh
#
# Env: N (rows/mails, default 2000), CONNS (notifier connection counts, default "1 4"),
# BUILD_DIR (build dir with services/notifier/kpi-notifier; default: a Release build in
# build-bench/, configured and built when missing), BENCH_STACK_ENV (an existing stack's
# stack.env; default: a throwaway stack started and stopped here).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The shipped catalog has sample departments (published tokens): the services refuse it
# unless told this is not a deployment (docs/security.md).
export KPI_ALLOW_SAMPLE_TOKENS=1
PY=/usr/bin/python3
N=${N:-2000}
CONNS=${CONNS:-"1 4"}
BUILD=${BUILD_DIR:-$ROOT/build-bench}
WORK=$(mktemp -d /tmp/nfbench.XXXXXX)
SMTPD_PID=
NOTIFIER_PID=
OWN_STACK=

cleanup() {
  local rc=$?
  if [ -n "$NOTIFIER_PID" ]; then kill "$NOTIFIER_PID" 2>/dev/null || true; wait "$NOTIFIER_PID" 2>/dev/null || true; fi
  if [ -n "$SMTPD_PID" ]; then kill "$SMTPD_PID" 2>/dev/null || true; wait "$SMTPD_PID" 2>/dev/null || true; fi
  if [ -n "$OWN_STACK" ]; then "$ROOT/scripts/stack.sh" stop "$WORK/stack" >/dev/null 2>&1 || true; fi
  [ -n "${KEEP:-}" ] || rm -rf "$WORK/maildir" "$WORK/curl"
  exit "$rc"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n * 60 / s }'; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
count_mail() { find "$1/new" "$1/cur" -type f 2>/dev/null | wc -l; }

if [ ! -x "$BUILD/services/notifier/kpi-notifier" ]; then
  echo "bench: building kpi-notifier (Release) in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j2 --target kpi-notifier >/dev/null
fi

KPI_STACK_ENV=${BENCH_STACK_ENV:-}
if [ -z "${KPI_STACK_ENV:-}" ]; then
  "$ROOT/scripts/stack.sh" start "$WORK/stack" >/dev/null
  OWN_STACK=1
  KPI_STACK_ENV=$WORK/stack/stack.env
fi
set -a
# shellcheck disable=SC1090
. "$KPI_STACK_ENV"
set +a

# Our own SMTP server, so that only this run's mails are counted.
SMTP_PORT=$(free_port)
"$PY" -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" -c aiosmtpd.handlers.Mailbox "$WORK/maildir" \
  >"$WORK/smtpd.log" 2>&1 &
SMTPD_PID=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$SMTP_PORT") 2>/dev/null && break
  sleep 0.1
done

PAYLOAD='{"schema":"kpi.alert/1","alert_id":"6f1c2a70-3a5e-4c1e-9a3b-0c8d2f3e4a51","measure_id":"g2-uiturn-4-supporters","type":"alert","status":"lagging","previous_status":"on_track","stale":false,"episode":1,"value":30,"progress":0.2307692,"expected":0.6,"as_of":"2024-10-01","measure":{"name":"「星の降る里あしべつ応援団」事業の推進","indicator":"登録者数","unit":"person","kind":"level","direction":"increase","baseline":24,"baseline_fy":2022,"target":50,"target_fy":2024,"due":"2025-03-31","plan":"第2期芦別市まち・ひと・しごと創生総合戦略（改訂版）","url":"http://localhost:8081/v1/attainment"},"recipients":[{"department":"kikaku","name":null,"email":"kikaku@ashibetsu-city.example"}],"created_at":"2024-10-01T00:00:00.000Z"}'

declare -A NF_RATE NF_RSS NF_SECS
for c in $CONNS; do
  DB="bench_nf_$$_$c"
  psql -qAt -d postgres -c "CREATE DATABASE $DB" >/dev/null
  HTTP_PORT=$(free_port)
  before=$(count_mail "$WORK/maildir")
  PGDATABASE=$DB KPI_SMTP_URL="smtp://127.0.0.1:$SMTP_PORT" KPI_SMTP_CONNECTIONS=$c \
    KPI_NOTIFIER_LISTEN="127.0.0.1:$HTTP_PORT" KPI_NOTIFY_GROUP_WAIT_MS=0 KPI_NOTIFY_POLL_MS=100 \
    KPI_TOPIC_ALERTS="bench_nf_$$_alerts" KPI_TOPIC_ALERTS_DLQ="bench_nf_$$_dlq" \
    KPI_NOTIFIER_GROUP="bench_nf_$$" KPI_LOG_LEVEL=warn KPI_MAIL_FROM=kpi-bench@bench.example \
    "$BUILD/services/notifier/kpi-notifier" 2>"$WORK/notifier_$c.log" &
  NOTIFIER_PID=$!
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  # One row per recipient: N single-alert mails, all due at once.
  psql -qAt -d "$DB" -v payload="$PAYLOAD" -v n="$N" >/dev/null <<'SQL'
INSERT INTO notifications (alert_id, recipient, measure_id, alert_type, payload, created_at)
SELECT gen_random_uuid(), 'bench' || i || '@bench.example', 'g2-uiturn-4-supporters', 'alert',
       :'payload', now() - interval '1 hour'
FROM generate_series(1, :n) AS i;
SQL
  t0=$(now)
  while [ "$(psql -qAt -d "$DB" -c "SELECT count(*) FROM notifications WHERE state = 'sent'")" -lt "$N" ]; do
    sleep 0.05
  done
  t1=$(now)
  NF_RSS[$c]=$(awk '/VmHWM/ { print $2 " " $3 }' "/proc/$NOTIFIER_PID/status")
  kill -TERM "$NOTIFIER_PID"
  wait "$NOTIFIER_PID" || { echo "bench: notifier exited with $?" >&2; exit 1; }
  NOTIFIER_PID=
  got=$(( $(count_mail "$WORK/maildir") - before ))
  [ "$got" -eq "$N" ] || { echo "bench: expected $N mails in the Maildir, found $got" >&2; exit 1; }
  NF_SECS[$c]=$(elapsed "$t0" "$t1")
  NF_RATE[$c]=$(rate "$N" "${NF_SECS[$c]}")
done

# Baseline: one curl process, N transfers over one reused SMTP connection, each uploading a
# mail the notifier just wrote (same size and shape).
mkdir -p "$WORK/curl"
sample=$(find "$WORK/maildir/new" -type f -print -quit)
grep -v '^X-Peer:\|^X-MailFrom:\|^X-RcptTo:' "$sample" | sed 's/$/\r/' >"$WORK/curl/msg.eml"
{
  for i in $(seq "$N"); do
    printf 'url = "smtp://127.0.0.1:%s"\nupload-file = "%s"\n' "$SMTP_PORT" "$WORK/curl/msg.eml"
  done
} >"$WORK/curl/curlrc"
before=$(count_mail "$WORK/maildir")
t0=$(now)
curl -s -K "$WORK/curl/curlrc" --mail-from kpi-bench@bench.example --mail-rcpt baseline@bench.example
t1=$(now)
got=$(( $(count_mail "$WORK/maildir") - before ))
[ "$got" -eq "$N" ] || { echo "bench: curl baseline delivered $got of $N" >&2; exit 1; }
BASE_SECS=$(elapsed "$t0" "$t1")
BASE_RATE=$(rate "$N" "$BASE_SECS")

printf '\nkpi-notifier bench: %s mails (%s bytes each) to aiosmtpd on 127.0.0.1:%s\n' \
  "$N" "$(wc -c <"$WORK/curl/msg.eml")" "$SMTP_PORT"
printf '%-44s %10s %12s %10s %12s\n' "sender" "seconds" "mails/min" "ratio" "peak RSS"
printf '%-44s %10s %12s %10s %12s\n' "curl CLI, 1 process, 1 reused connection" "$BASE_SECS" "$BASE_RATE" "1.00" "-"
for c in $CONNS; do
  printf '%-44s %10s %12s %10s %12s\n' "kpi-notifier, $c SMTP connection(s)" "${NF_SECS[$c]}" \
    "${NF_RATE[$c]}" "$(awk -v a="${NF_RATE[$c]}" -v b="$BASE_RATE" 'BEGIN { printf "%.2f", a / b }')" \
    "${NF_RSS[$c]}"
done
printf '(notifier times run from the commit of %s due rows to the last row marked sent: claim,\n' "$N"
printf ' render, SMTP and the row update included; logs in %s)\n' "$WORK"
