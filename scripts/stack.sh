#!/usr/bin/env bash
# scripts/stack.sh: a throwaway local stack (PostgreSQL 15, Kafka 3.9 KRaft, SMTP to Maildir)
# for the integration tests and local runs.
#
#   scripts/stack.sh start  DIR   start everything in DIR, write DIR/stack.env when ready
#   scripts/stack.sh stop   DIR   stop what DIR's pid files name, remove data, keep logs
#                                 (a durable DIR keeps its data)
#   scripts/stack.sh status DIR   show what runs (exit 0 when all up, 3 otherwise)
#   scripts/stack.sh wipe   DIR   stop, then remove DIR and its data (durable or not)
#
# Ports are picked free at start, so several stacks can run at once. Env:
#   STACK_TIMEOUT=60        seconds each component may take to answer
#   STACK_PG_FAST=1         fsync/synchronous_commit/full_page_writes off (throwaway data)
#   STACK_DURABLE=1         at start: DIR becomes durable (marker DIR/durable): stop keeps
#                           PostgreSQL's cluster, Kafka's log dirs and the Maildir, the next
#                           start reuses them (no initdb, same cluster id, same ports when
#                           free), fsync on whatever STACK_PG_FAST says; only wipe removes them
#   STACK_PG_BIN=...        PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   STACK_KAFKA_HEAP=512m   broker heap
#   STACK_KAFKA_JVM_OPTS=   extra/override JVM flags for the broker
#   DATABASE_URL or PGHOST  set: no PostgreSQL is started; PG*/DATABASE_URL are passed
#                           through to stack.env
# See docs/stack.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=/usr/bin/python3
TIMEOUT=${STACK_TIMEOUT:-60}
PG_FAST=${STACK_PG_FAST:-1}
PG_BIN=${STACK_PG_BIN:-/usr/lib/postgresql/15/bin}
KAFKA_LIBS=${STACK_KAFKA_LIBS:-$ROOT/.cache/kafka/libs}
KAFKA_HEAP=${STACK_KAFKA_HEAP:-512m}
KAFKA_JVM_OPTS=${STACK_KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto}

log() { printf 'stack: %s\n' "$*"; }
err() { printf 'stack: ERROR: %s\n' "$*" >&2; }
now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

usage() {
  echo "usage: $0 start|stop|status|wipe DIR" >&2
  exit 2
}

# Runs a command as the PostgreSQL owner: the postgres system user when we are root
# (initdb refuses root), else ourselves.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pid_alive PIDFILE MARKER: the pid in PIDFILE runs and its command line contains MARKER
# (guards against a recycled pid).
pid_alive() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(head -n1 "$1")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"
}

# free_ports N: N distinct TCP ports, free on 127.0.0.1 right now, outside the kernel's
# ephemeral range (so outgoing connections do not grab them meanwhile), random so two
# stacks starting together do not pick the same ones.
free_ports() {
  "$PY" - "$1" <<'EOF'
import random, socket, sys
n, got, socks = int(sys.argv[1]), [], []
for _ in range(2000):
    p = random.randint(20000, 32000)
    if p in got:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close()
        continue
    socks.append(s); got.append(p)
    if len(got) == n:
        break
print(" ".join(map(str, got)))
EOF
}

# closefds_exec CMD...: execs CMD with every fd above 2 closed, so that a daemon never keeps
# a pipe of whoever called us (ctest, CI runners, $(...) callers) open.
# shellcheck disable=SC2016  # expanded by the inner bash
CLOSEFDS_EXEC=(bash -c 'for f in /proc/$$/fd/*; do f=${f##*/}; [ "$f" -gt 2 ] && eval "exec $f>&-"; done 2>/dev/null; exec "$@"' closefds_exec)

# launch PIDFILE LOGFILE CMD...: runs CMD detached (own session, stdin from /dev/null,
# stdout+stderr to LOGFILE, no other fd) and writes its pid (the pid CMD execs into) to
# PIDFILE.
LAUNCHED=()
launch() {
  local pidfile=$1 logfile=$2
  shift 2
  rm -f "$pidfile"
  # shellcheck disable=SC2016  # expanded by the inner sh
  setsid "${CLOSEFDS_EXEC[@]}" sh -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" \
    </dev/null >"$logfile" 2>&1 &
  LAUNCHED+=("$!:$pidfile")
  for _ in $(seq 50); do [ -s "$pidfile" ] && return 0; sleep 0.05; done
  return 1
}

# launched_exits: the exit status (128 + N for signal N) of each process launched by this
# shell (Kafka, SMTP) that has ended, so that a start-up failure with empty logs still says
# why. Running means a live child of this shell: bash may have reaped an ended one already
# and its pid be another process's now, but wait still returns the status bash kept.
launched_exits() {
  local e pid st stat
  for e in ${LAUNCHED[@]+"${LAUNCHED[@]}"}; do
    pid=${e%%:*}
    stat=$(cat "/proc/$pid/stat" 2>/dev/null || true)
    stat=${stat##*) } # after the command name: state, ppid, ...
    [[ $stat == [^Z]\ "$BASHPID"\ * ]] && continue
    st=0
    wait "$pid" 2>/dev/null || st=$?
    echo "---- pid $pid (${e#*:}) exited with status $st ----"
  done
}

# stop_pid PIDFILE MARKER NAME: TERM, wait up to 15 s, then KILL.
stop_pid() {
  local pidfile=$1 marker=$2 name=$3 pid
  if pid_alive "$pidfile" "$marker"; then
    pid=$(head -n1 "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
      pid_alive "$pidfile" "$marker" || break
      sleep 0.1
    done
    if pid_alive "$pidfile" "$marker"; then
      log "$name did not stop on TERM; killing"
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 50); do pid_alive "$pidfile" "$marker" || break; sleep 0.1; done
    fi
    log "$name stopped (pid $pid)"
  fi
  rm -f "$pidfile"
}

pg_root() {
  if [ -s "$DIR/pg.root" ]; then cat "$DIR/pg.root"; else echo "$DIR"; fi
}

# A durable DIR (STACK_DURABLE=1 at its first start) keeps its data across stop/start.
durable() { [ -f "$DIR/durable" ]; }

# ports_free PORT...: every PORT can be bound on 127.0.0.1 right now.
ports_free() {
  "$PY" - "$@" <<'EOF'
import socket, sys
for p in sys.argv[1:]:
    s = socket.socket()
    # As the servers bind: a port whose old connections are in TIME_WAIT is free for them.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", int(p)))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
EOF
}

do_stop() {
  local pgr pgpid
  [ -d "$DIR" ] || return 0
  stop_pid "$DIR/smtp.pid" "$DIR/maildir" smtp
  stop_pid "$DIR/kafka.pid" "$DIR/kafka/server.properties" kafka
  pgr=$(pg_root)
  if [ -f "$pgr/pg/postmaster.pid" ]; then
    pgpid=$(head -n1 "$pgr/pg/postmaster.pid")
    # Throwaway data needs no checkpoint; a durable cluster gets a clean shutdown.
    local mode=immediate
    durable && mode=fast
    as_pg "$PG_BIN/pg_ctl" -D "$pgr/pg" -m "$mode" -w -t 30 stop >>"$DIR/pg-ctl.log" 2>&1 || true
    # Still the postmaster of this cluster (its pid file stays while it runs): a pid that
    # exited may be another process's by now.
    if pid_alive "$pgr/pg/postmaster.pid" "$pgr/pg"; then
      kill -KILL "$pgpid" 2>/dev/null || true
      sleep 0.5
    fi
    log "postgres stopped (pid $pgpid)"
  fi
  rm -f "$DIR/stack.env"
  # A durable DIR keeps everything; a throwaway one loses its data and keeps its logs.
  if durable; then return 0; fi
  rm -rf "$pgr/pg" "$pgr/pg-sock" "$DIR/kafka/data" "$DIR/maildir"
  if [ "$pgr" != "$DIR" ]; then
    if [ -L "$DIR/pg.log" ] && [ -f "$pgr/pg.log" ]; then
      rm -f "$DIR/pg.log"; cp "$pgr/pg.log" "$DIR/pg.log"
    fi
    rm -rf "$pgr"; rm -f "$DIR/pg.root"
  fi
  find "$DIR" -maxdepth 2 -name '*.log' -size +50M -delete 2>/dev/null || true
}

# do_wipe: stop, then remove the data (the cluster's root in /tmp too) and DIR, naming each.
do_wipe() {
  local pgr
  [ -d "$DIR" ] || { log "nothing to remove: $DIR does not exist"; return 0; }
  do_stop
  pgr=$(pg_root)
  if [ "$pgr" != "$DIR" ] && [ -d "$pgr" ]; then rm -rf "$pgr"; log "removed $pgr"; fi
  rm -rf "$DIR"
  log "removed $DIR"
}

# fail COMPONENT MESSAGE LOGFILE...: report (with the tail of each non-empty log), stop what
# was started, exit 1.
fail() {
  local comp=$1 msg=$2 f
  shift 2
  err "$comp: $msg (log: $*)"
  for f in "$@"; do
    if [ -s "$f" ]; then
      echo "---- last lines of $f ----" >&2
      tail -n 20 "$f" >&2 || true
    else
      echo "---- $f is empty or missing ----" >&2
    fi
  done
  launched_exits >&2
  trap - INT TERM
  do_stop >&2 || true
  exit 1
}

on_signal() {
  trap - INT TERM
  # The trap may run inside a redirection (e.g. initdb >log): talk to the saved stderr.
  exec 1>&9 2>&9
  err "interrupted; stopping what was started in $DIR"
  do_stop >&2 || true
  exit 130
}

# wait_until COMPONENT LOGFILE STARTED PIDCHECK PROBE...: runs PROBE until it succeeds;
# fails when TIMEOUT seconds have passed since STARTED ($SECONDS at launch) or when
# PIDCHECK (shell code) says the process died.
wait_until() {
  local comp=$1 logfile=$2 deadline=$(($3 + TIMEOUT)) alive=$4
  shift 4
  # No redirection here: a signal trap would run inside it (and print nowhere); the probes
  # are quiet themselves.
  until "$@"; do
    if ! eval "$alive"; then
      # shellcheck disable=SC2086  # logfile may name several files
      fail "$comp" "process exited during startup" $logfile
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      # shellcheck disable=SC2086
      fail "$comp" "did not answer within ${TIMEOUT}s (STACK_TIMEOUT)" $logfile
    fi
    sleep 0.2
  done
}

smtp_probe() {
  local line
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  IFS= read -r -t 3 line <&3 || { exec 3<&-; return 1; }
  printf 'QUIT\r\n' >&3 2>/dev/null || true
  exec 3<&- 3>&-
  [[ $line == 220* ]]
}

kafka_probe() {
  kcat -b "127.0.0.1:$1" -L -m 3 2>/dev/null | grep -q 'broker 1 at 127.0.0.1'
}

# pg_prepare PORT: sets the caller's pgr (the cluster's root) and pg_log, makes the cluster
# (initdb) unless a durable one is there already, and (re)writes its settings file
# stack.conf, which postgresql.conf includes: port, socket and fsync follow every start.
pg_prepare() {
  local pg_port=$1 fresh=1
  pgr=$DIR pg_log=$DIR/pg.log
  if durable && [ -s "$DIR/pg.root" ]; then
    pgr=$(cat "$DIR/pg.root") pg_log=$pgr/pg.log
  # postgres must be able to enter DIR, and the socket path must fit sun_path (107 bytes);
  # else the cluster lives in /tmp and DIR/pg.log links to its log (copied back at stop).
  elif [ ${#DIR} -gt 70 ] || ! as_pg test -x "$DIR" 2>/dev/null; then
    pgr=$(mktemp -d /tmp/kpi-pg.XXXXXX)
    echo "$pgr" >"$DIR/pg.root"
    pg_log=$pgr/pg.log
    ln -sfn "$pg_log" "$DIR/pg.log"
    durable && log "postgres: $DIR is too long or closed to user postgres; the durable cluster lives in $pgr"
  fi
  if durable && [ -f "$pgr/pg/PG_VERSION" ]; then fresh=0; fi
  [ "$fresh" = 1 ] && rm -f "$pg_log"
  mkdir -p "$pgr/pg" "$pgr/pg-sock"
  chmod 700 "$pgr/pg"
  touch "$pg_log"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$pgr/pg" "$pgr/pg-sock" "$pg_log"
    [ "$pgr" = "$DIR" ] || chown postgres: "$pgr"
  fi
  as_pg test -x "$pgr/pg" || fail postgres "user postgres cannot enter $pgr" "$DIR/pg.log"
  if [ "$fresh" = 1 ]; then
    local nosync=--no-sync
    durable && nosync=
    # shellcheck disable=SC2086  # nosync is one flag or none
    as_pg "$PG_BIN/initdb" -D "$pgr/pg" -A trust -U postgres $nosync -E UTF8 \
      --locale=C.UTF-8 >"$DIR/pg-initdb.log" 2>&1 ||
      fail postgres "initdb failed" "$DIR/pg-initdb.log"
    printf '%s\n' "# added by scripts/stack.sh" "include = 'stack.conf'" >>"$pgr/pg/postgresql.conf"
  fi
  {
    echo "# written by scripts/stack.sh at every start"
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $pg_port"
    echo "unix_socket_directories = '$pgr/pg-sock'"
    echo "max_connections = 200"
    echo "shared_buffers = 128MB"
    echo "logging_collector = off"
    echo "log_min_messages = warning"
    if [ "$PG_FAST" = 1 ]; then
      echo "fsync = off"
      echo "synchronous_commit = off"
      echo "full_page_writes = off"
    fi
  } >"$pgr/pg/stack.conf"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$pgr/pg/stack.conf"
}

do_start() {
  local t_all t_pg t_k t_s k_started s_started
  t_all=$(now)
  # fd 9 = our stderr, for the signal trap (daemons are started without it).
  exec 9>&2
  trap on_signal INT TERM

  # A previous stack here (stale pid files or data) goes first; a durable one keeps its data.
  do_stop
  mkdir -p "$DIR" "$DIR/kafka"
  [ "${STACK_DURABLE:-0}" = 1 ] && : >"$DIR/durable"
  # Durable data is fsync'ed whatever STACK_PG_FAST says.
  if durable; then PG_FAST=0; fi

  if ! compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null; then
    err "kafka: no Kafka jars in $KAFKA_LIBS; run scripts/bootstrap.sh first"
    exit 1
  fi
  if [ ! -x "$PG_BIN/initdb" ]; then
    local alt
    alt=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n1)
    [ -n "$alt" ] && [ -z "${STACK_PG_BIN:-}" ] && PG_BIN=$alt
  fi

  local pg_port k_port k_cport s_port k_sport ports=
  # A durable stack keeps its ports while they are free, so its addresses stay the same.
  if durable && [ -s "$DIR/ports" ] && ports_free $(cat "$DIR/ports"); then ports=$(cat "$DIR/ports"); fi
  [ -n "$ports" ] || ports=$(free_ports 5)
  read -r pg_port k_port k_cport s_port k_sport <<<"$ports"
  [ -n "$s_port" ] || { err "could not find free ports"; exit 1; }
  echo "$ports" >"$DIR/ports"

  # ---- Kafka: format + run in one detached process (in parallel with PostgreSQL) ----
  local kdir=$DIR/kafka cluster_id retention_h=24
  # A durable stack's log dirs are formatted once, with the cluster id it keeps.
  if durable && [ -s "$kdir/cluster.id" ]; then
    cluster_id=$(cat "$kdir/cluster.id")
  else
    cluster_id=$("$PY" -c 'import base64,os;print(base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="))')
  fi
  echo "$cluster_id" >"$kdir/cluster.id"
  # Kafka's own default (7 days) for a durable stack; a test's records live a day.
  durable && retention_h=168
  cat >"$kdir/server.properties" <<EOF
# generated by scripts/stack.sh
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$k_cport
listeners=PLAINTEXT://127.0.0.1:$k_port,CONTROLLER://127.0.0.1:$k_cport,SASL_PLAINTEXT://127.0.0.1:$k_sport
advertised.listeners=PLAINTEXT://127.0.0.1:$k_port,SASL_PLAINTEXT://127.0.0.1:$k_sport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
# A SASL/PLAIN listener with one user, so that the clients' KPI_KAFKA_PROP_* passthrough of
# security settings is tested against a real broker (tests/integration/test_kafka_sasl.c).
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_kpi-test="kpi-test-secret";
log.dirs=$kdir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
group.initial.rebalance.delay.ms=0
log.retention.hours=$retention_h
log.segment.bytes=67108864
EOF
  : >"$kdir/server.log"
  local -a java_cmd
  # shellcheck disable=SC2206  # KAFKA_JVM_OPTS is a flag list on purpose
  java_cmd=(java "-Xmx$KAFKA_HEAP" "-Xms64m" $KAFKA_JVM_OPTS -Djava.awt.headless=true
    "-Dlog4j.configuration=file:$ROOT/scripts/kafka/log4j.properties"
    "-Dkafka.logs.dir=$kdir" -cp "$KAFKA_LIBS/*")
  t_k=$(now) k_started=$SECONDS
  # shellcheck disable=SC2016  # expanded by the inner sh
  launch "$DIR/kafka.pid" "$kdir/stdout.log" sh -c \
    'c=$0 p=$1; shift; "$@" kafka.tools.StorageTool format --ignore-formatted -t "$c" -c "$p" && exec "$@" kafka.Kafka "$p"' \
    "$cluster_id" "$kdir/server.properties" "${java_cmd[@]}" ||
    fail kafka "could not launch" "$kdir/stdout.log"

  # ---- SMTP (aiosmtpd, Maildir) ----
  t_s=$(now) s_started=$SECONDS
  launch "$DIR/smtp.pid" "$DIR/smtp.log" \
    "$PY" -m aiosmtpd -n -l "127.0.0.1:$s_port" -c aiosmtpd.handlers.Mailbox "$DIR/maildir" ||
    fail smtp "could not launch" "$DIR/smtp.log"

  # ---- PostgreSQL (unless PG*/DATABASE_URL point at one) ----
  local use_ext_pg=0 pgr pg_log pg_msg
  if [ -n "${DATABASE_URL:-}" ] || [ -n "${PGHOST:-}" ]; then
    use_ext_pg=1
    pg_msg="postgres: external (${PGHOST:+PGHOST=$PGHOST}${PGHOST:+ }${DATABASE_URL:+DATABASE_URL}), not started; PG*/DATABASE_URL passed through"
  else
    t_pg=$(now)
    pg_prepare "$pg_port"
    "${CLOSEFDS_EXEC[@]}" bash "$ROOT/scripts/stack.sh" pg_ctl_start "$PG_BIN/pg_ctl" "$pgr/pg" "$pg_log" \
      </dev/null >"$DIR/pg-ctl.log" 2>&1 ||
      fail postgres "pg_ctl start failed or timed out after ${TIMEOUT}s" "$DIR/pg.log" "$DIR/pg-ctl.log"
    wait_until postgres "$DIR/pg.log" "$SECONDS" "[ -f '$pgr/pg/postmaster.pid' ]" \
      "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -t 2
    pg_msg="postgres: 127.0.0.1:$pg_port (socket $pgr/pg-sock) ready in $(since "$t_pg") s"
  fi

  wait_until smtp "$DIR/smtp.log" "$s_started" "pid_alive '$DIR/smtp.pid' '$DIR/maildir'" smtp_probe "$s_port"
  local smtp_msg kafka_msg
  smtp_msg="smtp: 127.0.0.1:$s_port -> $DIR/maildir ready in $(since "$t_s") s"
  wait_until kafka "$kdir/server.log $kdir/stdout.log" "$k_started" "pid_alive '$DIR/kafka.pid' '$kdir/server.properties'" \
    kafka_probe "$k_port"
  kafka_msg="kafka: 127.0.0.1:$k_port (controller $k_cport) ready in $(since "$t_k") s"

  # ---- stack.env: one KEY=VALUE per line, written last (its presence means "ready") ----
  {
    echo "KPI_STACK_DIR=$DIR"
    echo "KPI_KAFKA_BOOTSTRAP=127.0.0.1:$k_port"
    echo "KPI_STACK_KAFKA_SASL_BOOTSTRAP=127.0.0.1:$k_sport"
    echo "KPI_STACK_KAFKA_SASL_USER=kpi-test"
    echo "KPI_STACK_KAFKA_SASL_PASSWORD=kpi-test-secret"
    if [ "$use_ext_pg" = 1 ]; then
      local v
      for v in DATABASE_URL PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGSSLMODE; do
        [ -n "${!v:-}" ] && echo "$v=${!v}"
      done
    else
      echo "PGHOST=127.0.0.1"
      echo "PGPORT=$pg_port"
      echo "PGUSER=postgres"
      echo "PGDATABASE=postgres"
    fi
    echo "KPI_SMTP_URL=smtp://127.0.0.1:$s_port"
    echo "KPI_MAILDIR=$DIR/maildir"
  } >"$DIR/stack.env.tmp"
  mv "$DIR/stack.env.tmp" "$DIR/stack.env"
  trap - INT TERM

  log "$pg_msg"
  log "$kafka_msg"
  log "$smtp_msg"
  log "ready in $(since "$t_all") s; env in $DIR/stack.env"
}

do_status() {
  local up=0 total=0 pgr
  if [ -f "$DIR/stack.env" ]; then sed 's/^/  /' "$DIR/stack.env"; fi
  total=$((total + 1))
  if pid_alive "$DIR/kafka.pid" "$DIR/kafka/server.properties"; then
    log "kafka: running (pid $(head -n1 "$DIR/kafka.pid"))"; up=$((up + 1))
  else log "kafka: not running"; fi
  total=$((total + 1))
  if pid_alive "$DIR/smtp.pid" "$DIR/maildir"; then
    log "smtp: running (pid $(head -n1 "$DIR/smtp.pid"))"; up=$((up + 1))
  else log "smtp: not running"; fi
  pgr=$(pg_root)
  if [ -f "$pgr/pg/postgresql.conf" ]; then
    total=$((total + 1))
    if as_pg "$PG_BIN/pg_ctl" -D "$pgr/pg" status >/dev/null 2>&1; then
      log "postgres: running (pid $(head -n1 "$pgr/pg/postmaster.pid"))"; up=$((up + 1))
    else log "postgres: not running"; fi
  elif grep -qE '^(DATABASE_URL|PGHOST)=' "$DIR/stack.env" 2>/dev/null; then
    log "postgres: external"
  fi
  [ "$up" -eq "$total" ] && [ -f "$DIR/stack.env" ]
}

# internal: pg_ctl start through as_pg (so that closefds_exec can run it)
if [ "${1:-}" = pg_ctl_start ]; then
  as_pg "$2" -D "$3" -l "$4" -w -t "$TIMEOUT" start
  exit
fi

[ $# -eq 2 ] || usage
cmd=$1
case $2 in
  /*) DIR=$2 ;;
  *) DIR=$PWD/$2 ;;
esac
DIR=${DIR%/}
[[ $DIR =~ [[:space:]] ]] && { err "DIR must not contain white space: $DIR"; exit 2; }
if [ -z "$DIR" ] || [ "$DIR" = / ]; then err "refusing DIR=/"; exit 2; fi

case $cmd in
  start) do_start ;;
  stop) do_stop; log "stopped $DIR" ;;
  wipe) do_wipe ;;
  status) if do_status; then exit 0; else exit 3; fi ;;
  *) usage ;;
esac
