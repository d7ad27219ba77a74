#!/usr/bin/env bash
# scripts/schemathesis.sh: runs a pinned schemathesis from the project's own venv (.cache/venv),
# creating the venv on first use. Starts nothing: point it at services that already run
# (tests/integration/test_http_contract.c does that against the test stack).
#
#   scripts/schemathesis.sh --install-only     create/refresh the venv, run nothing
#   scripts/schemathesis.sh run SCHEMA --url URL ...   any `schemathesis` arguments
#
# The venv is made with the first python3 on PATH that is not Debian's /usr/bin/python3
# (Debian's is kept for the system's own tools such as aiosmtpd; see docs/stack.md), and falls
# back to it only when nothing else is there. Env:
#   KPI_VENV=DIR                 venv location (default .cache/venv)
#   KPI_SCHEMATHESIS_VERSION=V   pinned version (default below)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${KPI_VENV:-$ROOT/.cache/venv}
VERSION=${KPI_SCHEMATHESIS_VERSION:-4.32.5}

pick_python() {
  local d
  local IFS=:
  for d in $PATH; do
    [ -n "$d" ] || continue
    case "$d" in /usr/bin | /bin) continue ;; esac
    if [ -x "$d/python3" ]; then
      echo "$d/python3"
      return
    fi
  done
  echo /usr/bin/python3
}

stamp="$VENV/.kpi-schemathesis-$VERSION"
if [ ! -e "$stamp" ]; then
  py=$(pick_python)
  echo "schemathesis.sh: creating $VENV with $py ($("$py" --version 2>&1))" >&2
  rm -rf "$VENV"
  "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "schemathesis==$VERSION" >&2
  touch "$stamp"
fi
if [ "${1:-}" = --install-only ]; then exit 0; fi
# Through the interpreter, not the console script: a script's #! line holds the path the venv
# was made at, which breaks when the folder is reached through another path (a symlink).
exec "$VENV/bin/python" -m schemathesis.cli "$@"
