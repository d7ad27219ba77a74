#!/bin/sh
# tools/check_env_docs.sh: the environment variables the code reads and the ones the docs name
# are the same set (docs/deployment.md, "Environment variables").
#   tools/check_env_docs.sh [ROOT]             check the tree at ROOT (default: this repository)
#   tools/check_env_docs.sh --self-test [ROOT] prove the check fails on an undocumented variable
#
# 1. code -> docs: every name the C code under common/ proto/ services/ tools/ writes as a string
#    literal ("KPI_...", "DATABASE_URL", "PGOPTIONS": what getenv and kpi_env_* are given) is
#    named in docs/*.md or README.md. Names the code builds are added: kpi_kafka.c reads
#    "<topic variable>_PARTITIONS" for each KPI_TOPIC_* name. A literal ending in "_" is a prefix
#    family (KPI_KAFKA_PROP_): the docs name it as `KPI_KAFKA_PROP_*`, and any name in it counts
#    as documented.
# 2. docs -> code: every KPI_* word in docs/*.md or README.md occurs in some file outside the docs
#    (C, scripts, CMake, compose, deploy/, tests) or belongs to a family the code reads, so a
#    renamed or removed variable cannot stay documented. `KPI_HTTP_*`-style mentions (a word
#    ending in "_") need some such name to start with them.
# 3. deploy/systemd/*.env.example set only names the code reads: a misspelt variable in an env
#    file is silently ignored by the service.
# Exits 0 when all agree, 1 with one line per disagreement.
set -eu

if [ "${1:-}" = "--self-test" ]; then
  root=${2:-$(cd "$(dirname "$0")/.." && pwd)}
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # The whole tree but the generated and cached parts, so the copy passes as the tree does.
  (cd "$root" && tar -cf - --exclude=./build --exclude=./.cache --exclude=./.git \
    --exclude=node_modules .) | (cd "$tmp" && tar -xf -)
  "$0" "$tmp" >/dev/null || { echo "self-test: the unmodified copy does not pass" >&2; exit 1; }
  # An undocumented variable read by a service must fail the check and be named.
  printf 'static const char *probe = "KPI_SELFTEST_UNDOCUMENTED";\n' >>"$tmp/common/kpi_env.c"
  if out=$("$0" "$tmp" 2>&1); then
    echo "self-test: an undocumented variable passed the check" >&2
    exit 1
  fi
  echo "$out" | grep -q 'KPI_SELFTEST_UNDOCUMENTED' || { echo "self-test: not named: $out" >&2; exit 1; }
  # A documented variable that no code reads must fail too.
  sed -i 's/KPI_SELFTEST_UNDOCUMENTED/KPI_LOG_LEVEL/' "$tmp/common/kpi_env.c"
  printf '\nSet `KPI_SELFTEST_STALE` to nothing.\n' >>"$tmp/docs/deployment.md"
  if out=$("$0" "$tmp" 2>&1); then
    echo "self-test: a stale documented variable passed the check" >&2
    exit 1
  fi
  echo "$out" | grep -q 'KPI_SELFTEST_STALE' || { echo "self-test: not named: $out" >&2; exit 1; }
  echo "self-test: the check fails on an undocumented and on a stale variable"
  exit 0
fi

root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Exceptions, one "NAME  reason" a line, in both directions: a test-only variable (a test hook
# such as KPI_TEST_CRASH_AFTER_COMMIT, compiled only with -DKPI_TEST_HOOKS=ON) that need not be
# documented, or a documented name no file uses. Keep it short; today every test hook is
# documented in docs/evaluator.md, so the list is empty.
sed 's/[[:space:]].*//' <<'EOF' | grep -v '^$' >"$tmp/exceptions" || true
EOF

# 1. What the code reads.
find common proto services tools -name '*.[ch]' -exec cat {} + |
  grep -oE '"(KPI_[A-Z0-9_]+|DATABASE_URL|PGOPTIONS)"' | tr -d '"' | sort -u >"$tmp/code"
grep -E '^KPI_TOPIC_' "$tmp/code" | grep -v '_REPLICATION$' | sed 's/$/_PARTITIONS/' >>"$tmp/code"
sort -u -o "$tmp/code" "$tmp/code"
grep -E '_$' "$tmp/code" >"$tmp/families" || true

# Every KPI_ word of the docs; `KPI_KAFKA_PROP_*` gives the word KPI_KAFKA_PROP_.
docs=$(ls docs/*.md README.md)
# shellcheck disable=SC2086
grep -ohE '(KPI_[A-Z0-9_]+|DATABASE_URL|PGOPTIONS)' $docs | sort -u >"$tmp/docs"

in_family() { # NAME: 0 when NAME starts with a prefix family the code reads
  while read -r fam; do
    case "$1" in "$fam"*) return 0 ;; esac
  done <"$tmp/families"
  return 1
}

status=0
while read -r n; do
  grep -qxF "$n" "$tmp/docs" && continue
  grep -qxF "$n" "$tmp/exceptions" && continue
  case "$n" in *_) ;; *) in_family "$n" && continue ;; esac
  echo "undocumented: $n is read by the code but named in no docs/*.md or README.md"
  status=1
done <"$tmp/code"

# 2. Every KPI_ word outside the docs (generated and cached trees, and this script with its
# self-test names, excluded).
grep -rhoE --exclude-dir=docs --exclude-dir=build --exclude-dir=.cache --exclude-dir=.git \
  --exclude-dir=node_modules --exclude=README.md --exclude=check_env_docs.sh 'KPI_[A-Z0-9_]+' . 2>/dev/null |
  sort -u >"$tmp/used" || true
while read -r n; do
  case "$n" in DATABASE_URL | PGOPTIONS) continue ;; esac
  grep -qxF "$n" "$tmp/used" && continue
  grep -qxF "$n" "$tmp/code" && continue
  grep -qxF "$n" "$tmp/exceptions" && continue
  in_family "$n" && continue
  case "$n" in
  *_) grep -q "^$n" "$tmp/used" && continue ;;
  esac
  echo "stale: $n is named in the docs but no code, script or test uses it"
  status=1
done <"$tmp/docs"

# 3. The env files of deploy/ set only what the code reads.
for f in deploy/systemd/*.env.example; do
  [ -f "$f" ] || continue
  grep -oE '^#? *[A-Z][A-Z0-9_]*=' "$f" | sed 's/^# *//; s/=$//' | sort -u | while read -r n; do
    grep -qxF "$n" "$tmp/code" && continue
    in_family "$n" && continue
    echo "unknown: $f sets $n, which no service reads"
    echo x >>"$tmp/bad_env"
  done
done
[ -f "$tmp/bad_env" ] && status=1

[ $status -eq 0 ] && echo "environment variables: $(wc -l <"$tmp/code") read by the code, all documented; every documented one exists"
exit $status
