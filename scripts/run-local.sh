#!/usr/bin/env bash
# scripts/run-local.sh: the whole pipeline on this machine — installs what is missing, builds,
# starts a local PostgreSQL, Kafka and SMTP sink (scripts/stack.sh, durable mode), creates the
# topics, and runs ingest, evaluator, notifier and report on the shipped catalog until Ctrl-C.
# The data (PostgreSQL, Kafka's logs, the Maildir) stays across stop/start; only reset
# removes it. See README.md "Try it" and docs/operations.md.
#
#   run-local.sh [start] [--no-wait] [--demo]  start (reusing an earlier run's data); --no-wait
#                                              returns once everything is up
#   run-local.sh stop    [--demo]   stop everything; the data stays
#   run-local.sh reset   [--demo]   stop and remove the run directory (data, logs, Maildir)
#   run-local.sh reload  [--demo]   kpi-admin check-catalog, then SIGHUP to every service
#   run-local.sh status  [--demo]   what runs
#   run-local.sh mail [N] [TO] [--demo]  the latest N mails (default 1), decoded; TO: only
#                                   those whose To contains it (e.g. kikaku)
#
# --demo: a separate run (./run-demo, ports 8090-8093) that replays config/demo/*.ndjson once
# through the batch endpoint and evaluates at KPI_DEMO_EVAL_DATE (2024-12-31), inside the plan.
#
# Environment:
#   KPI_RUN_DIR             state, logs and the Maildir (default ./run, ./run-demo with --demo)
#   KPI_BUILD_DIR           the build tree whose binaries run (default ./build/release)
#   KPI_RUN_LOCAL_NO_BUILD  1: no bootstrap, no build; KPI_BUILD_DIR must be built already
#   KPI_CATALOG             catalog (default config/catalog.json)
#   KPI_{INGEST,EVALUATOR,NOTIFIER,REPORT}_LISTEN  listen addresses (127.0.0.1:8080-8083)
#   KPI_NOTIFY_GROUP_WAIT_MS  the notifier's group wait (default 5000 here)
#   KPI_DEMO_EVAL_DATE      the demo's evaluation date (default 2024-12-31)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SERVICES=(ingest evaluator notifier report)
DEPARTMENTS=(kikaku kosodate kyoiku shimin kankyo)

CMD=start DEMO=0 WAIT=1 MAIL_N=1 MAIL_TO=
for a in "$@"; do
  case $a in
    start | stop | reset | reload | status | mail) CMD=$a ;;
    --demo) DEMO=1 ;;
    --no-wait) WAIT=0 ;;
    [0-9]*) MAIL_N=$a ;;
    *) if [ "$CMD" = mail ]; then MAIL_TO=$a; else sed -n '7,15p' "$0" >&2; exit 2; fi ;;
  esac
done
if [ "$DEMO" = 1 ]; then RUN=${KPI_RUN_DIR:-$ROOT/run-demo}; else RUN=${KPI_RUN_DIR:-$ROOT/run}; fi
case $RUN in /*) ;; *) RUN=$PWD/$RUN ;; esac
RUN=${RUN%/}
# A run directory started with --demo stays a demo run.
[ -f "$RUN/demo" ] && DEMO=1
BIN=${KPI_BUILD_DIR:-$ROOT/build/release}
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac

# svc_pid S: the pid of service S when it runs (its pid file names a live process of this
# build's kpi-S binary, as start_services runs it).
svc_pid() {
  local pid
  [ -s "$RUN/$1.pid" ] || return 1
  pid=$(cat "$RUN/$1.pid")
  [[ $pid =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$BIN/services/$1/kpi-$1" || return 1
  echo "$pid"
}

stop_all() {
  local s pid
  for s in "${SERVICES[@]}"; do
    if pid=$(svc_pid "$s"); then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for s in "${SERVICES[@]}"; do
    if pid=$(svc_pid "$s"); then
      for _ in $(seq 1 100); do svc_pid "$s" >/dev/null || break; sleep 0.1; done
      # Only a service still running: once it exited, its pid may be another process's.
      if pid=$(svc_pid "$s"); then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$RUN/$s.pid"
  done
  if [ -d "$RUN/stack" ]; then bash scripts/stack.sh stop "$RUN/stack" >/dev/null 2>&1 || true; fi
}

do_reset() {
  if [ ! -d "$RUN" ]; then echo "nothing to remove: $RUN does not exist"; return 0; fi
  stop_all
  # The stack names what it removes (its PostgreSQL cluster may live in /tmp).
  if [ -d "$RUN/stack" ]; then bash scripts/stack.sh wipe "$RUN/stack"; fi
  rm -rf "$RUN"
  echo "removed $RUN (PostgreSQL data, Kafka logs, Maildir, services' logs)"
}

# run_env: the settings of the running stack and services (written by start).
load_run_env() {
  [ -f "$RUN/run.env" ] || { echo "no local run in $RUN (start it first)" >&2; exit 1; }
  set -a
  # shellcheck disable=SC1091
  . "$RUN/run.env"
  set +a
}

# reload_wait S LINE: waits up to 10 s for service S's log, after LINE, to tell how the reload
# went; prints it. Returns 1 when it failed or said nothing.
reload_wait() {
  local s=$1 from=$2 got
  for _ in $(seq 1 100); do
    got=$(tail -n +"$((from + 1))" "$RUN/logs/$s.log" |
      grep -oE '"(catalog_reloaded|catalog_mirrored|catalog_reload_failed)"' | tail -n1 || true)
    case $got in
      *failed*) echo "  kpi-$s: reload FAILED (kept the previous catalog): see $RUN/logs/$s.log"; return 1 ;;
      ?*) echo "  kpi-$s: catalog reloaded"; return 0 ;;
    esac
    sleep 0.1
  done
  echo "  kpi-$s: no answer to SIGHUP within 10 s: see $RUN/logs/$s.log"
  return 1
}

# do_reload: the catalog must pass kpi-admin check-catalog; then every running service gets
# SIGHUP (as `systemctl reload 'kpi-*'` does with the units' ExecReload, deploy/systemd/).
do_reload() {
  local s pid rc=0
  local -A lines=()
  load_run_env
  "$BIN/tools/kpi-admin" check-catalog "$KPI_CATALOG" >/dev/null ||
    { echo "catalog $KPI_CATALOG refused; nothing reloaded" >&2; exit 2; }
  for s in "${SERVICES[@]}"; do
    if pid=$(svc_pid "$s"); then
      lines[$s]=$(wc -l <"$RUN/logs/$s.log")
      kill -HUP "$pid"
    else
      echo "  kpi-$s: not running"; rc=1
    fi
  done
  for s in "${!lines[@]}"; do reload_wait "$s" "${lines[$s]}" || rc=1; done
  return "$rc"
}

do_status() {
  local s pid
  for s in "${SERVICES[@]}"; do
    if pid=$(svc_pid "$s"); then echo "kpi-$s: running (pid $pid)"; else echo "kpi-$s: not running"; fi
  done
  if [ -d "$RUN/stack" ]; then bash scripts/stack.sh status "$RUN/stack"; else echo "no stack in $RUN"; fi
}

build() {
  if [ "${KPI_RUN_LOCAL_NO_BUILD:-0}" = 1 ]; then
    [ -x "$BIN/tools/kpi-admin" ] || { echo "KPI_RUN_LOCAL_NO_BUILD=1 but $BIN is not built" >&2; exit 1; }
    return 0
  fi
  bash scripts/bootstrap.sh
  cmake -S . -B "$BIN" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BIN" -j"$(nproc)" >/dev/null
}

# setup_env: the stack's addresses, the sample tokens and the services' settings; writes them
# to RUN/run.env for stop/reload/mail.
setup_env() {
  set -a
  # shellcheck disable=SC1091
  . "$RUN/stack/stack.env"
  # shellcheck disable=SC1091
  . config/sample-tokens.env
  set +a
  local p=808
  [ "$DEMO" = 1 ] && p=809
  export KPI_CATALOG=${KPI_CATALOG:-$ROOT/config/catalog.json}
  # The shipped catalog's departments are samples whose tokens are in config/sample-tokens.env:
  # the services refuse them unless told this is a local run (docs/security.md).
  export KPI_ALLOW_SAMPLE_TOKENS=${KPI_ALLOW_SAMPLE_TOKENS:-1}
  export DATABASE_URL=${DATABASE_URL:-postgresql://$PGUSER@$PGHOST:$PGPORT/$PGDATABASE}
  export KPI_INGEST_LISTEN=${KPI_INGEST_LISTEN:-127.0.0.1:${p}0}
  export KPI_EVALUATOR_LISTEN=${KPI_EVALUATOR_LISTEN:-127.0.0.1:${p}1}
  export KPI_NOTIFIER_LISTEN=${KPI_NOTIFIER_LISTEN:-127.0.0.1:${p}2}
  export KPI_REPORT_LISTEN=${KPI_REPORT_LISTEN:-127.0.0.1:${p}3}
  # The owners' mails link to the measure's page on the report.
  export KPI_REPORT_BASE_URL=${KPI_REPORT_BASE_URL:-http://$KPI_REPORT_LISTEN}
  export KPI_NOTIFY_GROUP_WAIT_MS=${KPI_NOTIFY_GROUP_WAIT_MS:-5000}
  if [ "$DEMO" = 1 ]; then export KPI_EVAL_DATE=${KPI_DEMO_EVAL_DATE:-2024-12-31}; fi
  local v
  for v in KPI_CATALOG KPI_ALLOW_SAMPLE_TOKENS KPI_INGEST_LISTEN KPI_EVALUATOR_LISTEN \
    KPI_NOTIFIER_LISTEN KPI_REPORT_LISTEN KPI_MAILDIR BIN KPI_EVAL_DATE; do
    if [ -n "${!v:-}" ]; then echo "$v=${!v}"; fi
  done >"$RUN/run.env"
}

prepare_db() {
  # Idempotent: existing topics and applied migrations are left as they are.
  "$BIN/tools/kpi-admin" topics
  "$BIN/tools/kpi-admin" migrate
  # The report reads with the read-only group's rights, as in a deployment: a login role
  # `reader` in kpi_reader (the local cluster trusts local connections).
  psql -q "$DATABASE_URL" -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reader')
    THEN CREATE ROLE reader LOGIN IN ROLE kpi_reader; END IF; END \$\$"
}

# start_services S...: starts the services named, detached, logs appended in RUN/logs.
start_services() {
  local s report_db=postgresql://reader@$PGHOST:$PGPORT/$PGDATABASE
  for s in "$@"; do
    if [ "$s" = report ]; then
      DATABASE_URL=$report_db setsid "$BIN/services/$s/kpi-$s" >>"$RUN/logs/$s.log" 2>&1 </dev/null &
    else
      setsid "$BIN/services/$s/kpi-$s" >>"$RUN/logs/$s.log" 2>&1 </dev/null &
    fi
    echo $! >"$RUN/$s.pid"
  done
}

# wait_ready S...: each service answers /readyz (up to 60 s); names those that do not.
wait_ready() {
  local s addr ok
  for s in "$@"; do
    addr=KPI_${s^^}_LISTEN ok=0
    for _ in $(seq 1 300); do
      if curl -sf -o /dev/null "http://${!addr}/readyz"; then ok=1; break; fi
      svc_pid "$s" >/dev/null || break
      sleep 0.2
    done
    if [ "$ok" = 1 ]; then
      echo "  kpi-$s    ready on ${!addr}, log $RUN/logs/$s.log"
    else
      echo "  kpi-$s    NOT ready: see $RUN/logs/$s.log"
      return 1
    fi
  done
}

# demo_replay: the demo's readings, once per run directory, each department with its own
# sample token through the batch endpoint (their event_ids make a second post harmless).
demo_replay() {
  local d tok out
  [ -f "$RUN/demo-replayed" ] && { echo "demo readings already replayed into $RUN"; return 0; }
  for d in "${DEPARTMENTS[@]}"; do
    tok=KPI_TOKEN_${d^^}
    out=$(curl -s -H "Authorization: Bearer ${!tok}" -H 'Content-Type: application/x-ndjson' \
      --data-binary @"config/demo/$d.ndjson" "http://$KPI_INGEST_LISTEN/v1/measurements:batch")
    echo "  demo: config/demo/$d.ndjson -> $(grep -oE '"accepted":[0-9]+,"rejected":[0-9]+' <<<"$out" || echo "$out")"
  done
  : >"$RUN/demo-replayed"
}

print_usage_hints() {
  echo "  entry      http://$KPI_INGEST_LISTEN/entry   (departments' entry page; tokens in config/sample-tokens.env)"
  echo "  ingest     http://$KPI_INGEST_LISTEN/v1/measurements"
  echo "  attainment http://$KPI_EVALUATOR_LISTEN/v1/attainment"
  if [ "$DEMO" = 1 ]; then
    echo "  report     http://$KPI_REPORT_LISTEN/?as_of=$KPI_EVAL_DATE   (the demo's evaluation date)"
    echo "  evaluated at $KPI_EVAL_DATE (KPI_EVAL_DATE); the mails arrive after the 5 s group wait:"
    echo "    ./scripts/run-local.sh mail 5 --demo"
  else
    echo "  report     http://$KPI_REPORT_LISTEN/   (KPI table; /report.csv for Excel)"
  fi
  echo "  kafka      $KPI_KAFKA_BOOTSTRAP    postgres $DATABASE_URL"
  local demo_flag=
  [ "$DEMO" = 1 ] && demo_flag=" --demo"
  echo "  mail       $KPI_SMTP_URL -> Maildir $KPI_MAILDIR (the latest, decoded: ./scripts/run-local.sh mail$demo_flag)"
  echo "  data       kept in $RUN across stop/start; ./scripts/run-local.sh reset removes it"
}

do_start() {
  mkdir -p "$RUN/logs"
  [ "$DEMO" = 1 ] && : >"$RUN/demo"
  build
  stop_all
  STACK_DURABLE=1 bash scripts/stack.sh start "$RUN/stack"
  setup_env
  prepare_db
  echo
  echo "KPI pipeline (state in $RUN):"
  # The demo's readings go in before the evaluator's first sweep, so its first mails are
  # about the readings rather than about a plan with nothing reported yet.
  start_services ingest
  if ! wait_ready ingest; then stop_all; exit 1; fi
  [ "$DEMO" = 1 ] && demo_replay
  start_services evaluator notifier report
  if ! wait_ready evaluator notifier report; then stop_all; exit 1; fi
  print_usage_hints
  if [ "$DEMO" = 0 ]; then
    echo
    echo "Report a measurement (sample token of 企画課):"
    echo "  curl -s -H 'Authorization: Bearer $KPI_TOKEN_KIKAKU' -H 'Content-Type: application/json' \\"
    echo "    -d '{\"measure_id\":\"g2-uiturn-4-supporters\",\"observed_at\":\"2024-03-31\",\"value\":31,\"unit\":\"person\"}' \\"
    echo "    http://$KPI_INGEST_LISTEN/v1/measurements"
  fi
}

case $CMD in
  stop) stop_all; echo "stopped (data kept in $RUN; ./scripts/run-local.sh reset removes it)"; exit 0 ;;
  reset) do_reset; exit 0 ;;
  reload) do_reload; exit ;;
  status) do_status; exit ;;
  mail) load_run_env; exec bash scripts/read-mail.sh "$KPI_MAILDIR" "$MAIL_N" "$MAIL_TO" ;;
esac

do_start
if [ "$WAIT" = 0 ]; then exit 0; fi
trap 'echo; echo stopping; stop_all; echo "stopped (data kept in $RUN)"; exit 0' INT TERM
echo "Ctrl-C stops everything (the data stays)."
while true; do sleep 3600; done
