#!/usr/bin/env bash
# tests/integration/run_local.sh: ctest it.run_local — scripts/run-local.sh as a user runs it,
# on the build tree under test, with its own run directories and free listen ports (its own
# durable stack, so it never touches the fixture's):
#   1. start, post a measurement, wait until GET /v1/attainment shows it;
#   2. stop, start again: the value is still in the attainment and in measurements;
#   3. reset: the run directory is gone;
#   4. --demo: on_track, lagging and achieved (and no_data, a stale flag) appear in
#      GET /v1/attainment, and the owners' mails arrive and read back decoded.
# Every run directory is stopped and removed in a trap, pass or fail.
#   run_local.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
SRC=$1 BUILD=$2
WORK=$BUILD/it-run-local
RL=$SRC/scripts/run-local.sh
PY=/usr/bin/python3
MEASURE=g2-uiturn-4-supporters
EVENT=6f0d7b9e-2d3c-4d51-9a57-0c1e2f3a4b5c

fail() { echo "FAIL: $*" >&2; exit 1; }
cleanup() {
  for d in run demo; do
    [ -d "$WORK/$d" ] && KPI_RUN_DIR=$WORK/$d bash "$RL" reset >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT
cleanup

read -r p1 p2 p3 p4 <<<"$("$PY" - <<'EOF'
import random, socket
# As scripts/stack.sh picks its ports: free now, outside the kernel's ephemeral range.
got, socks = [], []
while len(got) < 4:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", random.randint(20000, 32000)))
    except OSError:
        continue
    socks.append(s); got.append(s.getsockname()[1])
print(" ".join(map(str, got)))
EOF
)"
export KPI_BUILD_DIR=$BUILD KPI_RUN_LOCAL_NO_BUILD=1
export KPI_INGEST_LISTEN=127.0.0.1:$p1 KPI_EVALUATOR_LISTEN=127.0.0.1:$p2
export KPI_NOTIFIER_LISTEN=127.0.0.1:$p3 KPI_REPORT_LISTEN=127.0.0.1:$p4
# The caller's environment must not point the run at another PostgreSQL or catalog.
unset DATABASE_URL PGHOST PGPORT PGUSER PGDATABASE KPI_CATALOG KPI_EVAL_DATE
# shellcheck disable=SC1091
. "$SRC/config/sample-tokens.env"

# attainment_field ID FIELD: one field of GET /v1/attainment/ID ("" when absent).
attainment_field() {
  curl -s "http://$KPI_EVALUATOR_LISTEN/v1/attainment/$1" |
    "$PY" -c 'import json,sys
try: print(json.load(sys.stdin).get(sys.argv[1]))
except Exception: print("")' "$2"
}

stored_value() {
  (set -a; . "$KPI_RUN_DIR/stack/stack.env"; set +a
   psql -Atq -c "SELECT value FROM measurements WHERE event_id = '$EVENT'")
}

# ---- 1. start, post, see it ----
export KPI_RUN_DIR=$WORK/run
bash "$RL" --no-wait >"$WORK.start1.log" 2>&1 || { cat "$WORK.start1.log"; fail "first start"; }
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KPI_TOKEN_KIKAKU" \
  -H 'Content-Type: application/json' \
  -d "{\"event_id\":\"$EVENT\",\"measure_id\":\"$MEASURE\",\"observed_at\":\"2024-03-31\",\"value\":37,\"unit\":\"person\"}" \
  "http://$KPI_INGEST_LISTEN/v1/measurements")
[ "$code" = 202 ] || fail "POST /v1/measurements answered $code"
for _ in $(seq 1 150); do
  [ "$(attainment_field $MEASURE value)" = 37 ] && break
  sleep 0.2
done
[ "$(attainment_field $MEASURE value)" = 37 ] || fail "GET /v1/attainment never showed the value 37"
echo "ok: posted value 37 is in GET /v1/attainment/$MEASURE"

# ---- 2. stop, start: still there ----
bash "$RL" stop >/dev/null
[ -f "$KPI_RUN_DIR/stack/pg/PG_VERSION" ] || fail "stop removed PostgreSQL's cluster"
[ -d "$KPI_RUN_DIR/stack/kafka/data" ] || fail "stop removed Kafka's log dirs"
grep -qx 'fsync = off' "$KPI_RUN_DIR/stack/pg/stack.conf" && fail "the local run's PostgreSQL has fsync off"
bash "$RL" --no-wait >"$WORK.start2.log" 2>&1 || { cat "$WORK.start2.log"; fail "second start"; }
grep -q 'migrations applied: 0' "$WORK.start2.log" || fail "the second start did not find the schema"
v=$(attainment_field $MEASURE value)
[ "$v" = 37 ] || fail "after stop/start GET /v1/attainment/$MEASURE value is '$v', not 37"
[ "$(attainment_field $MEASURE events)" = 1 ] || fail "after stop/start the measure has not exactly 1 event"
v=$(stored_value)
[ "$v" = 37 ] || fail "after stop/start measurements holds '$v' for event $EVENT, not 37"
echo "ok: after stop/start the value is still in the attainment and in measurements"

# ---- 3. reset ----
bash "$RL" reset >"$WORK.reset.log" 2>&1
grep -q "removed $KPI_RUN_DIR" "$WORK.reset.log" || fail "reset did not say what it removed"
[ ! -e "$KPI_RUN_DIR" ] || fail "reset left $KPI_RUN_DIR"
echo "ok: reset removed $KPI_RUN_DIR"

# ---- 4. the demo ----
export KPI_RUN_DIR=$WORK/demo
bash "$RL" --demo --no-wait >"$WORK.demo.log" 2>&1 || { cat "$WORK.demo.log"; fail "demo start"; }
statuses() {
  curl -s "http://$KPI_EVALUATOR_LISTEN/v1/attainment" | "$PY" -c 'import json,sys
ms = json.load(sys.stdin)["measures"]
print(" ".join(sorted({m["status"] for m in ms} | ({"stale"} if any(m["stale"] for m in ms) else set()))))'
}
want="achieved lagging no_data on_track stale"
for _ in $(seq 1 150); do
  [ "$(statuses)" = "$want" ] && break
  sleep 0.2
done
got=$(statuses)
[ "$got" = "$want" ] || fail "demo statuses: '$got', want '$want'"
echo "ok: the demo shows $got"
for _ in $(seq 1 150); do
  [ "$(find "$KPI_RUN_DIR/stack/maildir/new" -type f | wc -l)" -ge 5 ] && break
  sleep 0.2
done
mail=$(bash "$RL" mail 20 --demo) || fail "run-local.sh mail failed"
grep -q '^To: kikaku@ashibetsu-city.example' <<<"$mail" || fail "no decoded mail to kikaku"
grep -q '行政情報発信のデジタル化の推進' <<<"$mail" || fail "the lagging signage measure is not in the decoded mails"
echo "ok: the demo's mails read back decoded"
