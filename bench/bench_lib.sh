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

# Exports every variable of $STACK_ENV (PG*, KPI_KAFKA_BOOTSTRAP, KPI_SMTP_URL...).
bench_stack_env_load() {
  set -a
  # shellcheck disable=SC1090
  . "$STACK_ENV"
  set +a
}
