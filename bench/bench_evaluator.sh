#!/usr/bin/env bash
# bench/bench_evaluator.sh: kpi-evaluator throughput, topic -> committed PostgreSQL rows, against
# the native baseline measured in the same run on the same server:
#   (a) N measurement records are pre-produced to a fresh 6-partition topic (kcat -P), then the
#       evaluator is started and timed from its start until every record's offset is committed
#       in consumer_offsets (each batch: measurements, totals, offsets, attainment, history and
#       outbox in one transaction, exactly once);
#   (b) psql `\copy` of the same rows into the same table (measurements, same indexes) of a
#       second database with the same schema.
# (b) then (a), ROUNDS times, each into fresh databases (the evaluator as a new group): the
# best run of each side counts, so neither is caught alone at a bad moment of a shared machine.
# Prints records/s for both, the ratio (goal >= 0.5), the evaluator's peak RSS (VmHWM, goal <= 32 MiB,
# the highest of its runs), the CPU seconds of the evaluator, PostgreSQL and the broker during
# its best run and the CPU of the backends (the evaluator's sessions, psql's), one line per
# round, then one `SUMMARY` line per goal (ratio, peak RSS) with "ok" or "BELOW GOAL"/"ABOVE GOAL".
# Not a test: numbers depend on the machine; the broker, PostgreSQL and the evaluator share it.
#
#   bench/bench_evaluator.sh         build dir /tmp/evb-rel (built if missing), own stack
# Env:
#   BUILD_DIR=/tmp/evb-rel   a Release build (cmake -DCMAKE_BUILD_TYPE=Release)
#   BENCH_STACK_ENV=FILE     use a running stack (its stack.env) instead of starting one
#   N=200000                 records
#   ROUNDS=2                 rounds of (b) and (a), the order alternating
#   EV_TIMEOUT=600           seconds an evaluator run may take before the bench gives up
#   EVALUATOR_ENV="K=V ..."  extra environment for the service (KPI_BATCH_MAX, KPI_KAFKA_PROP_* …)
#   KEEP=1                   keep the work directory (records, evaluator.log)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The shipped catalog has sample departments (published tokens): the services refuse it
# unless told this is not a deployment (docs/security.md).
export KPI_ALLOW_SAMPLE_TOKENS=1
BUILD_DIR=${BUILD_DIR:-/tmp/evb-rel}
N=${N:-200000}
ROUNDS=${ROUNDS:-2}
EV_TIMEOUT=${EV_TIMEOUT:-600}
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
  # A shared stack keeps no databases of ours (about 45 MB each) unless KEEP is set.
  local db
  if [ -n "${BENCH_STACK_ENV:-}" ] && [ -z "${KEEP:-}" ] && [ -n "${TAG:-}" ]; then
    for db in $(psql -qXtA -d postgres -c "SELECT datname FROM pg_database WHERE datname LIKE '${TAG}%'" 2>/dev/null); do
      psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
    done
  fi
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
EV_DB=$DB_EV      # the run's database and group (ev_env)
EV_GROUP=$TAG
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
psql -qX -d postgres -c "CREATE DATABASE $DB_EV"

log "generating $N records"
/usr/bin/python3 "$ROOT/bench/evaluator_gen.py" "$N" "$WORK/records.tsv" "$WORK/records.csv"

# exec: $! must be the evaluator itself, not a subshell around it.
ev_env() {
  exec env DATABASE_URL="dbname=$EV_DB" KPI_TOPIC_MEASUREMENTS="$TOPIC" \
    KPI_TOPIC_ALERTS="$TAG.alerts" KPI_TOPIC_MEASUREMENTS_DLQ="$TAG.dlq" \
    KPI_TOPIC_ALERTS_DLQ="$TAG.alerts.dlq" KPI_EVALUATOR_GROUP="$EV_GROUP" \
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
# CPU seconds (user + system) of the processes PID... (bench_cpu_ticks).
cpu_seconds() { awk -v t="$(bench_cpu_ticks "$@")" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'; }
ev_cpu() { cpu_seconds "$EV_PID"; }
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

# The baseline: psql \copy into a fresh database with the same schema, timed around psql
# (its start and connection included, as the evaluator's are); prints seconds and the CPU
# seconds of its backend.
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
# The end of a run is watched through one psql session kept open (a coprocess), not a new psql
# every 50 ms: each new session cost the server a backend start (fork, authentication, catalog
# caches), CPU counted in PostgreSQL's figure and taken from the two cores the run itself needs
# (bench/README.md).
poll() {
  printf '%s\n' "$1" >&"${POLL[1]}"
  read -r -t 10 REPLY <&"${POLL[0]}" || { log "the poller did not answer"; exit 1; }
  printf '%s\n' "$REPLY"
}
# CPU seconds of the evaluator's own backends (its sessions of $EV_DB, all started during the
# timed run, so their whole CPU time counts).
ev_backends_cpu() {
  local pids
  pids=$(poll "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE datname = '$EV_DB' AND pid <> $POLL_BACKEND;")
  # shellcheck disable=SC2086  # a list of pids
  cpu_seconds $pids
}
# One timed run of the evaluator into $EV_DB as group $EV_GROUP; prints seconds, peak RSS (kB),
# its CPU, PostgreSQL's and the broker's during the run, and its backends' CPU.
ev_timed() {
  local t0 t1 hwm evcpu pg0 k0 pg1 k1 evpg rows done deadline
  coproc POLL { psql -qXtA -d "$EV_DB" 2>&1; }
  POLL_BACKEND=$(poll "SELECT pg_backend_pid();") # POLL_PID is the coprocess's own pid
  read -r pg0 k0 < <(cpu_snapshot)
  t0=$(now)
  ev_env "$BIN" >>"$WORK/evaluator.log" 2>&1 &
  EV_PID=$!
  deadline=$(( $(date +%s) + EV_TIMEOUT ))
  while :; do
    done=$(poll "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer_group = '$EV_GROUP';")
    [ "$done" -ge "$N" ] && break
    kill -0 "$EV_PID" 2>/dev/null || { log "the evaluator died"; tail -20 "$WORK/evaluator.log" >&2; exit 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { log "the evaluator stored $done of $N records in ${EV_TIMEOUT}s"; exit 1; }
    sleep 0.01
  done
  t1=$(now)
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$EV_PID/status")
  evcpu=$(ev_cpu)
  read -r pg1 k1 < <(cpu_snapshot)
  evpg=$(ev_backends_cpu)
  rows=$(poll "SELECT count(*) FROM measurements;")
  exec {POLL[1]}>&-
  wait "$POLL_PID" 2>/dev/null || true
  stop_evaluator
  [ "$rows" -eq "$N" ] || { log "expected $N rows, found $rows"; exit 1; }
  awk -v a="$t0" -v b="$t1" -v pg0="$pg0" -v pg1="$pg1" -v k0="$k0" -v k1="$k1" \
    'BEGIN { printf "%.3f %s %s %s %s %s\n", b - a, "'"$hwm"'", "'"$evcpu"'",
      (pg0 == "-" ? "-" : sprintf("%.2f", pg1 - pg0)), (k0 == "-" ? "-" : sprintf("%.2f", k1 - k0)), "'"$evpg"'" }'
}

: >"$WORK/rounds"
# The order alternates (odd rounds \copy first, even rounds the evaluator first), so that the
# WAL and checkpoint work one side leaves behind does not always fall on the other.
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then
    log "round $r: timing psql \\copy into the same table"
    read -r CT CC < <(copy_once "${DB_COPY}$r")
  fi
  if [ "$r" -gt 1 ]; then
    # A fresh database with the schema (as the copy's) and a new group: the same start as the
    # first round's, whose database the preparing run migrated.
    EV_DB=${DB_EV}$r
    EV_GROUP=${TAG}_$r
    psql -qX -d postgres -c "CREATE DATABASE $EV_DB" >/dev/null
    DATABASE_URL="dbname=$EV_DB" "$BUILD_DIR/tools/kpi-admin" migrate >/dev/null
  fi
  log "round $r: timing the evaluator"
  ev_timed >"$WORK/run" # not in a subshell: EV_PID stays known to cleanup
  read -r ET HWM EVCPU PGD KD EVPG <"$WORK/run"
  if [ $((r % 2)) -eq 0 ]; then
    log "round $r: timing psql \\copy into the same table"
    read -r CT CC < <(copy_once "${DB_COPY}$r")
  fi
  echo "$r $CT $CC $ET $HWM $EVCPU $PGD $KD $EVPG" >>"$WORK/rounds"
done

awk -v n="$N" '
{ r[NR] = $0; c = $2; e = $4;
  if (NR == 1 || c < bc) { bc = c }
  if (NR == 1 || e < be) { be = e; cpu = $6; pg = $7; k = $8; evpg = $9 }
  if ($5 + 0 > hwm) hwm = $5 + 0;
  if (NR == 1 || $3 < bcc) bcc = $3 }
END {
  ev = n / be; cp = n / bc;
  printf "records:            %d\n", n;
  for (i = 1; i <= NR; i++) {
    split(r[i], f, " ");
    printf "round %d:            \\copy %.2f s (backend %.2f s, %.1f us per record), evaluator %.2f s (ratio %.2f, peak RSS %d kB, its backends %.2f s, %.1f us per record)\n",
      f[1], f[2], f[3], f[3] * 1e6 / n, f[4], f[2] / f[4], f[5], f[9], f[9] * 1e6 / n;
  }
  printf "evaluator:          %.2f s  %.0f records/s (start to last commit, exactly once; best of %d)\n", be, ev, NR;
  printf "psql \\copy:         %.2f s  %.0f records/s (best of %d)\n", bc, cp, NR;
  printf "ratio:              %.2f x COPY (goal >= 0.5)\n", ev / cp;
  printf "evaluator peak RSS: %d kB (highest of %d runs)\n", hwm, NR;
  # CPU of the best run: the evaluator, PostgreSQL and the broker of the stack (whole processes:
  # another load on the same stack counts too).
  if (pg == "-" || k == "-") printf "CPU (timed run):    evaluator %.2f s; PostgreSQL and broker unknown\n", cpu;
  else printf "CPU (timed run):    evaluator %.2f s, PostgreSQL %.2f s, broker %.2f s (%.1f / %.1f us per record)\n", cpu, pg, k, cpu * 1e6 / n, pg * 1e6 / n;
  # The backends alone: the sessions of the evaluator (its best run) against the one of psql
  # (its least CPU of the rounds).
  printf "backend CPU:        evaluator sessions %.2f s (%.1f us per record); \\copy %.2f s (%.1f us per record)\n", evpg, evpg * 1e6 / n, bcc, bcc * 1e6 / n;
  # One line per goal, for the serial re-run at merge (bench/README.md).
  rt = ev / cp;
  printf "SUMMARY evaluator ratio %.2f x psql \\copy (%.0f / %.0f records/s, N=%d), goal >= 0.5: %s\n", rt, ev, cp, n, (rt >= 0.5 ? "ok" : "BELOW GOAL");
  printf "SUMMARY evaluator peak RSS %d kB (%.1f MiB), goal <= 32 MiB: %s\n", hwm, hwm / 1024, (hwm <= 32768 ? "ok" : "ABOVE GOAL");
}' "$WORK/rounds"
