#!/usr/bin/env bash
# bench/bench_notifier.sh: mails per minute from kpi-notifier to a local SMTP server with
# connection reuse, against a native baseline in the same run and against the same server:
# one curl process sending the same number of messages sequentially over one reused
# connection. Prints both rates, their ratio, the CPU each party spent per mail (notifier,
# SMTP server, PostgreSQL) and the notifier's peak RSS (VmHWM), for each SMTP server:
#
#   aiosmtpd    one aiosmtpd process writing a Maildir (what scripts/stack.sh and the tests
#               run); one Python process, so one core at most
#   aiosmtpd2   SINK_PROCS (default 2) such processes on one port (SO_REUSEPORT,
#               bench/smtp_sink.py), into one Maildir: shows whether one aiosmtpd is the limit
#   null        bench/smtp_sink.py answering every command and storing nothing: the ceiling
#               of the senders themselves
#   null2       SINK_PROCS such null sinks on one port (SO_REUSEPORT): shows whether one
#               null sink process (Python, one core) is the limit of the notifier's connections
#
# Issue 12's goal: with 4 connections the notifier sends >= 1.5 x what curl sends against the
# same sink; the summary lines say "goal=1.5 ok" or "goal=1.5 BELOW GOAL" for each sink, and
# whether peak RSS is within 32 MiB.
#
# Two rates per sender; the goal is judged on the LOWER of the two ratios. The steady rate is
# timed at the sink from the first mail it accepted to the last ((mails - 1) / (last - first)): the same
# clock and the same span for both senders, without what comes before the first mail
# (curl's process start and connection; the notifier's first claim, up to one poll interval
# after the rows were committed, and its connections' set-up) nor, for the notifier, the
# last batched row update. The run rate is the whole run as each sender sees it: curl's
# process from start to exit, the notifier from the commit of the due rows to the last row
# marked sent (ratio_run in the summary). For the Maildir sinks the first and last mail are
# the oldest and newest file mtimes of the run; the null sinks note the times themselves
# (bench/smtp_sink.py, SIGUSR1).
#
#   bench/bench_notifier.sh            N=5000 rows, 1 and 4 SMTP connections, all four sinks
#   N=20000 CONNS="1 4 8" SINKS=aiosmtpd bench/bench_notifier.sh
#
# Env: N (rows/mails, default 5000; 2000 before issue 12's third round), CONNS (notifier connection counts, default "1 4"),
# SINKS (default "aiosmtpd aiosmtpd2 null null2"), SINK_PROCS (processes of aiosmtpd2 and
# null2, default 2),
# BUILD_DIR (build dir with services/notifier/kpi-notifier; default: a Release build in
# build-bench/, configured and built when missing), BENCH_STACK_ENV (an existing stack's
# stack.env; default: a throwaway stack started and stopped here).
# The last lines are one summary per figure: "bench_notifier: sink=… conns=… ratio=… …".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The shipped catalog has sample departments (published tokens): the services refuse it
# unless told this is not a deployment (docs/security.md).
export KPI_ALLOW_SAMPLE_TOKENS=1
PY=/usr/bin/python3
N=${N:-5000}
CONNS=${CONNS:-"1 4"}
SINKS=${SINKS:-"aiosmtpd aiosmtpd2 null null2"}
GOAL=1.5
RSS_GOAL_KB=32768
SINK_PROCS=${SINK_PROCS:-2}
BUILD=${BUILD_DIR:-$ROOT/build-bench}
WORK=$(mktemp -d /tmp/nfbench.XXXXXX)
SMTPD_PID=
NOTIFIER_PID=
OWN_STACK=

stop_sink() {
  if [ -n "$SMTPD_PID" ]; then kill "$SMTPD_PID" 2>/dev/null || true; wait "$SMTPD_PID" 2>/dev/null || true; fi
  SMTPD_PID=
}

cleanup() {
  local rc=$?
  if [ -n "$NOTIFIER_PID" ]; then kill "$NOTIFIER_PID" 2>/dev/null || true; wait "$NOTIFIER_PID" 2>/dev/null || true; fi
  stop_sink
  if [ -n "$OWN_STACK" ]; then "$ROOT/scripts/stack.sh" stop "$WORK/stack" >/dev/null 2>&1 || true; fi
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"/maildir_* "$WORK/curl"
  exit "$rc"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n * 60 / s }'; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
count_mail() { find "$1/new" "$1/cur" -type f 2>/dev/null | wc -l; }
# CPU time (clock ticks) of a process and of its children: utime stime cutime cstime.
ticks() { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
tree_ticks() {
  local t c
  t=$(ticks "$1")
  for c in $(pgrep -P "$1" || true); do t=$((t + $(ticks "$c"))); done
  echo "$t"
}
# Jiffies of all CPUs since boot, "busy total" (busy: all but idle and iowait), and the share
# of the machine's cores that was busy between two such readings: near 100 % says the run was
# bound by the CPU of the whole machine (sender, sink, PostgreSQL and whatever else runs).
cpu_jiffies() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }
busy_pct() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
  d = y[2] - x[2]; printf "%.0f", (d > 0 ? 100 * (y[1] - x[1]) / d : 0) }'; }
ms_per_mail() { awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t * 1000 / hz / n }'; }

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

# The PostgreSQL server's postmaster: its CPU plus that of its children (backends that
# exited are in its cutime/cstime) is the database's share. Same host only.
PG_PM=$(head -n1 "$(psql -qAt -d postgres -c 'SHOW data_directory')/postmaster.pid" 2>/dev/null || true)
pg_ticks() { if [ -n "$PG_PM" ]; then tree_ticks "$PG_PM"; else echo 0; fi; }
# The CPU of the notifier's own backends (the sessions on database $1, listed once): on a
# stack shared with other benchmarks the whole server's CPU also counts their work. The
# server's background processes (WAL writer, checkpointer) are not counted here.
pg_backends() { psql -qAt -d postgres -c "SELECT pid FROM pg_stat_activity WHERE datname = '$1'"; }
backend_ticks() { local t=0 p; for p in $1; do t=$((t + $(ticks "$p"))); done; echo "$t"; }

# Starts sink $1 on a new port: sets SMTP_PORT, SMTPD_PID, MAILDIR ("" for the null sink).
start_sink() {
  SMTP_PORT=$(free_port)
  MAILDIR=$WORK/maildir_$1
  case $1 in
    aiosmtpd)
      "$PY" -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" -c aiosmtpd.handlers.Mailbox "$MAILDIR" \
        >"$WORK/smtpd_$1.log" 2>&1 & ;;
    aiosmtpd2)
      "$PY" "$ROOT/bench/smtp_sink.py" "$SMTP_PORT" "$WORK/count_$1" "$SINK_PROCS" "$MAILDIR" \
        >"$WORK/smtpd_$1.log" 2>&1 & ;;
    null)
      MAILDIR=
      : >"$WORK/count_$1"
      "$PY" "$ROOT/bench/smtp_sink.py" "$SMTP_PORT" "$WORK/count_$1" 1 >"$WORK/smtpd_$1.log" 2>&1 & ;;
    null2)
      MAILDIR=
      : >"$WORK/count_$1"
      "$PY" "$ROOT/bench/smtp_sink.py" "$SMTP_PORT" "$WORK/count_$1" "$SINK_PROCS" \
        >"$WORK/smtpd_$1.log" 2>&1 & ;;
    *) echo "bench: unknown sink $1" >&2; exit 2 ;;
  esac
  SMTPD_PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$SMTP_PORT") 2>/dev/null && break
    sleep 0.1
  done
}

# Mails the current sink has taken so far (Maildir files; the null sink reports at exit).
sink_count() { if [ -n "$MAILDIR" ]; then count_mail "$MAILDIR"; else echo 0; fi; }

# The mails the current sink took since epoch second $1 (Maildir: files modified since; null
# sinks: since their previous SIGUSR1; mtimes come from the kernel's coarse clock, hence 20 ms of
# slack, less than the gap between two runs) and the times of the first and last: sets SPAN_N,
# SPAN_SECS and SRATE, the steady rate (mails - 1 over first to last) in mails/min.
sink_span() {
  local span
  if [ -n "$MAILDIR" ]; then
    span=$(find "$MAILDIR/new" "$MAILDIR/cur" -type f -printf '%T@\n' 2>/dev/null |
      awk -v t0="$1" '$1 >= t0 - 0.02 { n++; if (f == "" || $1 < f) f = $1; if ($1 > l) l = $1 }
                      END { printf "%d %.6f\n", n, l - f }')
  else
    local f=$WORK/count_$SINK.span procs=1
    [ "$SINK" = null2 ] && procs=$SINK_PROCS
    : >"$f"
    kill -USR1 "$SMTPD_PID"
    for _ in $(seq 100); do [ "$(wc -l <"$f")" -ge "$procs" ] && break; sleep 0.05; done
    span=$(awk '$1 > 0 { n += $1; if (f == "" || $2 < f) f = $2; if ($3 > l) l = $3 }
                END { printf "%d %.6f\n", n, l - f }' "$f")
  fi
  read -r SPAN_N SPAN_SECS <<<"$span"
  [ "$SPAN_N" -eq "$N" ] || { echo "bench: the sink timed $SPAN_N mails, expected $N" >&2; exit 1; }
  SRATE=$(awk -v n="$SPAN_N" -v s="$SPAN_SECS" 'BEGIN { printf "%.0f", (s > 0 ? (n - 1) * 60 / s : 0) }')
}

PAYLOAD='{"schema":"kpi.alert/1","alert_id":"6f1c2a70-3a5e-4c1e-9a3b-0c8d2f3e4a51","measure_id":"g2-uiturn-4-supporters","type":"alert","status":"lagging","previous_status":"on_track","stale":false,"episode":1,"value":30,"progress":0.2307692,"expected":0.6,"as_of":"2024-10-01","measure":{"name":"「星の降る里あしべつ応援団」事業の推進","indicator":"登録者数","unit":"person","kind":"level","direction":"increase","baseline":24,"baseline_fy":2022,"target":50,"target_fy":2024,"due":"2025-03-31","plan":"第2期芦別市まち・ひと・しごと創生総合戦略（改訂版）","url":"http://localhost:8081/v1/attainment"},"recipients":[{"department":"kikaku","name":null,"email":"kikaku@ashibetsu-city.example"}],"created_at":"2024-10-01T00:00:00.000Z"}'

# The mail curl sends: one the notifier wrote (same size and shape), made once.
mkdir -p "$WORK/curl"
make_curl_message() {
  [ -s "$WORK/curl/msg.eml" ] && return 0
  local sample
  sample=$(find "$1/new" -type f -print -quit)
  grep -v '^X-Peer:\|^X-MailFrom:\|^X-RcptTo:' "$sample" | sed 's/$/\r/' >"$WORK/curl/msg.eml"
}

# One notifier run against the current sink with $1 connections: sets SECS, RATE, RSS, CPU_*.
run_notifier() {
  local c=$1 db="bench_nf_$$_${SINK}_$1" http_port before n0 p0 s0 t0 t1
  psql -qAt -d postgres -c "CREATE DATABASE $db" >/dev/null
  http_port=$(free_port)
  before=$(sink_count)
  PGDATABASE=$db KPI_SMTP_URL="smtp://127.0.0.1:$SMTP_PORT" KPI_SMTP_CONNECTIONS=$c \
    KPI_NOTIFIER_LISTEN="127.0.0.1:$http_port" KPI_NOTIFY_GROUP_WAIT_MS=0 KPI_NOTIFY_POLL_MS=100 \
    KPI_TOPIC_ALERTS="bench_nf_$$_alerts" KPI_TOPIC_ALERTS_DLQ="bench_nf_$$_dlq" \
    KPI_NOTIFIER_GROUP="bench_nf_$$" KPI_LOG_LEVEL=warn KPI_MAIL_FROM=kpi-bench@bench.example \
    "$BUILD/services/notifier/kpi-notifier" 2>"$WORK/notifier_${SINK}_$c.log" &
  NOTIFIER_PID=$!
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  backends=$(pg_backends "$db")
  n0=$(ticks "$NOTIFIER_PID") p0=$(pg_ticks) b0=$(backend_ticks "$backends") s0=$(tree_ticks "$SMTPD_PID")
  # One row per recipient: N single-alert mails, all due at once.
  psql -qAt -d "$db" -v payload="$PAYLOAD" -v n="$N" >/dev/null <<'SQL'
INSERT INTO notifications (alert_id, recipient, measure_id, alert_type, payload, created_at)
SELECT gen_random_uuid(), 'bench' || i || '@bench.example', 'g2-uiturn-4-supporters', 'alert',
       :'payload', now() - interval '1 hour'
FROM generate_series(1, :n) AS i;
SQL
  t0=$(now)
  j0=$(cpu_jiffies)
  # Wait on the notifier's own counter (a curl to /metrics), then on the rows: polling the
  # table with a new psql every 50 ms cost PostgreSQL a backend start each time and slowed
  # the run it measured.
  while [ "$(curl -fs "http://127.0.0.1:$http_port/metrics" |
             awk '/^kpi_notifier_notifications_sent_total / { print int($2) }')" -lt "$N" ]; do
    kill -0 "$SMTPD_PID" 2>/dev/null || { echo "bench: the $SINK sink exited; see $WORK" >&2; exit 1; }
    kill -0 "$NOTIFIER_PID" 2>/dev/null || { echo "bench: the notifier exited; see $WORK" >&2; exit 1; }
    sleep 0.05
  done
  while [ "$(psql -qAt -d "$db" -c "SELECT count(*) FROM notifications WHERE state = 'sent'")" -lt "$N" ]; do
    kill -0 "$NOTIFIER_PID" 2>/dev/null || { echo "bench: the notifier exited; see $WORK" >&2; exit 1; }
    sleep 0.05
  done
  j1=$(cpu_jiffies)
  # The end is when the last row was marked sent (the sent batch's now(), same host clock), not
  # when the polling above noticed it: the poll interval then neither adds to the time nor, by
  # polling more often, takes CPU from the run.
  t1=$(psql -qAt -d "$db" -c "SELECT extract(epoch FROM max(sent_at)) FROM notifications")
  sink_span "$t0"
  BUSY=$(busy_pct "$j0" "$j1")
  CPU_NF=$(ms_per_mail $(($(ticks "$NOTIFIER_PID") - n0)) "$N")
  CPU_PG=$(ms_per_mail $(($(pg_ticks) - p0)) "$N")
  CPU_PGB=$(ms_per_mail $(($(backend_ticks "$backends") - b0)) "$N")
  CPU_SINK=$(ms_per_mail $(($(tree_ticks "$SMTPD_PID") - s0)) "$N")
  RSS=$(awk '/VmHWM/ { print $2 " " $3 }' "/proc/$NOTIFIER_PID/status")
  kill -TERM "$NOTIFIER_PID"
  wait "$NOTIFIER_PID" || { echo "bench: notifier exited with $?" >&2; exit 1; }
  NOTIFIER_PID=
  if [ -n "$MAILDIR" ]; then
    local got=$(( $(sink_count) - before ))
    [ "$got" -eq "$N" ] || { echo "bench: expected $N mails in the Maildir, found $got" >&2; exit 1; }
    make_curl_message "$MAILDIR"
  fi
  psql -qAt -d postgres -c "DROP DATABASE $db" >/dev/null
  SECS=$(elapsed "$t0" "$t1")
  RATE=$(rate "$N" "$SECS")
}

# The baseline against the current sink: sets SECS, RATE, CPU_SINK.
run_curl() {
  local before t0 t1 s0
  [ -s "$WORK/curl/msg.eml" ] || { echo "bench: list a Maildir sink before null in SINKS" >&2; exit 2; }
  {
    for _ in $(seq "$N"); do
      printf 'url = "smtp://127.0.0.1:%s"\nupload-file = "%s"\n' "$SMTP_PORT" "$WORK/curl/msg.eml"
    done
  } >"$WORK/curl/curlrc"
  before=$(sink_count)
  s0=$(tree_ticks "$SMTPD_PID")
  j0=$(cpu_jiffies)
  t0=$(now)
  # curl's own CPU (user + system seconds) from bash's time keyword.
  { TIMEFORMAT='%3U %3S'; time curl -s -K "$WORK/curl/curlrc" --mail-from kpi-bench@bench.example \
      --mail-rcpt baseline@bench.example; } 2>"$WORK/curl/time"
  t1=$(now)
  BUSY=$(busy_pct "$j0" "$(cpu_jiffies)")
  sink_span "$t0"
  CPU_CURL=$(awk -v n="$N" '{ printf "%.3f", ($1 + $2) * 1000 / n }' "$WORK/curl/time")
  CPU_SINK=$(ms_per_mail $(($(tree_ticks "$SMTPD_PID") - s0)) "$N")
  if [ -n "$MAILDIR" ]; then
    local got=$(( $(sink_count) - before ))
    [ "$got" -eq "$N" ] || { echo "bench: curl baseline delivered $got of $N" >&2; exit 1; }
  fi
  SECS=$(elapsed "$t0" "$t1")
  RATE=$(rate "$N" "$SECS")
}

declare -A OUT
SUMMARY=()
for SINK in $SINKS; do
  start_sink "$SINK"
  # The notifier first: its first mail is the one curl sends.
  for c in $CONNS; do
    run_notifier "$c"
    OUT[$SINK,$c]="$SECS $RATE $RSS $CPU_NF $CPU_PG $CPU_SINK $BUSY $CPU_PGB $SRATE"
  done
  run_curl
  OUT[$SINK,curl]="$SECS $RATE $CPU_SINK $CPU_CURL $BUSY $SRATE"
  stop_sink
  if [ -z "$MAILDIR" ]; then
    got=$(awk '{ s += $1 } END { print s + 0 }' "$WORK/count_$SINK")
    want=$(( N * ($(wc -w <<<"$CONNS") + 1) ))
    # (The count file holds each process's total at exit; the span file only the last run.)
    [ "$got" -eq "$want" ] || { echo "bench: the null sink took $got mails, expected $want" >&2; exit 1; }
  fi
done

printf '\nkpi-notifier bench: %s mails (%s bytes each); CPU in ms per mail\n' "$N" "$(wc -c <"$WORK/curl/msg.eml")"
printf '%-10s %-34s %8s %10s %6s %10s %6s %10s %8s %8s %8s %8s %6s\n' "sink" "sender" "seconds" \
  "run/min" "ratio" "steady/min" "ratio" "peak RSS" "cpu snd" "cpu pgb" "cpu pg" "cpu sink" "busy"
for SINK in $SINKS; do
  read -r bs br bsink bcurl bbusy bsr <<<"${OUT[$SINK,curl]}"
  printf '%-10s %-34s %8s %10s %6s %10s %6s %10s %8s %8s %8s %8s %5s%%\n' "$SINK" \
    "curl CLI, 1 reused connection" "$bs" "$br" "1.00" "$bsr" "1.00" "-" "$bcurl" "-" "-" "$bsink" "$bbusy"
  for c in $CONNS; do
    read -r s r rss rssu nf pg sk busy pgb sr <<<"${OUT[$SINK,$c]}"
    ratio_run=$(awk -v a="$r" -v b="$br" 'BEGIN { printf "%.2f", a / b }')
    ratio=$(awk -v a="$sr" -v b="$bsr" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    printf '%-10s %-34s %8s %10s %6s %10s %6s %10s %8s %8s %8s %8s %5s%%\n' "$SINK" \
      "kpi-notifier, $c connection(s)" "$s" "$r" "$ratio_run" "$sr" "$ratio" "$rss $rssu" "$nf" "$pgb" \
      "$pg" "$sk" "$busy"
    # The goal is stated for 4 connections; other counts are printed for comparison. It is
    # judged on the lower ratio: the steady one leaves out the notifier's first poll and last
    # row update, the run one includes curl's process start and connection.
    if [ "$c" = 4 ]; then
      verdict=$(awk -v r="$ratio" -v q="$ratio_run" -v g="$GOAL" \
        'BEGIN { m = (q + 0 < r + 0) ? q : r; print (m + 0 >= g + 0) ? "ok" : "BELOW GOAL" }')
      goal="goal=$GOAL $verdict"
    else
      goal="goal=none (the goal is for 4 connections)"
    fi
    rss_ok=$([ "$rss" -le "$RSS_GOAL_KB" ] && echo ok || echo "OVER 32 MiB")
    SUMMARY+=("bench_notifier: sink=$SINK conns=$c ratio=$ratio $goal notifier=${sr}/min curl=${bsr}/min ratio_run=$ratio_run notifier_run=${r}/min curl_run=${br}/min cpu_ms_per_mail nf=$nf pg_backend=$pgb pg_server=$pg sink=$sk curl=$bcurl curl_sink=$bsink machine_busy nf=$busy% curl=$bbusy% peak_rss=$rss $rssu $rss_ok")
  done
done
printf '(steady: from the first to the last mail the sink accepted, both senders alike; the goal\n'
printf ' is judged on the lower of the two ratios; run: the notifier from the commit of %s due rows to the last row marked sent\n' "$N"
printf ' (first claim, render, SMTP and the row update included), curl from its start to its exit;\n'
printf ' cpu snd is the sender (notifier or curl), cpu pgb\n'
printf ' the notifier'"'"'s own PostgreSQL backends, cpu pg the whole server (other work included);\n'
printf ' busy is the share of all %s cores busy during the run, whoever used them: near 100%% the\n' "$(nproc)"
printf ' machine was the limit; logs in %s)\n' "$WORK"
printf '%s\n' "${SUMMARY[@]}"
