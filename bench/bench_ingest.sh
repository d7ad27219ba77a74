#!/usr/bin/env bash
# bench/bench_ingest.sh: kpi-ingest throughput against the native baseline, on one broker:
#   (a) kcat -P producing N copies of a measurement record from a file (same producer
#       settings as the service: idempotent, acks=all, linger.ms=1, murmur2 keys),
#   (b) NDJSON batch POSTs of BATCH items (wrk, keep-alive),
#   (c) single-record POSTs (wrk, keep-alive, CONNS connections, --latency),
#   (d) the same with HTTP/1.1 pipelining (DEPTH requests in flight per connection),
# then prints events/s, the ratios to kcat, p50/p99 of single POSTs and the service's peak
# RSS (VmHWM). Not a test: numbers depend on the machine, and wrk, the broker and the
# service share its cores.
#
#   bench/bench_ingest.sh            build dir /tmp/inb-rel (built if missing), own stack
# Env:
#   BUILD_DIR=/tmp/inb-rel   a Release build (cmake -DCMAKE_BUILD_TYPE=Release)
#   BENCH_STACK_ENV=FILE     use a running stack (its stack.env) instead of starting one
#   N=1000000                records for kcat (large enough that start-up does not count)
#   WARMUP=5                 seconds of untimed load first, so the broker's JIT is warm
#   DURATION=15              seconds per wrk run
#   CONNS=256                connections for single POSTs (each waits for its delivery
#                            report, so throughput is connections / latency)
#   BATCH=500 BATCH_CONNS=4  items per batch, connections for batches
#   DEPTH=8 PIPE_CONNS=64    (d): single POSTs with HTTP/1.1 pipelining, DEPTH per connection
#   WRK_THREADS=1            wrk threads (leave cores to the service and the broker)
#   INGEST_ENV="K=V ..."     extra environment for the service (KPI_KAFKA_PROP_* tuning…)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The shipped catalog has sample departments (published tokens): the services refuse it
# unless told this is not a deployment (docs/security.md).
export KPI_ALLOW_SAMPLE_TOKENS=1
BUILD_DIR=${BUILD_DIR:-/tmp/inb-rel}
N=${N:-1000000}
DURATION=${DURATION:-15}
CONNS=${CONNS:-256}
BATCH=${BATCH:-500}
BATCH_CONNS=${BATCH_CONNS:-4}
WRK_THREADS=${WRK_THREADS:-1}
INGEST_ENV=${INGEST_ENV:-}
WARMUP=${WARMUP:-5}
DEPTH=${DEPTH:-8}
PIPE_CONNS=${PIPE_CONNS:-64}

log() { printf 'bench: %s\n' "$*" >&2; }
now() { date +%s.%N; }

for tool in wrk kcat curl; do
  command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }
done
if [ ! -x "$BUILD_DIR/services/ingest/kpi-ingest" ]; then
  log "building Release into $BUILD_DIR"
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD_DIR" -j2 --target kpi-ingest >/dev/null
fi

WORK=$(mktemp -d /tmp/kpi-bench.XXXXXX)
STACK_DIR=
INGEST_PID=
cleanup() {
  if [ -n "$INGEST_PID" ] && kill -0 "$INGEST_PID" 2>/dev/null; then
    kill -TERM "$INGEST_PID" 2>/dev/null || true
    wait "$INGEST_PID" 2>/dev/null || true
  fi
  if [ -n "$STACK_DIR" ]; then "$ROOT/scripts/stack.sh" stop "$STACK_DIR" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=bench/bench_lib.sh
. "$ROOT/bench/bench_lib.sh"
STACK_KAFKA_JVM_OPTS=${STACK_KAFKA_JVM_OPTS:--XX:+UseG1GC} bench_stack_up "Kafka with G1"
BROKER=$(sed -n 's/^KPI_KAFKA_BOOTSTRAP=//p' "$STACK_ENV")
# shellcheck disable=SC1091
TOKEN=$(. "$ROOT/config/sample-tokens.env" && echo "$KPI_TOKEN_KANKYO")
TOPIC=bench_measurements_$$
PORT=$(/usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')

log "starting kpi-ingest on :$PORT, topic $TOPIC, broker $BROKER"
# shellcheck disable=SC2086  # INGEST_ENV is a list of K=V words
# wrk is one peer address: the per-peer connection cap (KPI_HTTP_MAX_CONNECTIONS_PER_PEER, 64
# by default, docs/http.md) would refuse most of its 256 connections with 503.
(cd "$ROOT" && exec env KPI_KAFKA_BOOTSTRAP="$BROKER" KPI_INGEST_LISTEN="127.0.0.1:$PORT" \
  KPI_TOPIC_MEASUREMENTS="$TOPIC" KPI_LOG_LEVEL=warn KPI_INGEST_MAX_BATCH="$BATCH" \
  KPI_HTTP_MAX_CONNECTIONS_PER_PEER=1024 $INGEST_ENV \
  "$BUILD_DIR/services/ingest/kpi-ingest") 2>"$WORK/ingest.log" &
INGEST_PID=$!
for _ in $(seq 300); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz")" = 200 ] && break
  sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz")" = 200 ] ||
  { log "kpi-ingest not ready"; cat "$WORK/ingest.log" >&2; exit 1; }

MEASURE=g4-carbon-2-led-rate
BODY='{"measure_id":"g4-carbon-2-led-rate","observed_at":"2024-05-01","value":20.5,"unit":"percent","note":"bench"}'
# The record exactly as the service writes it, for kcat.
RECORD='{"schema":"kpi.measurement/1","event_id":"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b","measure_id":"g4-carbon-2-led-rate","department":"kankyo","observed_at":"2024-05-01","value":20.5,"unit":"percent","note":"bench","received_at":"2024-05-01T00:00:00.000Z"}'
# Check the body is accepted before measuring anything.
code=$(curl -s -o "$WORK/check.json" -w '%{http_code}' -X POST "http://127.0.0.1:$PORT/v1/measurements" \
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d "$BODY")
[ "$code" = 202 ] || { log "sample POST answered $code: $(cat "$WORK/check.json")"; exit 1; }

# Sum of the end offsets of the topic's partitions: what is in Kafka.
topic_end() {
  local args=() p
  for p in 0 1 2 3 4 5; do args+=(-t "$TOPIC:$p:-1"); done
  kcat -b "$BROKER" -Q "${args[@]}" | awk '{ s += $NF } END { print s + 0 }'
}
kcat_produce() {
  kcat -P -b "$BROKER" -t "$TOPIC" -K $'\t' -X enable.idempotence=true -X acks=all \
    -X linger.ms=1 -X batch.num.messages=10000 -X partitioner=murmur2_random <"$1"
}
awk -v n="$N" -v k="$MEASURE" -v r="$RECORD" 'BEGIN { for (i = 0; i < n; i++) print k "\t" r }' >"$WORK/records.txt"
awk -v n="$BATCH" -v b="$BODY" 'BEGIN { for (i = 0; i < n; i++) print b }' >"$WORK/batch.ndjson"

if [ "$WARMUP" -gt 0 ]; then
  log "warm-up: ${WARMUP}s of each load, untimed"
  head -n 200000 "$WORK/records.txt" >"$WORK/warm.txt"
  kcat_produce "$WORK/warm.txt"
  BENCH_TOKEN=$TOKEN BENCH_BODY_FILE=$WORK/batch.ndjson BENCH_ITEMS=$BATCH \
    wrk -t1 -c"$BATCH_CONNS" -d"${WARMUP}s" -s "$ROOT/bench/ingest_batch.lua" \
    "http://127.0.0.1:$PORT/v1/measurements:batch" >/dev/null
  BENCH_TOKEN=$TOKEN BENCH_BODY=$BODY wrk -t1 -c"$CONNS" -d"${WARMUP}s" \
    -s "$ROOT/bench/ingest_single.lua" "http://127.0.0.1:$PORT/v1/measurements" >/dev/null
fi

# ---- (a) kcat -P ----
log "(a) kcat -P: $N records"
before=$(topic_end)
t0=$(now)
kcat_produce "$WORK/records.txt"
t1=$(now)
got=$(( $(topic_end) - before ))
[ "$got" -eq "$N" ] || { log "kcat: $got of $N records arrived"; exit 1; }
KCAT_EPS=$(awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
KCAT_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')

# ---- (b) batches ----
log "(b) NDJSON batches of $BATCH, $BATCH_CONNS connections, ${DURATION}s"
BENCH_TOKEN=$TOKEN BENCH_BODY_FILE=$WORK/batch.ndjson BENCH_ITEMS=$BATCH \
  wrk -t"$WRK_THREADS" -c"$BATCH_CONNS" -d"${DURATION}s" --timeout 30s \
  -s "$ROOT/bench/ingest_batch.lua" "http://127.0.0.1:$PORT/v1/measurements:batch" >"$WORK/batch.out"
read -r B_ACC B_OTHER B_DUR B_P50 B_P99 < <(sed -n 's/^BENCH accepted=\([0-9]*\) other=\([0-9]*\) duration_us=\([0-9]*\) p50_us=\([0-9]*\) p99_us=\([0-9]*\)/\1 \2 \3 \4 \5/p' "$WORK/batch.out")
BATCH_EPS=$(awk -v a="$B_ACC" -v d="$B_DUR" 'BEGIN { printf "%.0f", a / (d / 1e6) }')

# ---- (c) single POSTs ----
log "(c) single POSTs, $CONNS connections, ${DURATION}s"
BENCH_TOKEN=$TOKEN BENCH_BODY=$BODY \
  wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 30s --latency \
  -s "$ROOT/bench/ingest_single.lua" "http://127.0.0.1:$PORT/v1/measurements" >"$WORK/single.out"
read -r S_ACC S_OTHER S_DUR S_P50 S_P99 < <(sed -n 's/^BENCH accepted=\([0-9]*\) other=\([0-9]*\) duration_us=\([0-9]*\) p50_us=\([0-9]*\) p99_us=\([0-9]*\)/\1 \2 \3 \4 \5/p' "$WORK/single.out")
SINGLE_EPS=$(awk -v a="$S_ACC" -v d="$S_DUR" 'BEGIN { printf "%.0f", a / (d / 1e6) }')

# ---- (d) single POSTs, pipelined ----
log "(d) single POSTs pipelined x$DEPTH, $PIPE_CONNS connections, ${DURATION}s"
BENCH_TOKEN=$TOKEN BENCH_BODY=$BODY BENCH_DEPTH=$DEPTH \
  wrk -t"$WRK_THREADS" -c"$PIPE_CONNS" -d"${DURATION}s" --timeout 30s \
  -s "$ROOT/bench/ingest_single.lua" "http://127.0.0.1:$PORT/v1/measurements" >"$WORK/pipe.out"
read -r P_ACC P_OTHER P_DUR _ _ < <(sed -n 's/^BENCH accepted=\([0-9]*\) other=\([0-9]*\) duration_us=\([0-9]*\) p50_us=\([0-9]*\) p99_us=\([0-9]*\)/\1 \2 \3 \4 \5/p' "$WORK/pipe.out")
PIPE_EPS=$(awk -v a="$P_ACC" -v d="$P_DUR" 'BEGIN { printf "%.0f", a / (d / 1e6) }')

HWM_KB=$(awk '/^VmHWM/ { print $2 }' "/proc/$INGEST_PID/status")
METRICS=$(curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^kpi_ingest_(records_produced|delivery_failures|queue_full)_total' || true)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
pass() { awk -v a="$1" -v g="$2" 'BEGIN { print (a >= g ? "ok" : "BELOW GOAL") }'; }
cat <<EOF

kpi-ingest benchmark ($(nproc) cores; broker, service and load generator share them)
  (a) kcat -P          $N records in ${KCAT_S}s          $KCAT_EPS events/s
  (b) batch POSTs      $BATCH items x $BATCH_CONNS conns, ${DURATION}s   $BATCH_EPS events/s  ratio $(ratio "$BATCH_EPS" "$KCAT_EPS") (goal >= 0.5: $(pass "$(ratio "$BATCH_EPS" "$KCAT_EPS")" 0.5))  failed batches $B_OTHER  p50 $((B_P50 / 1000)) ms p99 $((B_P99 / 1000)) ms
  (c) single POSTs     $CONNS conns, ${DURATION}s            $SINGLE_EPS events/s  ratio $(ratio "$SINGLE_EPS" "$KCAT_EPS") (goal >= 0.2: $(pass "$(ratio "$SINGLE_EPS" "$KCAT_EPS")" 0.2))  non-202 $S_OTHER
      latency p50 $(awk -v u="$S_P50" 'BEGIN { printf "%.2f", u / 1000 }') ms  p99 $(awk -v u="$S_P99" 'BEGIN { printf "%.2f", u / 1000 }') ms
  (d) single, pipelined x$DEPTH, $PIPE_CONNS conns     $PIPE_EPS events/s  ratio $(ratio "$PIPE_EPS" "$KCAT_EPS")  non-202 $P_OTHER
  peak RSS (VmHWM)     $((HWM_KB / 1024)) MiB ($HWM_KB kB)  (goal <= 32 MiB: $([ "$HWM_KB" -le 32768 ] && echo ok || echo ABOVE GOAL))
$(echo "$METRICS" | sed 's/^/  /')
EOF
