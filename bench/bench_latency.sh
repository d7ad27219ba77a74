#!/usr/bin/env bash
# bench/bench_latency.sh: end-to-end latency, the 202 of kpi-ingest -> the `attainment` row of
# kpi-evaluator that reflects the event, against Kafka alone on the same broker in the same run:
#   (a) Kafka only: a librdkafka producer with the ingest's settings (idempotent, acks=all,
#       linger.ms=1, murmur2) at RATE records/s, open loop, and a consumer with the
#       evaluator's settings (fetch.wait.max.ms=50) on a fresh 6-partition topic: the time from
#       the produce call to the consumer receiving the record (p50, p99). Both settings are
#       the ones the two services logged at start (bench_kafka_config), INGEST_ENV's and
#       EVALUATOR_ENV's KPI_KAFKA_PROP_* included;
#   (b) the pipeline: single POSTs at RATE/s, open loop (a 1 ms timer writes every request due,
#       spread over CONNS keep-alive connections and over the catalog's 9 measures), each 202
#       timed; a poller reads `attainment` (measure_id, events, updated_at) every POLL_US and
#       notes when each measure's `events` grew: an event is reflected when its measure's count
#       reaches it (bench/latency_report.py says how events are matched). p50/p99 of
#       202 -> reflected, split at the start of the evaluator's transaction.
# For each round and each rate of RATES, (a) then (b); then the verdict of issue 12's goal: p99(b) <=
# p99(a) + 100 ms. Also the evaluator's batches (records per batch, transaction time from its
# /metrics) and the peak RSS of both services. Not a test: numbers depend on the machine.
#
#   bench/bench_latency.sh           build dir /tmp/latb-rel (built if missing), own stack
# Env:
#   BUILD_DIR=/tmp/latb-rel  a Release build (cmake -DCMAKE_BUILD_TYPE=Release)
#   BENCH_STACK_ENV=FILE     use a running stack (its stack.env) instead of starting one
#   RATES="200 2000"         events/s
#   DURATION=15              seconds of load per rate, per side and per round
#   ROUNDS=2                 rounds of (a)+(b) for every rate, interleaved: the spread
#   WARMUP=5                 seconds of untimed pipeline load at the first rate first
#   CONNS=32                 HTTP connections (ingest answers in a few ms: at 2,000/s about
#                            ten are busy at once; pipelining is counted when all are busy)
#   POLL_US=1000             the attainment poller's period (its resolution)
#   OBSERVED_AT=today (UTC)  observed_at of the events; a past month (e.g. 2025-03-01) makes the
#                            evaluator take its months from measure_totals only
#   EVALUATOR_ENV="K=V ..."  extra environment for the evaluator (KPI_BATCH_MAX, KPI_KAFKA_PROP_*)
#   INGEST_ENV="K=V ..."     extra environment for the ingest
#   KEEP=1                   keep the work directory (raw timings, logs)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The shipped catalog has sample departments (published tokens): the services refuse it
# unless told this is not a deployment (docs/security.md).
export KPI_ALLOW_SAMPLE_TOKENS=1
BUILD_DIR=${BUILD_DIR:-/tmp/latb-rel}
RATES=${RATES:-200 2000}
DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-2}
WARMUP=${WARMUP:-5}
CONNS=${CONNS:-32}
POLL_US=${POLL_US:-1000}
EVALUATOR_ENV=${EVALUATOR_ENV:-}
INGEST_ENV=${INGEST_ENV:-}
OBSERVED_AT=${OBSERVED_AT:-$(date -u +%F)}

log() { printf 'bench: %s\n' "$*" >&2; }

for tool in psql curl cc pkg-config; do
  command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }
done
if [ ! -x "$BUILD_DIR/services/ingest/kpi-ingest" ] || [ ! -x "$BUILD_DIR/services/evaluator/kpi-evaluator" ]; then
  log "building Release into $BUILD_DIR"
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD_DIR" -j2 --target kpi-ingest kpi-evaluator >/dev/null
fi

WORK=$(mktemp -d /tmp/kpi-latbench.XXXXXX)
STACK_DIR=
EV_PID=
IN_PID=
POLL_PID=
stop_pid() {
  if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}
cleanup() {
  stop_pid "$POLL_PID"
  stop_pid "$IN_PID"
  stop_pid "$EV_PID"
  if [ -n "$STACK_DIR" ]; then "$ROOT/scripts/stack.sh" stop "$STACK_DIR" >/dev/null 2>&1 || true; fi
  if [ -n "${KEEP:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

LOAD=$WORK/latency_load
# shellcheck disable=SC2046  # pkg-config prints several words
cc -std=c17 -O2 -Wall -Wextra -D_DEFAULT_SOURCE -o "$LOAD" "$ROOT/bench/latency_load.c" \
  $(pkg-config --cflags --libs libpq libuv rdkafka) -lhttp_parser -lpthread

# shellcheck source=bench/bench_lib.sh
. "$ROOT/bench/bench_lib.sh"
bench_stack_up
bench_stack_env_load

TAG=latbench_$$_$(date +%s)
DB=$TAG
TOPIC=$TAG.measurements
EV_PORT=$(bench_free_port)
IN_PORT=$(bench_free_port)
psql -qX -d postgres -c "CREATE DATABASE $DB"

# exec: $! must be the service itself, not a subshell around it.
# shellcheck disable=SC2086  # EVALUATOR_ENV / INGEST_ENV are lists of K=V words
(cd "$ROOT" && exec env DATABASE_URL="dbname=$DB" KPI_TOPIC_MEASUREMENTS="$TOPIC" \
  KPI_TOPIC_ALERTS="$TAG.alerts" KPI_TOPIC_MEASUREMENTS_DLQ="$TAG.dlq" \
  KPI_TOPIC_ALERTS_DLQ="$TAG.alerts.dlq" KPI_EVALUATOR_GROUP="$TAG" \
  KPI_EVALUATOR_LISTEN="127.0.0.1:$EV_PORT" KPI_LOG_LEVEL=info $EVALUATOR_ENV \
  "$BUILD_DIR/services/evaluator/kpi-evaluator") >"$WORK/evaluator.log" 2>&1 &
EV_PID=$!
bench_wait_ready "http://127.0.0.1:$EV_PORT/readyz" "$WORK/evaluator.log"
# shellcheck disable=SC2086
(cd "$ROOT" && exec env KPI_KAFKA_BOOTSTRAP="$KPI_KAFKA_BOOTSTRAP" \
  KPI_INGEST_LISTEN="127.0.0.1:$IN_PORT" KPI_TOPIC_MEASUREMENTS="$TOPIC" KPI_LOG_LEVEL=info \
  $INGEST_ENV "$BUILD_DIR/services/ingest/kpi-ingest") >"$WORK/ingest.log" 2>&1 &
IN_PID=$!
bench_wait_ready "http://127.0.0.1:$IN_PORT/readyz" "$WORK/ingest.log"
# (a)'s settings: the ingest's producer and the evaluator's consumer (the client with a group).
bench_kafka_props PRODUCER_PROPS "$WORK/ingest.log" kpi-ingest
bench_kafka_props CONSUMER_PROPS "$WORK/evaluator.log" kpi-evaluator group.id
log "(a) produces with the ingest's settings: ${PRODUCER_PROPS[*]}"
log "(a) consumes with the evaluator's settings: ${CONSUMER_PROPS[*]}"

# One template per catalog measure (MEASURE<TAB>TOKEN<TAB>BODY), observed on OBSERVED_AT:
# today (the default), the evaluator reads the evaluation date's month from `measurements`
# (docs/evaluator.md "Aggregates"), so every batch sums the rows of this run so far.
/usr/bin/python3 - "$ROOT/config/sample-tokens.env" "$OBSERVED_AT" >"$WORK/templates.tsv" <<'EOF'
import json, sys
tokens = dict(l.strip().split("=", 1) for l in open(sys.argv[1]) if l.startswith("KPI_TOKEN_"))
for mid, dept, unit, value, comp in [
        ("g2-uiturn-4-supporters", "kikaku", "person", 12, None),
        ("g3-kosodate-3-maternity-grants", "kosodate", "case", 3, None),
        ("g3-kosodate-8-school-lunch", "kyoiku", "school", 7, None),
        ("g4-digital-1-konbini-issuance", "shimin", "case", 4, "numerator"),
        ("g4-digital-2-signage", "kikaku", "facility", 5, None),
        ("g4-digital-3-boshi-app-users", "kosodate", "person", 40, None),
        ("g4-digital-4-hoiku-app-rate", "kosodate", "percent", 91.5, None),
        ("g4-carbon-1-zero-carbon-plan", "kankyo", "plan", 0, None),
        ("g4-carbon-2-led-rate", "kankyo", "percent", 20.5, None)]:
    body = {"measure_id": mid, "observed_at": sys.argv[2], "value": value, "unit": unit,
            "note": "latency bench"}
    if comp:
        body["component"] = comp
    print("%s\t%s\t%s" % (mid, tokens["KPI_TOKEN_" + dept.upper()], json.dumps(body)))
EOF

# events of every measure, summed: what the evaluator has reflected.
attained() { psql -qXtA -d "$DB" -c "SELECT coalesce(sum(events), 0) FROM attainment"; }
# wait_reflected N: until `attainment` counts N events (60 s at most).
wait_reflected() {
  local _
  for _ in $(seq 1 600); do
    [ "$(attained)" -ge "$1" ] && return 0
    sleep 0.1
  done
  log "the evaluator reflected $(attained) of $1 events after 60 s"
  return 1
}
accepted() { awk '$5 == 202 { n++ } END { print n + 0 }' "$1"; }

# Every template must be accepted before anything is measured.
"$LOAD" http "127.0.0.1:$IN_PORT" 9 1 1 "$WORK/templates.tsv" "$WORK/check.out"
[ "$(accepted "$WORK/check.out")" = 9 ] || { log "a template was refused:"; cat "$WORK/check.out" >&2; exit 1; }
EXPECT=9
FIRST_RATE=${RATES%% *}
if [ "$WARMUP" -gt 0 ]; then
  log "warm-up: ${WARMUP}s at $FIRST_RATE/s, untimed"
  "$LOAD" http "127.0.0.1:$IN_PORT" "$FIRST_RATE" "$WARMUP" "$CONNS" "$WORK/templates.tsv" "$WORK/warm.out"
  EXPECT=$((EXPECT + $(accepted "$WORK/warm.out")))
fi
wait_reflected "$EXPECT"

EV_METRICS=http://127.0.0.1:$EV_PORT/metrics
# The evaluator's PostgreSQL backends (the poller names itself latency_poll).
pg_backends() {
  psql -qXtA -d "$DB" -c "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
    AND pid <> pg_backend_pid() AND application_name <> 'latency_poll'"
}
# ev_counters: records, batches, transaction seconds (sum, count), then the CPU time in clock
# ticks of the evaluator and of its backends: how much of a transaction's wall time is work.
ev_counters() {
  echo "$(bench_metric "$EV_METRICS" kpi_evaluator_records_total)" \
    "$(bench_metric "$EV_METRICS" kpi_evaluator_batches_total)" \
    "$(bench_metric "$EV_METRICS" kpi_evaluator_transaction_seconds_sum)" \
    "$(bench_metric "$EV_METRICS" kpi_evaluator_transaction_seconds_count)" \
    "$(bench_cpu_ticks "$EV_PID")" "$(bench_cpu_ticks $(pg_backends))"
}
RESULTS=$WORK/results.txt
: >"$RESULTS"
# run_rate RATE ROUND: (a) then (b) at RATE, results appended to $RESULTS.
run_rate() {
  local rate=$1 round=$2 id=$1.$2 label="$1 round=$2"
  log "(a) Kafka only: ${DURATION}s at $rate/s (round $round)"
  "$LOAD" kafka "$KPI_KAFKA_BOOTSTRAP" "$TAG.kafka$id" "$rate" "$DURATION" "$WORK/kafka$id.out" \
    "${PRODUCER_PROPS[@]}" -- "${CONSUMER_PROPS[@]}"
  /usr/bin/python3 "$ROOT/bench/latency_report.py" kafka "$label" "$WORK/kafka$id.out" >>"$RESULTS"

  log "(b) pipeline: ${DURATION}s at $rate/s, $CONNS connections (round $round)"
  "$LOAD" poll "dbname=$DB application_name=latency_poll" "$POLL_US" "$WORK/poll$id.out" 2>>"$WORK/poll.log" &
  POLL_PID=$!
  sleep 0.5
  read -r R0 B0 S0 C0 E0 P0 < <(ev_counters)
  "$LOAD" http "127.0.0.1:$IN_PORT" "$rate" "$DURATION" "$CONNS" "$WORK/templates.tsv" "$WORK/http$id.out"
  EXPECT=$((EXPECT + $(accepted "$WORK/http$id.out")))
  wait_reflected "$EXPECT"
  sleep 0.2
  read -r R1 B1 S1 C1 E1 P1 < <(ev_counters)
  stop_pid "$POLL_PID"
  POLL_PID=
  /usr/bin/python3 "$ROOT/bench/latency_report.py" e2e "$label" "$WORK/templates.tsv" \
    "$WORK/http$id.out" "$WORK/poll$id.out" >>"$RESULTS"
  awk -v r="$label" -v r0="$R0" -v r1="$R1" -v b0="$B0" -v b1="$B1" -v s0="$S0" -v s1="$S1" \
    -v c0="$C0" -v c1="$C1" -v e0="$E0" -v e1="$E1" -v p0="$P0" -v p1="$P1" -v hz="$(getconf CLK_TCK)" 'BEGIN {
      b = b1 - b0; if (b < 1) b = 1
      printf "LAT evaluator rate=%s records=%d batches=%d records_per_batch=%.1f mean_txn_ms=%.2f evaluator_cpu_ms_per_batch=%.2f backends_cpu_ms_per_batch=%.2f\n",
        r, r1 - r0, b1 - b0, (r1 - r0) / b, (c1 > c0 ? (s1 - s0) / (c1 - c0) * 1000 : 0),
        (e1 - e0) * 1000 / hz / b, (p1 - p0) * 1000 / hz / b }' >>"$RESULTS"
}
# Rounds interleave the rates, so a slow minute of the shared machine hits both sides of
# one round rather than one rate.
for ROUND in $(seq 1 "$ROUNDS"); do
  for RATE in $RATES; do run_rate "$RATE" "$ROUND"; done
done
EV_HWM=$(bench_hwm_kb "$EV_PID")
IN_HWM=$(bench_hwm_kb "$IN_PID")

field() { sed -n "s/^LAT $1 rate=$2 round=$3 .* $4=\([-0-9.]*\).*/\1/p" "$RESULTS"; }
echo
echo "end-to-end latency ($(nproc) cores; broker, PostgreSQL, services and load share them)"
for ROUND in $(seq 1 "$ROUNDS"); do
  for RATE in $RATES; do
    K50=$(field kafka_produce_consume "$RATE" "$ROUND" p50_ms) K99=$(field kafka_produce_consume "$RATE" "$ROUND" p99_ms)
    E50=$(field e2e_202_to_attainment "$RATE" "$ROUND" p50_ms) E99=$(field e2e_202_to_attainment "$RATE" "$ROUND" p99_ms)
    VERDICT=$(awk -v e="$E99" -v k="$K99" 'BEGIN { print (e <= k + 100 ? "ok" : "ABOVE GOAL") }')
    printf '  %5s/s r%s  202->attainment p50 %s ms p99 %s ms | kafka produce->consume p50 %s ms p99 %s ms | p99 - kafka p99 = %s ms (goal <= 100: %s)\n' \
      "$RATE" "$ROUND" "$E50" "$E99" "$K50" "$K99" "$(awk -v e="$E99" -v k="$K99" 'BEGIN { printf "%.1f", e - k }')" "$VERDICT"
  done
done
echo "  peak RSS (VmHWM): kpi-evaluator $((EV_HWM / 1024)) MiB ($EV_HWM kB), kpi-ingest $((IN_HWM / 1024)) MiB ($IN_HWM kB) (goal <= 32 MiB)"
echo "  poller resolution ${POLL_US} us; details:"
sed 's/^LAT /    /' "$RESULTS"
