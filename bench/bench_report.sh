#!/usr/bin/env bash
# bench/bench_report.sh: kpi-report page latency and memory on a city-sized plan, against
# native baselines measured in the same run on the same server:
#   data   a catalog of MEASURES measures (the shipped 9 replicated with new ids, every kind,
#          owners rotating over the shipped departments) and N readings over FY2022..FY2024,
#          produced to a fresh topic (kcat -P) and stored by the real kpi-evaluator
#          (KPI_EVAL_DATE=2025-03-31) until every offset is committed: measurements,
#          measure_totals, attainment and attainment_history are the evaluator's own;
#   service  kpi-report (Release), logged in as a member of kpi_reader, loaded with wrk
#          (-t1 -c$CONNS -d$DURATION --latency, keep-alive, loopback): GET /, GET /?as_of=$AS_OF,
#          GET /report.csv, GET /measures/<one>; p50/p99 of each, and the peak RSS (VmHWM);
#   (a)    pgbench -M extended (an unnamed statement with parameters, as the service sends
#          it), same connections and duration, the service's own queries extracted from
#          report_pages.c for every measure: SQL_LATEST, the evaluator's rows at today's date
#          (what / and the CSV ask when the cache cannot answer), and SQL_TABLE around
#          KPI_AGGREGATE_SQL at $AS_OF (what the past page asks): the database's share of
#          each page;
#   (b)    nginx-light serving the rendered / page as a static file, wrk at the same settings:
#          the cost of HTTP and of the bytes alone.
# Prints a table: p50/p99 per page, the baselines, ratio = service p99 / baseline p99, the
# goals (/ p99 <= 100 ms, as_of p99 <= 300 ms, CSV p99 <= 100 ms, RSS <= 32 MiB).
# Not a test: numbers depend on the machine; the broker, PostgreSQL, wrk and the service share it.
#
#   bench/bench_report.sh            build dir /tmp/rpb-rel (built if missing), own stack
# Env:
#   BUILD_DIR=/tmp/rpb-rel   a Release build (cmake -DCMAKE_BUILD_TYPE=Release)
#   BENCH_STACK_ENV=FILE     use a running stack (its stack.env) instead of starting one
#   MEASURES=1000            catalog size
#   N=100000                 readings
#   AS_OF=2024-03-31         the past date measured
#   DURATION=5s CONNS=4      wrk and pgbench settings (one thread each)
#   NO_NGINX=1               skip baseline (b) (also skipped when nginx is not installed)
#   KEEP=1                   keep the work directory (catalog, records, logs, pages) and, on
#                            a given stack, the database (dropped otherwise)
#   PGOPTIONS='-c jit=off'   libpq's own variable, for pgbench: kpi-report starts every
#                            session with jit=off itself (docs/report.md); the as_of query's
#                            estimated cost is above jit_above_cost, and JIT compilation is
#                            about 40% of its time at 1,000 measures
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The shipped departments are samples (published tokens): the services refuse them unless
# told this is not a deployment (docs/security.md).
export KPI_ALLOW_SAMPLE_TOKENS=1
BUILD_DIR=${BUILD_DIR:-/tmp/rpb-rel}
MEASURES=${MEASURES:-1000}
N=${N:-100000}
AS_OF=${AS_OF:-2024-03-31}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-4}
PY=/usr/bin/python3

log() { printf 'bench: %s\n' "$*" >&2; }

for tool in kcat psql curl wrk pgbench; do
  command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }
done
NGINX=
if [ -z "${NO_NGINX:-}" ]; then
  NGINX=$(command -v nginx || true)
  [ -n "$NGINX" ] || [ ! -x /usr/sbin/nginx ] || NGINX=/usr/sbin/nginx
  [ -n "$NGINX" ] || log "nginx not found (apt-get install -y nginx-light): baseline (b) skipped"
fi
EV_BIN=$BUILD_DIR/services/evaluator/kpi-evaluator
RP_BIN=$BUILD_DIR/services/report/kpi-report
if [ ! -x "$EV_BIN" ] || [ ! -x "$RP_BIN" ]; then
  log "building Release into $BUILD_DIR"
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD_DIR" -j2 --target kpi-evaluator kpi-report >/dev/null
fi

WORK=$(mktemp -d /tmp/kpi-rpbench.XXXXXX)
STACK_DIR=
EV_PID=
RP_PID=
NG_PID=
stop_child() { # PID: TERM, wait
  if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}
cleanup() {
  stop_child "$EV_PID"
  stop_child "$RP_PID"
  stop_child "$NG_PID"
  if [ -z "$STACK_DIR" ] && [ -n "${DB:-}" ] && [ -z "${KEEP:-}" ]; then
    psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
    psql -qX -d postgres -c "DROP ROLE IF EXISTS ${DB}_rd" >/dev/null 2>&1 || true
  fi
  if [ -n "$STACK_DIR" ]; then "$ROOT/scripts/stack.sh" stop "$STACK_DIR" >/dev/null 2>&1 || true; fi
  if [ -n "${KEEP:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# shellcheck source=bench/bench_lib.sh
. "$ROOT/bench/bench_lib.sh"
bench_stack_up
bench_stack_env_load

TAG=rpbench_$$_$(date +%s)
DB=$TAG
TOPIC=$TAG.measurements
EV_PORT=$(bench_free_port)
psql -qX -d postgres -c "CREATE DATABASE $DB"

log "generating a catalog of $MEASURES measures and $N readings"
"$PY" - "$ROOT/config/catalog.json" "$MEASURES" "$N" "$WORK" <<'EOF'
import copy, datetime, json, random, sys, uuid
src, n_measures, n, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cat = json.load(open(src, encoding="utf-8"))
depts = [d["id"] for d in cat["departments"]]
shipped = cat["measures"]
measures = []
for i in range(n_measures):
    m = copy.deepcopy(shipped[i % len(shipped)])
    m["id"] = ("b%04d-%s" % (i, m["id"]))[:64]
    m["name"] = "%s（%d）" % (m["name"], i)
    m["owner"] = depts[i % len(depts)]
    m.pop("watchers", None)
    measures.append(m)
cat["measures"] = measures
cat["plan"]["source"] = "bench/bench_report.sh"
json.dump(cat, open(work + "/catalog.json", "w", encoding="utf-8"), ensure_ascii=False, indent=1)

rnd = random.Random(20240401)
start = datetime.date(2022, 4, 1)
days = (datetime.date(2025, 3, 31) - start).days + 1
with open(work + "/records.tsv", "w", encoding="utf-8") as out:
    for i in range(n):
        m = measures[i % n_measures]
        kind, unit = m["kind"], m["unit"]
        day = start + datetime.timedelta(days=rnd.randrange(days))
        rec = {"schema": "kpi.measurement/1",
               "event_id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
               "measure_id": m["id"], "department": m["owner"], "observed_at": day.isoformat(),
               "unit": unit, "received_at": "2025-04-01T00:00:00.000Z"}
        if kind == "milestone":
            rec["value"] = 1 if rnd.random() < 0.1 else 0
        elif kind == "ratio":
            rec["component"] = "numerator" if (i // n_measures) % 2 else "denominator"
            rec["value"] = rnd.randint(1, 20)
        elif unit == "percent":
            rec["value"] = round(rnd.uniform(10, 99), 1)
        else:
            rec["value"] = rnd.randint(0, 60)
        out.write(m["id"] + "\t" + json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
EOF
CATALOG=$WORK/catalog.json
ONE=$("$PY" -c 'import json,sys; print([m["id"] for m in json.load(open(sys.argv[1]))["measures"] if m["kind"] == "cumulative"][0])' "$CATALOG")

# exec: $! must be the service itself, not a subshell around it.
ev_env() {
  exec env DATABASE_URL="dbname=$DB" KPI_TOPIC_MEASUREMENTS="$TOPIC" \
    KPI_TOPIC_ALERTS="$TAG.alerts" KPI_TOPIC_MEASUREMENTS_DLQ="$TAG.dlq" \
    KPI_TOPIC_ALERTS_DLQ="$TAG.alerts.dlq" KPI_EVALUATOR_GROUP="$TAG" \
    KPI_EVALUATOR_LISTEN="127.0.0.1:$EV_PORT" KPI_EVAL_DATE=2025-03-31 \
    KPI_CATALOG="$CATALOG" "$@"
}
wait_ready() { bench_wait_ready "http://127.0.0.1:$1/readyz" "$2" || exit 1; } # PORT LOG

# A first run creates the topics and the schema, then leaves the group cleanly.
log "preparing topics and schema"
ev_env "$EV_BIN" >"$WORK/evaluator.log" 2>&1 &
EV_PID=$!
wait_ready "$EV_PORT" "$WORK/evaluator.log"
stop_child "$EV_PID"
EV_PID=

log "producing $N records to $TOPIC"
kcat -b "$KPI_KAFKA_BOOTSTRAP" -P -t "$TOPIC" -K $'\t' -X enable.idempotence=true \
  -X acks=all -X linger.ms=5 -l "$WORK/records.tsv"

log "storing them with kpi-evaluator"
ev_env "$EV_BIN" >>"$WORK/evaluator.log" 2>&1 &
EV_PID=$!
while :; do
  DONE=$(psql -qXtA -d "$DB" -c "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer_group = '$TAG'")
  [ "$DONE" -ge "$N" ] && break
  kill -0 "$EV_PID" 2>/dev/null || { log "the evaluator died"; tail -20 "$WORK/evaluator.log" >&2; exit 1; }
  sleep 0.2
done
# The sweep evaluates every measure of the catalog (also those without a reading in a batch);
# wait until each has its attainment row, so that / reads the evaluator's figures throughout.
for _ in $(seq 1 300); do
  ATT=$(psql -qXtA -d "$DB" -c "SELECT count(*) FROM attainment")
  [ "$ATT" -ge "$MEASURES" ] && break
  sleep 0.2
done
stop_child "$EV_PID"
EV_PID=
read -r ROWS TOTALS ATT HIST < <(psql -qXtA -F ' ' -d "$DB" -c "SELECT (SELECT count(*) FROM measurements), (SELECT count(*) FROM measure_totals), (SELECT count(*) FROM attainment), (SELECT count(*) FROM attainment_history)")
[ "$ROWS" -eq "$N" ] || { log "expected $N measurements, found $ROWS"; exit 1; }
log "stored: $ROWS measurements, $TOTALS monthly totals, $ATT attainment rows, $HIST history rows"
psql -qX -d "$DB" -c "VACUUM (ANALYZE)" >/dev/null

# The report logs in as a member of kpi_reader, as in a deployment.
psql -qX -d "$DB" -c "CREATE ROLE ${TAG}_rd LOGIN IN ROLE kpi_reader" >/dev/null
RP_PORT=$(bench_free_port)
env DATABASE_URL="dbname=$DB user=${TAG}_rd" KPI_REPORT_LISTEN="127.0.0.1:$RP_PORT" \
  KPI_CATALOG="$CATALOG" "$RP_BIN" >"$WORK/report.log" 2>&1 &
RP_PID=$!
wait_ready "$RP_PORT" "$WORK/report.log"
BASE=http://127.0.0.1:$RP_PORT

# Each page once (warms the connection and caches; checks it answers 200 with every measure).
mkdir -p "$WORK/www"
fetch() { # PATH FILE
  local code
  code=$(curl -s -o "$2" -w '%{http_code}' "$BASE$1")
  [ "$code" = 200 ] || { log "GET $1: $code"; tail -5 "$WORK/report.log" >&2; exit 1; }
}
fetch / "$WORK/www/index.html"
fetch "/?as_of=$AS_OF" "$WORK/asof.html"
fetch /report.csv "$WORK/report.csv"
fetch "/measures/$ONE" "$WORK/measure.html"
CSV_ROWS=$(($(wc -l <"$WORK/report.csv") - 1))
[ "$CSV_ROWS" -eq "$MEASURES" ] || { log "CSV: expected $MEASURES rows, found $CSV_ROWS"; exit 1; }
for f in "$WORK/www/index.html" "$WORK/asof.html"; do
  grep -qF "b$(printf %04d $((MEASURES - 1)))-" "$f" || { log "$f lacks the last measure"; exit 1; }
done
size_kb() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.0f", b / 1024 }'; }

# wrk_run NAME URL: p50 and p99 in ms and requests/s into $WORK/NAME.txt ("p50 p99 rps").
to_ms() { # wrk's 1.23ms / 456.78us / 1.02s
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) ; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}
wrk_run() { # NAME URL [CONNECTIONS]
  local out=$WORK/$1.wrk p50 p99 rps non2xx
  wrk -t1 -c"${3:-$CONNS}" -d"$DURATION" --latency "$2" >"$out"
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
  rps=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$out")
  if [ -n "$non2xx" ] || grep -q 'Socket errors' "$out"; then
    log "$1: errors under load"; cat "$out" >&2; exit 1
  fi
  echo "$p50 $p99 $rps" >"$WORK/$1.txt"
  log "$1: p50 $p50 ms, p99 $p99 ms, $rps req/s"
}

log "wrk -t1 -c$CONNS -d$DURATION --latency against kpi-report"
wrk_run index "$BASE/"
wrk_run asof "$BASE/?as_of=$AS_OF"
wrk_run csv "$BASE/report.csv"
wrk_run measure "$BASE/measures/$ONE"
log "wrk -c1: one visitor at a time (no queueing behind other pages)"
wrk_run index1 "$BASE/" 1
wrk_run asof1 "$BASE/?as_of=$AS_OF" 1
wrk_run csv1 "$BASE/report.csv" 1
HWM_KB=$(bench_hwm_kb "$RP_PID")
stop_child "$RP_PID"
RP_PID=

# (a) the service's table query through pgbench, as the service sends it: an unnamed
# extended-protocol statement with the same ten parameters for every measure.
log "pgbench -M extended: the report's latest and table queries for $MEASURES measures"
"$PY" - "$ROOT" "$CATALOG" "$AS_OF" "$WORK" <<'EOF'
import datetime, json, re, sys
root, catalog, as_of, work = sys.argv[1:5]
lit = re.compile(r'"((?:[^"\\]|\\.)*)"')
def literals(text):
    return "".join(bytes(s, "utf-8").decode("unicode_escape") if "\\" in s else s
                   for s in lit.findall(text))
hdr = open(root + "/common/kpi_aggregate.h", encoding="utf-8").read()
agg = re.search(r"#define KPI_AGGREGATE_SQL((?:.*\\\n)*.*\n)", hdr).group(1)
src = open(root + "/services/report/report_pages.c", encoding="utf-8").read()
body = re.search(r"static const char SQL_TABLE\[\] =(.*?);\n", src, re.S).group(1)
sql = "".join(literals(agg) if part == "KPI_AGGREGATE_SQL" else literals(part)
              for part in re.split(r"\b(KPI_AGGREGATE_SQL)\b", body))
sql = re.sub(r"\$(\d+)", r":p\1", sql)
open(work + "/table.sql", "w").write(sql + ";\n")
body = re.search(r"static const char SQL_LATEST\[\] =(.*?);\n", src, re.S).group(1)
open(work + "/latest.sql", "w").write(re.sub(r"\$(\d+)", r":p\1", literals(body)) + ";\n")

def fy(y, m):
    return y if m >= 4 else y - 1
ms = json.load(open(catalog, encoding="utf-8"))["measures"]
era = {"R": 2018, "H": 1988}
def fy_num(v):
    v = str(v)
    return int(v) if v.isdigit() else era[v[0]] + int(v[1:])
ids = "{" + ",".join('"%s"' % m["id"] for m in ms) + "}"
wf = "{" + ",".join(str(fy_num(m["window"]["from"])) if m["kind"] == "cumulative" else "NULL" for m in ms) + "}"
wt = "{" + ",".join(str(fy_num(m["window"]["to"])) if m["kind"] == "cumulative" else "NULL" for m in ms) + "}"
ratio = "{" + ",".join("t" if m["kind"] == "ratio" else "f" for m in ms) + "}"
jst = datetime.timezone(datetime.timedelta(hours=9))
def bounds(d, latest):
    end = datetime.datetime(d.year, d.month, d.day, tzinfo=jst) + datetime.timedelta(days=1)
    month = d.replace(day=1)
    mstart = datetime.datetime(month.year, month.month, 1, tzinfo=jst)
    z = lambda t: t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return [ids, wf, wt, str(fy(d.year, d.month)), z(end), z(mstart), ratio, month.isoformat(),
            d.isoformat(), "t" if latest else "f"]
today = datetime.datetime.now(jst).date()
tomorrow = datetime.datetime(today.year, today.month, today.day, tzinfo=jst) + datetime.timedelta(days=1)
for name, vals in (("latest", [ids, tomorrow.isoformat()]),
                   ("asof", bounds(datetime.date.fromisoformat(as_of), False))):
    with open("%s/pgb-%s.args" % (work, name), "w") as f:
        for i, v in enumerate(vals, 1):
            f.write("p%d=%s\n" % (i, v))
EOF
# pgbench_run NAME SQL: p50 p99 (ms) and transactions/s into $WORK/pg-NAME.txt
pgbench_run() {
  local args=() line
  while IFS= read -r line; do args+=(-D "$line"); done <"$WORK/pgb-$1.args"
  (cd "$WORK" && pgbench -n -M extended -c "$CONNS" -j 1 -T "${DURATION%s}" -l \
    --log-prefix="pgb-$1" "${args[@]}" -f "$WORK/$2" "$DB" >"$WORK/pg-$1.out" 2>&1) ||
    { log "pgbench failed"; tail -5 "$WORK/pg-$1.out" >&2; exit 1; }
  if grep -q 'number of failed transactions: [1-9]' "$WORK/pg-$1.out"; then
    log "pgbench: failed transactions"; cat "$WORK/pg-$1.out" >&2; exit 1
  fi
  cat "$WORK"/pgb-"$1".* | awk '{print $3 / 1000}' | sort -n | awk -v out="$WORK/pg-$1.txt" -v d="${DURATION%s}" '
    { v[NR] = $1 }
    END { i50 = int(NR * 0.50); i99 = int(NR * 0.99); if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1;
          printf "%.2f %.2f %.0f\n", v[i50], v[i99], NR / d > out }'
  log "pgbench $1: p50 $(cut -d' ' -f1 "$WORK/pg-$1.txt") ms, p99 $(cut -d' ' -f2 "$WORK/pg-$1.txt") ms"
}
pgbench_run latest latest.sql
pgbench_run asof table.sql

# (b) nginx serving the rendered / as a static file.
if [ -n "$NGINX" ]; then
  log "nginx: the rendered / ($(size_kb "$WORK/www/index.html") KiB) as a static file"
  NG_PORT=$(bench_free_port)
  chmod 755 "$WORK" "$WORK/www"
  chmod 644 "$WORK/www/index.html"
  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/tmp;
  default_type text/html;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$NG_PORT;
    root $WORK/www;
    location / { index index.html; }
  }
}
EOF
  "$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx/stdout.log" 2>&1 &
  NG_PID=$!
  for _ in $(seq 1 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$NG_PORT/" && break
    sleep 0.05
  done
  wrk_run nginx "http://127.0.0.1:$NG_PORT/"
  stop_child "$NG_PID"
  NG_PID=
fi

read -r I50 I99 IRPS <"$WORK/index.txt"
read -r A50 A99 ARPS <"$WORK/asof.txt"
read -r C50 C99 CRPS <"$WORK/csv.txt"
read -r M50 M99 MRPS <"$WORK/measure.txt"
read -r I150 I199 _ <"$WORK/index1.txt"
read -r A150 A199 _ <"$WORK/asof1.txt"
read -r C150 C199 _ <"$WORK/csv1.txt"
read -r PL50 PL99 PLTPS <"$WORK/pg-latest.txt"
read -r PA50 PA99 PATPS <"$WORK/pg-asof.txt"
NX50=- NX99=- NXRPS=-
[ ! -f "$WORK/nginx.txt" ] || read -r NX50 NX99 NXRPS <"$WORK/nginx.txt"

awk -v m="$MEASURES" -v n="$N" -v asof="$AS_OF" -v conns="$CONNS" -v dur="$DURATION" \
  -v i50="$I50" -v i99="$I99" -v irps="$IRPS" -v a50="$A50" -v a99="$A99" -v arps="$ARPS" \
  -v i150="$I150" -v i199="$I199" -v a150="$A150" -v a199="$A199" -v c150="$C150" -v c199="$C199" \
  -v c50="$C50" -v c99="$C99" -v crps="$CRPS" -v m50="$M50" -v m99="$M99" -v mrps="$MRPS" \
  -v pl50="$PL50" -v pl99="$PL99" -v pa50="$PA50" -v pa99="$PA99" \
  -v nx50="$NX50" -v nx99="$NX99" -v nxrps="$NXRPS" -v hwm="$HWM_KB" -v one="$ONE" \
  -v ikb="$(size_kb "$WORK/www/index.html")" -v akb="$(size_kb "$WORK/asof.html")" \
  -v ckb="$(size_kb "$WORK/report.csv")" -v mkb="$(size_kb "$WORK/measure.html")" \
  -v rows="$ROWS" -v totals="$TOTALS" -v att="$ATT" -v hist="$HIST" 'BEGIN {
  ok = "ok"; miss = "MISSED";
  printf "data: %d measures, %d readings stored by kpi-evaluator (%d monthly totals, %d attainment, %d history rows)\n", m, rows, totals, att, hist;
  printf "load: wrk -t1 -c%s -d%s --latency; pgbench -M extended -c%s -j1 -T%s (loopback)\n\n", conns, dur, conns, dur;
  printf "%-26s %7s %9s %9s %7s   %-34s %9s %7s %-17s\n", "page", "KiB", "p50 ms", "p99 ms", "req/s", "baseline (p50 / p99 ms)", "", "ratio", "goal";
  printf "%-26s %7s %9.2f %9.2f %7d   %-34s %9s %7.1f %-17s\n", "GET /", ikb, i50, i99, irps,
    "pgbench latest rows query", pl50 " / " pl99, i99 / pl99, "p99<=100 " (i99 <= 100 ? ok : miss);
  printf "%-26s %7s %9.2f %9.2f %7d   %-34s %9s %7.1f %-17s\n", "GET /?as_of=" asof, akb, a50, a99, arps,
    "pgbench table query, as_of", pa50 " / " pa99, a99 / pa99, "p99<=300 " (a99 <= 300 ? ok : miss);
  printf "%-26s %7s %9.2f %9.2f %7d   %-34s %9s %7.1f %-17s\n", "GET /report.csv", ckb, c50, c99, crps,
    "pgbench latest rows query", pl50 " / " pl99, c99 / pl99, "p99<=100 " (c99 <= 100 ? ok : miss);
  printf "%-26s %7s %9.2f %9.2f %7d   %-34s %9s %7s %-17s\n", "GET /measures/<one>", mkb, m50, m99, mrps,
    "-", "", "-", "-";
  if (nx99 != "-")
    printf "%-26s %7s %9.2f %9.2f %7d   %-34s %9s %7.0f %-17s\n", "GET / vs static file", ikb, i50, i99, irps,
      "nginx-light, same bytes", nx50 " / " nx99, i99 / nx99, "-";
  printf "\none visitor at a time (wrk -c1), p50 / p99 ms: GET / %.2f / %.2f (%s), as_of %.2f / %.2f (%s), CSV %.2f / %.2f (%s)\n",
    i150, i199, i199 <= 100 ? ok : miss, a150, a199, a199 <= 300 ? ok : miss, c150, c199, c199 <= 100 ? ok : miss;
  printf "\nkpi-report peak RSS (VmHWM): %.1f MiB (goal <= 32: %s)\n", hwm / 1024, hwm <= 32768 ? ok : miss;
  printf "measure page: /measures/%s\n", one;
  printf "ratio = service p99 / baseline p99 (how many times the bare query or static file the page costs)\n";
}'
