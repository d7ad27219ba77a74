#!/usr/bin/env bash
# scripts/browser-tools.sh: the browser test's tools, pinned and cached: websocket-client in the
# project venv (.cache/venv, made as scripts/schemathesis.sh makes it) to drive Debian's
# chromium over the DevTools protocol, and axe-core in .cache/node_modules (injected into the
# page, run there). Idempotent; prints the venv's python on stdout.
#   scripts/browser-tools.sh     install what is missing
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${KPI_VENV:-$ROOT/.cache/venv}
WS_VERSION=1.8.0
AXE_VERSION=4.10.2
# The venv belongs to schemathesis.sh (it recreates it when its own stamp is missing), so let
# it make the venv first and only add to it.
"$ROOT/scripts/schemathesis.sh" --install-only
if [ ! -e "$VENV/.kpi-websocket-client-$WS_VERSION" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "websocket-client==$WS_VERSION" >&2
  touch "$VENV/.kpi-websocket-client-$WS_VERSION"
fi
if [ ! -e "$ROOT/.cache/node_modules/axe-core/axe.min.js" ] ||
   ! grep -q "\"version\": \"$AXE_VERSION\"" "$ROOT/.cache/node_modules/axe-core/package.json"; then
  npm install --silent --no-audit --no-fund --prefix "$ROOT/.cache" "axe-core@$AXE_VERSION" >&2
fi
echo "$VENV/bin/python"
