#!/bin/sh
# tools/check_prometheus_rules.sh: deploy/prometheus/kpi-alerts.yml is valid, every alert is
# proven by deploy/prometheus/kpi-alerts.test.yml, and it alerts only on series the services
# export.
#   tools/check_prometheus_rules.sh SOURCE_DIR
# 1. `promtool check rules` (syntax, PromQL, templates);
# 2. `promtool test rules`: each alert fires on a failing synthetic series, not on a healthy one;
# 3. every kpi_* series named in an expression is registered by the code (a string literal in
#    common/ or services/), so a renamed metric cannot leave an alert that never fires;
# 4. every alert of the rules file has a test case.
# promtool is in Debian's prometheus package (scripts/bootstrap.sh installs it).
set -eu
[ $# -eq 1 ] || { echo "usage: $0 SOURCE_DIR" >&2; exit 2; }
dir=$1/deploy/prometheus
command -v promtool >/dev/null || { echo "promtool not installed (Debian package prometheus)" >&2; exit 1; }
status=0
promtool check rules "$dir/kpi-alerts.yml" || status=1
(cd "$dir" && promtool test rules kpi-alerts.test.yml) || status=1

for m in $(grep -E '^ *expr:' "$dir/kpi-alerts.yml" | grep -oE 'kpi_[a-z0-9_]+' | sort -u); do
  if ! grep -rqF "\"$m\"" "$1/common" "$1/services"; then
    echo "kpi-alerts.yml: $m is not a metric any service registers"
    status=1
  fi
done
for a in $(sed -n 's/^ *- alert: *//p' "$dir/kpi-alerts.yml"); do
  grep -qE "alertname: *$a\$" "$dir/kpi-alerts.test.yml" || { echo "kpi-alerts.test.yml: no test for $a"; status=1; }
done
[ $status -eq 0 ] && echo "prometheus rules: valid, tested, on exported series only"
exit $status
