#!/usr/bin/env bash
# bench/bench_evaluator.sh: kpi-evaluator throughput, topic -> committed PostgreSQL rows, against
# the native baseline measured in the same run on the same server:
#   (a) N measurement records are pre-produced to a fresh 6-partition topic (kcat -P), then the
#       evaluator is started and timed from its start until every record's offset is committed
#       in consumer_offsets (each batch: measurements, totals, offsets, attainment, history and
#       outbox in one transaction, exactly once);
#   (b) psql `\copy` of the same rows into the same table (measurements, same indexes) of a
#       second database with the same schema.
# Prints records/s for both, the ratio (goal >= 0.5), the evaluator's peak RSS (VmHWM, goal <= 32 MiB)
# and the CPU seconds of the evaluator, PostgreSQL and the broker during the timed run, then one
# `SUMMARY` line per goal (ratio, peak RSS) with "ok" or "BELOW GOAL"/"ABOVE GOAL".
# Not a test: numbers depend on the machine; the broker, PostgreSQL and the evaluator share it.
#
#   bench/bench_evaluator.sh         build dir /tmp/evb-rel (built if missing), own stack
# Env:
#   BUILD_DIR=/tmp/evb-rel   a Release build (cmake -DCMAKE_BUILD_TYPE=Release)
#   BENCH_STACK_ENV=FILE     use a running stack (its stack.env) instead of starting one
#   N=200000                 records
#   EVALUATOR_ENV="K=V ..."  extra environment for the service (KPI_BATCH_MAX, KPI_KAFKA_PROP_* …)
#   KEEP=1                   keep the work directory (records, evaluator.log)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The shipped catalog has sample departments (published tokens): the services refuse it
# unless told this is not a deployment (docs/security.md).
export KPI_ALLOW_SAMPLE_TOKENS=1
BUILD_DIR=${BUILD_DIR:-/tmp/evb-rel}
N=${N:-200000}
EVALUATOR_ENV=${EVALUATOR_ENV:-}

log() { printf 'bench: %s\n' "$*" >&2; }
now() { date +%s.%N; }

for tool in kcat psql curl; do
  command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }
done
BIN=$BUILD_DIR/services/evaluator/kpi-evaluator
if [ ! -x "$BIN" ] || [ ! -x "$BUILD_DIR/tools/kpi-admin" ]; then
  log "building Release into $BUILD_DIR"
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD_DIR" -j2 --target kpi-evaluator kpi-admin >/dev/null
fi

WORK=$(mktemp -d /tmp/kpi-evbench.XXXXXX)
STACK_DIR=
EV_PID=
cleanup() {
  if [ -n "$EV_PID" ] && kill -0 "$EV_PID" 2>/dev/null; then
    kill -TERM "$EV_PID" 2>/dev/null || true
    wait "$EV_PID" 2>/dev/null || true
  fi
  [ -z "${TAG:-}" ] || [ -z "${KPI_KAFKA_BOOTSTRAP:-}" ] ||
    bench_delete_topics "$KPI_KAFKA_BOOTSTRAP" "$TAG.measurements" "$TAG.alerts" "$TAG.dlq" "$TAG.alerts.dlq"
  if [ -n "$STACK_DIR" ]; then "$ROOT/scripts/stack.sh" stop "$STACK_DIR" >/dev/null 2>&1 || true; fi
  if [ -n "${KEEP:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# shellcheck source=bench/bench_lib.sh
. "$ROOT/bench/bench_lib.sh"
bench_stack_up
bench_stack_env_load

TAG=evbench_$$_$(date +%s)
DB_EV=${TAG}_ev
DB_COPY=${TAG}_copy
TOPIC=$TAG.measurements
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
psql -qX -d postgres -c "CREATE DATABASE $DB_EV"

log "generating $N records"
/usr/bin/python3 "$ROOT/bench/evaluator_gen.py" "$N" "$WORK/records.tsv" "$WORK/records.csv"

# exec: $! must be the evaluator itself, not a subshell around it.
ev_env() {
  exec env DATABASE_URL="dbname=$DB_EV" KPI_TOPIC_MEASUREMENTS="$TOPIC" \
    KPI_TOPIC_ALERTS="$TAG.alerts" KPI_TOPIC_MEASUREMENTS_DLQ="$TAG.dlq" \
    KPI_TOPIC_ALERTS_DLQ="$TAG.alerts.dlq" KPI_EVALUATOR_GROUP="$TAG" \
    KPI_EVALUATOR_LISTEN="127.0.0.1:$PORT" KPI_EVAL_DATE=2025-03-31 \
    KPI_CATALOG="$ROOT/config/catalog.json" $EVALUATOR_ENV "$@"
}
# CPU seconds (user + system) used so far by: the evaluator ($EV_PID), the stack's PostgreSQL
# (postmaster, its live children and the children it reaped) and the broker; "-" when the
# stack's pid files are not found (a stack not started by scripts/stack.sh).
cpu_snapshot() {
  local dir=${KPI_STACK_DIR:-} pm pgt=- kt=- p
  if [ -n "$dir" ] && [ -f "$dir/pg/postmaster.pid" ]; then
    pm=$(head -n1 "$dir/pg/postmaster.pid")
    pgt=$(for p in $pm $(pgrep -P "$pm"); do cat "/proc/$p/stat" 2>/dev/null; echo; done |
      awk -v hz="$(getconf CLK_TCK)" 'NF > 16 { sub(/^.*\) /, ""); t += $12 + $13 + $14 + $15 }
        END { printf "%.2f", t / hz }')
  fi
  if [ -n "$dir" ] && [ -f "$dir/kafka.pid" ]; then
    kt=$(sed 's/^.*) //' "/proc/$(head -n1 "$dir/kafka.pid")/stat" 2>/dev/null |
      awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($12 + $13) / hz }')
  fi
  printf '%s %s\n' "${pgt:--}" "${kt:--}"
}
ev_cpu() { sed 's/^.*) //' "/proc/$EV_PID/stat" | awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($12 + $13) / hz }'; }
wait_ready() { bench_wait_ready "http://127.0.0.1:$PORT/readyz" "$WORK/evaluator.log" || exit 1; }

# A first run creates the topics and the schema, joins the group and leaves it cleanly, so
# the timed run starts from the same place as any restart.
log "preparing topics and schema"
ev_env "$BIN" >"$WORK/evaluator.log" 2>&1 &
EV_PID=$!
wait_ready
stop_evaluator() {
  local rc=0
  kill -TERM "$EV_PID"
  wait "$EV_PID" || rc=$?
  EV_PID=
  if [ "$rc" -ne 0 ]; then log "the evaluator exited with $rc"; tail -20 "$WORK/evaluator.log" >&2; exit 1; fi
}
stop_evaluator

log "producing $N records to $TOPIC"
kcat -b "$KPI_KAFKA_BOOTSTRAP" -P -t "$TOPIC" -K $'\t' -X enable.idempotence=true \
  -X acks=all -X linger.ms=5 -l "$WORK/records.tsv"

# The baseline runs twice, before and after the evaluator's run, each into a fresh database
# with the same schema, and the faster one counts: the machine is shared, and the ratio should
# not flatter the evaluator by catching COPY at a bad moment.
copy_once() {
  local db=$1 c0 c1 rows
  psql -qX -d postgres -c "CREATE DATABASE $db" >/dev/null
  # The schema as the services get it (kpi-admin applies the embedded migrations).
  DATABASE_URL="dbname=$db" "$BUILD_DIR/tools/kpi-admin" migrate >/dev/null
  # psql's backend writes its pid, and its CPU (utime + stime, ticks) is read before and after
  # the \copy by psql's \! (a shell each, a few ms, counted in COPY's time).
  cat >"$WORK/copy.sql" <<SQL
\\o $WORK/copy.pid
SELECT pg_backend_pid();
\\o
\\! sed 's/^.*) //' /proc/\$(cat $WORK/copy.pid)/stat | awk '{ print \$12 + \$13 }' >$WORK/copy.cpu
\\copy measurements (event_id, measure_id, department, observed_at, observed_day, fiscal_year, value, unit, component, note, received_at, kafka_partition, kafka_offset) FROM '$WORK/records.csv' WITH (FORMAT csv)
\\! sed 's/^.*) //' /proc/\$(cat $WORK/copy.pid)/stat | awk '{ print \$12 + \$13 }' >>$WORK/copy.cpu
SQL
  c0=$(now)
  psql -qXtA -v ON_ERROR_STOP=1 -d "$db" -f "$WORK/copy.sql" >/dev/null
  c1=$(now)
  rows=$(psql -qXtA -d "$db" -c "SELECT count(*) FROM measurements")
  [ "$rows" -eq "$N" ] || { log "copy: expected $N rows, found $rows"; exit 1; }
  awk -v a="$c0" -v b="$c1" -v hz="$(getconf CLK_TCK)" 'NR == 1 { u = $1 } NR == 2 { v = $1 }
    END { printf "%.3f %.2f\n", b - a, (v - u) / hz }' "$WORK/copy.cpu"
}
log "timing psql \\copy into the same table (first run)"
read -r COPY1 COPYCPU1 < <(copy_once "$DB_COPY")

# The end of the run is watched through one psql session kept open (a coprocess), not a new
# psql every 50 ms: each new session cost the server a backend start (fork, authentication,
# catalog caches), CPU counted in PostgreSQL's figure and taken from the two cores the run
# itself needs (bench/README.md).
coproc POLL { psql -qXtA -d "$DB_EV" 2>&1; }
poll() {
  printf '%s\n' "$1" >&"${POLL[1]}"
  read -r -t 10 REPLY <&"${POLL[0]}" || { log "the poller did not answer"; exit 1; }
  printf '%s\n' "$REPLY"
}
POLL_PID=$(poll "SELECT pg_backend_pid();")
# CPU seconds of the evaluator's own backends (its sessions of $DB_EV, all started during the
# timed run, so their whole CPU time counts).
ev_backends_cpu() {
  local p pids
  pids=$(poll "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE datname = '$DB_EV' AND pid <> $POLL_PID;")
  for p in $pids; do sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null; done |
    awk -v hz="$(getconf CLK_TCK)" '{ t += $12 + $13 } END { printf "%.2f", t / hz }'
}

log "timing the evaluator"
read -r PG0 K0 < <(cpu_snapshot)
T0=$(now)
ev_env "$BIN" >>"$WORK/evaluator.log" 2>&1 &
EV_PID=$!
while :; do
  DONE=$(poll "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer_group = '$TAG';")
  [ "$DONE" -ge "$N" ] && break
  kill -0 "$EV_PID" 2>/dev/null || { log "the evaluator died"; tail -20 "$WORK/evaluator.log" >&2; exit 1; }
  sleep 0.01
done
T1=$(now)
HWM=$(awk '/VmHWM/ {print $2, $3}' "/proc/$EV_PID/status")
EVCPU=$(ev_cpu)
read -r PG1 K1 < <(cpu_snapshot)
EVPGCPU=$(ev_backends_cpu)
ROWS=$(poll "SELECT count(*) FROM measurements;")
exec {POLL[1]}>&-
stop_evaluator
[ "$ROWS" -eq "$N" ] || { log "expected $N rows, found $ROWS"; exit 1; }

log "timing psql \\copy into the same table (second run)"
read -r COPY2 COPYCPU2 < <(copy_once "${DB_COPY}2")

awk -v n="$N" -v t0="$T0" -v t1="$T1" -v c1="$COPY1" -v c2="$COPY2" -v hwm="$HWM" \
  -v evcpu="$EVCPU" -v pg0="$PG0" -v pg1="$PG1" -v k0="$K0" -v k1="$K1" -v evpg="$EVPGCPU" \
  -v cc1="$COPYCPU1" -v cc2="$COPYCPU2" 'BEGIN {
  ev = n / (t1 - t0); c = c1 < c2 ? c1 : c2; cp = n / c;
  printf "records:            %d\n", n;
  printf "evaluator:          %.2f s  %.0f records/s (start to last commit, exactly once)\n", t1 - t0, ev;
  printf "psql \\copy:         %.2f s  %.0f records/s (best of %.2f s and %.2f s)\n", c, cp, c1, c2;
  printf "ratio:              %.2f x COPY (goal >= 0.5)\n", ev / cp;
  printf "evaluator peak RSS: %s\n", hwm;
  # CPU of the timed run: the evaluator, PostgreSQL and the broker of the stack (whole processes:
  # another load on the same stack counts too).
  if (pg0 == "-" || k0 == "-") printf "CPU (timed run):    evaluator %.2f s; PostgreSQL and broker unknown\n", evcpu;
  else printf "CPU (timed run):    evaluator %.2f s, PostgreSQL %.2f s, broker %.2f s (%.1f / %.1f us per record)\n", evcpu, pg1 - pg0, k1 - k0, evcpu * 1e6 / n, (pg1 - pg0) * 1e6 / n;
  # The backends alone: the sessions of the evaluator against the one of psql during each \copy.
  printf "backend CPU:        evaluator sessions %.2f s (%.1f us per record); \\copy %.2f s / %.2f s (%.1f / %.1f us per record)\n", evpg, evpg * 1e6 / n, cc1, cc2, cc1 * 1e6 / n, cc2 * 1e6 / n;
  # One line per goal, for the serial re-run at merge (bench/README.md).
  r = ev / cp; kb = hwm + 0;
  printf "SUMMARY evaluator ratio %.2f x psql \\copy (%.0f / %.0f records/s, N=%d), goal >= 0.5: %s\n", r, ev, cp, n, (r >= 0.5 ? "ok" : "BELOW GOAL");
  printf "SUMMARY evaluator peak RSS %d kB (%.1f MiB), goal <= 32 MiB: %s\n", kb, kb / 1024, (kb <= 32768 ? "ok" : "ABOVE GOAL");
}'
