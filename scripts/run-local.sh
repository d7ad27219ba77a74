#!/usr/bin/env bash
# scripts/run-local.sh: the whole pipeline on this machine — installs what is missing, builds,
# starts a local PostgreSQL, Kafka and SMTP sink (scripts/stack.sh), creates the topics, and
# runs ingest, evaluator, notifier and report on the shipped catalog until Ctrl-C.
#   KPI_RUN_DIR   state, logs and the Maildir (default ./run)
#   KPI_CATALOG   catalog (default config/catalog.json)
#   --no-wait     start everything, print, and return (stop with: scripts/run-local.sh stop)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUN=${KPI_RUN_DIR:-$ROOT/run}
BIN=$ROOT/build/release
SERVICES=(ingest evaluator notifier report)

stop_all() {
  for s in "${SERVICES[@]}"; do
    if [ -s "$RUN/$s.pid" ]; then
      kill -TERM "$(cat "$RUN/$s.pid")" 2>/dev/null || true
    fi
  done
  for s in "${SERVICES[@]}"; do
    if [ -s "$RUN/$s.pid" ]; then
      pid=$(cat "$RUN/$s.pid")
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$RUN/$s.pid"
    fi
  done
  bash scripts/stack.sh stop "$RUN/stack" >/dev/null 2>&1 || true
}

if [ "${1:-}" = stop ]; then
  stop_all
  echo "stopped"
  exit 0
fi

mkdir -p "$RUN/logs"
bash scripts/bootstrap.sh
cmake -S . -B "$BIN" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BIN" -j"$(nproc)" >/dev/null
stop_all
bash scripts/stack.sh start "$RUN/stack"
set -a
# shellcheck disable=SC1091
. "$RUN/stack/stack.env"
# shellcheck disable=SC1091
. config/sample-tokens.env
set +a
export KPI_CATALOG=${KPI_CATALOG:-$ROOT/config/catalog.json}
# The shipped catalog's departments are samples whose tokens are in config/sample-tokens.env:
# the services refuse them unless told this is a local run (docs/security.md).
export KPI_ALLOW_SAMPLE_TOKENS=${KPI_ALLOW_SAMPLE_TOKENS:-1}
export DATABASE_URL=${DATABASE_URL:-postgresql://$PGUSER@$PGHOST:$PGPORT/$PGDATABASE}
export KPI_INGEST_LISTEN=${KPI_INGEST_LISTEN:-127.0.0.1:8080}
export KPI_EVALUATOR_LISTEN=${KPI_EVALUATOR_LISTEN:-127.0.0.1:8081}
export KPI_NOTIFIER_LISTEN=${KPI_NOTIFIER_LISTEN:-127.0.0.1:8082}
export KPI_REPORT_LISTEN=${KPI_REPORT_LISTEN:-127.0.0.1:8083}
# The owners' mails link to the measure's page on the report.
export KPI_REPORT_BASE_URL=${KPI_REPORT_BASE_URL:-http://$KPI_REPORT_LISTEN}
export KPI_NOTIFY_GROUP_WAIT_MS=${KPI_NOTIFY_GROUP_WAIT_MS:-5000}

"$BIN/tools/kpi-admin" topics
"$BIN/tools/kpi-admin" migrate
# The report reads with the read-only group's rights, as in a deployment: a login role
# `reader` in kpi_reader (the throwaway cluster trusts local connections).
psql -q "$DATABASE_URL" -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reader')
  THEN CREATE ROLE reader LOGIN IN ROLE kpi_reader; END IF; END \$\$"
REPORT_DATABASE_URL=postgresql://reader@$PGHOST:$PGPORT/$PGDATABASE

for s in "${SERVICES[@]}"; do
  if [ "$s" = report ]; then
    DATABASE_URL=$REPORT_DATABASE_URL setsid "$BIN/services/$s/kpi-$s" >>"$RUN/logs/$s.log" 2>&1 </dev/null &
  else
    setsid "$BIN/services/$s/kpi-$s" >>"$RUN/logs/$s.log" 2>&1 </dev/null &
  fi
  echo $! >"$RUN/$s.pid"
done
sleep 1
echo
echo "KPI pipeline is up (state in $RUN):"
for s in "${SERVICES[@]}"; do
  if kill -0 "$(cat "$RUN/$s.pid")" 2>/dev/null; then
    echo "  kpi-$s    running, log $RUN/logs/$s.log"
  else
    echo "  kpi-$s    NOT running: see $RUN/logs/$s.log"
  fi
done
echo "  entry      http://$KPI_INGEST_LISTEN/entry   (departments' entry page; tokens in config/sample-tokens.env)"
echo "  ingest     http://$KPI_INGEST_LISTEN/v1/measurements"
echo "  attainment http://$KPI_EVALUATOR_LISTEN/v1/attainment"
echo "  report     http://$KPI_REPORT_LISTEN/   (KPI table; /report.csv for Excel)"
echo "  kafka      $KPI_KAFKA_BOOTSTRAP    postgres $DATABASE_URL"
echo "  mail       $KPI_SMTP_URL -> Maildir $KPI_MAILDIR"
echo "  mails link to $KPI_REPORT_BASE_URL/measures/<id>; the latest, decoded: see README.md \"Try it\""
echo
echo "Report a measurement (sample token of 企画課):"
echo "  curl -s -H 'Authorization: Bearer $KPI_TOKEN_KIKAKU' -H 'Content-Type: application/json' \\"
echo "    -d '{\"measure_id\":\"g2-uiturn-4-supporters\",\"observed_at\":\"$(date +%F)\",\"value\":31,\"unit\":\"person\"}' \\"
echo "    http://$KPI_INGEST_LISTEN/v1/measurements"

if [ "${1:-}" = --no-wait ]; then exit 0; fi
trap 'echo; echo stopping; stop_all; exit 0' INT TERM
echo "Ctrl-C stops everything."
while true; do sleep 3600; done
