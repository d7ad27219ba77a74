#!/bin/sh
# tools/check_systemd_units.sh: deploy/systemd's units load and keep the promises of
# docs/deployment.md ("systemd").
#   tools/check_systemd_units.sh SOURCE_DIR BINARY_DIR
# 1. Every service unit carries the keys the operations rest on: restart on failure but not on
#    exit 2 (bad configuration), a dynamic user, ProtectSystem=strict and the hardening set, env
#    files that exist as deploy/systemd/kpi-*.env.example, SIGHUP reload, journald logging, and
#    ordering after kpi-migrate.service.
# 2. `systemd-analyze verify` (no running systemd needed) loads a copy of the units whose
#    ExecStart= names the binaries built in BINARY_DIR and whose EnvironmentFile= names the
#    examples; any warning (an unknown or misspelt key, a bad value) fails the check, although
#    systemd-analyze itself exits 0 on warnings.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 SOURCE_DIR BINARY_DIR" >&2; exit 2; }
src=$1
bin=$2
dir=$src/deploy/systemd
status=0
fail() {
  echo "$*"
  status=1
}

need() { # FILE LINE: the unit has exactly this line
  grep -qxF "$2" "$1" || fail "$(basename "$1"): missing \"$2\""
}

hardening="NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes
PrivateDevices=yes ProtectKernelTunables=yes ProtectKernelModules=yes ProtectControlGroups=yes
RestrictSUIDSGID=yes DynamicUser=yes CapabilityBoundingSet= StandardError=journal"

[ -f "$dir/kpi-migrate.service" ] || fail "kpi-migrate.service: missing"
need "$dir/kpi-migrate.service" "Type=oneshot"
need "$dir/kpi-migrate.service" "ExecStart=/usr/local/bin/kpi-admin migrate"
for svc in ingest evaluator notifier report; do
  u=$dir/kpi-$svc.service
  [ -f "$u" ] || { fail "kpi-$svc.service: missing"; continue; }
  need "$u" "ExecStart=/usr/local/bin/kpi-$svc"
  need "$u" "Restart=on-failure"
  need "$u" "RestartPreventExitStatus=2"
  need "$u" 'ExecReload=/bin/kill -HUP $MAINPID'
  for kv in $hardening; do need "$u" "$kv"; done
  grep -qE '^After=.*kpi-migrate\.service' "$u" || fail "kpi-$svc.service: not ordered after kpi-migrate.service"
  # The services that use the database must not start when the migration failed.
  [ "$svc" = ingest ] || need "$u" "Requires=kpi-migrate.service"
done
for u in "$dir"/*.service; do
  for e in $(sed -n 's|^EnvironmentFile=-\{0,1\}/etc/kpi/\(.*\)\.env$|\1|p' "$u"); do
    [ -f "$dir/kpi-$e.env.example" ] || fail "$(basename "$u"): no deploy/systemd/kpi-$e.env.example"
  done
done

# 2. systemd-analyze verify on a copy pointing at the build tree.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for u in "$dir"/*.service; do
  sed -e "s|^ExecStart=/usr/local/bin/kpi-admin|ExecStart=$bin/tools/kpi-admin|" \
    -e "s|^ExecStart=/usr/local/bin/kpi-\([a-z]*\)|ExecStart=$bin/services/\1/kpi-\1|" \
    -e "s|^EnvironmentFile=/etc/kpi/\([a-z]*\)\.env|EnvironmentFile=$dir/kpi-\1.env.example|" \
    "$u" >"$tmp/$(basename "$u")"
done
if ! (cd "$tmp" && systemd-analyze verify ./*.service) >"$tmp/verify.out" 2>&1; then
  fail "systemd-analyze verify failed:"
  cat "$tmp/verify.out"
elif [ -s "$tmp/verify.out" ]; then
  fail "systemd-analyze verify warned:"
  cat "$tmp/verify.out"
fi

[ $status -eq 0 ] && echo "systemd units: required keys present; systemd-analyze verify clean"
exit $status
