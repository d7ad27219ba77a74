# bench/bench_lib.sh: what the bench scripts share, sourced by them (not run). Expects ROOT
# (the repository), WORK (the script's work directory) and a log function.

# The stack to measure against: BENCH_STACK_ENV's (a running scripts/stack.sh stack) when set,
# else a new one in $WORK/stack, which the caller's cleanup stops (STACK_DIR non-empty).
# Sets STACK_ENV and STACK_DIR. Extra environment for stack.sh (e.g. STACK_KAFKA_JVM_OPTS)
# comes from the caller's.
bench_stack_up() {
  if [ -n "${BENCH_STACK_ENV:-}" ]; then
    STACK_ENV=$BENCH_STACK_ENV
  else
    STACK_DIR=$WORK/stack
    log "starting a stack in $STACK_DIR${1:+ ($1)}"
    "$ROOT/scripts/stack.sh" start "$STACK_DIR" >&2
    STACK_ENV=$STACK_DIR/stack.env
  fi
}

# bench_delete_topics BOOTSTRAP TOPIC...: deletes the bench's topics on a shared stack (a stack
# of its own goes with its directory), so that runs do not fill the disk: an ingest run writes
# 1-2 GB. Uses Kafka's Admin client from the jars scripts/stack.sh runs the broker with
# (bench/DeleteTopics.java); a failure is logged, never fatal.
bench_delete_topics() {
  [ -n "${BENCH_STACK_ENV:-}" ] || return 0
  java -cp "$ROOT/.cache/kafka/libs/*" "$ROOT/bench/DeleteTopics.java" "$@" >/dev/null 2>&1 ||
    log "could not delete topics $*"
}

# Exports every variable of $STACK_ENV (PG*, KPI_KAFKA_BOOTSTRAP, KPI_SMTP_URL...).
bench_stack_env_load() {
  set -a
  # shellcheck disable=SC1090
  . "$STACK_ENV"
  set +a
}

# A TCP port free on 127.0.0.1 right now.
bench_free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# bench_wait_ready URL LOG: waits up to 30 s for URL to answer 200; else shows LOG's tail and
# fails.
bench_wait_ready() {
  local _
  for _ in $(seq 1 300); do
    curl -fs -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  log "$1 did not become ready; see $2"
  tail -20 "$2" >&2
  return 1
}

# bench_hwm_kb PID: the process's peak resident set (VmHWM) in kB.
bench_hwm_kb() {
  awk '/^VmHWM/ { print $2 }' "/proc/$1/status"
}

# bench_metric URL NAME: the sum of NAME's samples (all label sets) at the /metrics URL.
bench_metric() {
  curl -fs "$1" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%.6f\n", s + 0 }'
}

# bench_cpu_ticks PID...: user + system CPU time of the processes, in clock ticks
# (getconf CLK_TCK per second); processes gone meanwhile count 0.
bench_cpu_ticks() {
  local pid t=0
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    t=$((t + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

# bench_kafka_config LOG CLIENT [HAVING]: the PROP=VALUE words, one per line, of the client
# settings that the service logging to LOG started CLIENT (its client.id) with: the first
# kafka_config line (common/kpi_kafka.c kpi_kafka_conf_summary; the service must log at info)
# for CLIENT whose settings include HAVING (a property name, e.g. group.id to pick the
# evaluator's consumer over its producer). These are the service's defaults, an operator's
# KPI_KAFKA_PROP_* and its fixed settings, as librdkafka holds them, so a baseline gets exactly
# what the service runs with. Left out: bootstrap.servers and log.queue (where a bench tool
# connects and logs is its own affair) and group.id (a baseline consumes in a group of its
# own). Fails, printing nothing, when LOG has no such line, or when the line cannot be passed
# on whole: a masked secret (***), settings not shown, or a value with a space.
bench_kafka_config() {
  /usr/bin/python3 - "$@" <<'PY'
import json, sys
log, client = sys.argv[1], sys.argv[2]
having = sys.argv[3] if len(sys.argv) > 3 else None
def fail(why):
    print(f"bench: {log}: {client}'s kafka_config {why}", file=sys.stderr)
    sys.exit(1)
prefix = client + ": "
for text in open(log, encoding="utf-8", errors="replace"):
    try:
        rec = json.loads(text)
    except ValueError:
        continue
    if not isinstance(rec, dict) or rec.get("event") != "kafka_config":
        continue
    msg = rec.get("msg")
    if not isinstance(msg, str) or not msg.startswith(prefix):
        continue
    words = msg[len(prefix):].split(" ")
    if having and not any(w.startswith(having + "=") for w in words):
        continue
    if msg.endswith("not shown)"):
        fail("leaves settings out: " + msg)
    out = []
    for w in words:
        name, eq, value = w.partition("=")
        if not eq or not name:
            fail(f"has a value with a space, which the bench cannot pass on: {w!r}")
        if value == "***":
            fail(f"masks {name}: give the baseline that secret another way")
        if name not in ("bootstrap.servers", "log.queue", "group.id"):
            out.append(w)
    print("\n".join(out))
    sys.exit(0)
fail("line not found" + (f" (with {having})" if having else "") +
     "; is the service logging at info?")
PY
}

# bench_kafka_props ARRAY LOG CLIENT [HAVING]: bench_kafka_config's PROP=VALUE words into the
# array named ARRAY. Returns 1 when bench_kafka_config fails (its message is on stderr), so a
# caller under set -e stops there.
bench_kafka_props() {
  local text
  text=$(bench_kafka_config "${@:2}") || return 1
  mapfile -t "$1" <<<"$text"
}
