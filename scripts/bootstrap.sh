#!/usr/bin/env bash
# scripts/bootstrap.sh: installs what the build, the tests and the local stack need.
#   1. Debian packages (only when one is missing: apt-get update + install); nginx-light and
#      prometheus are there for `nginx -t` and `promtool` on deploy/ (config.nginx,
#      config.prometheus), not to run them;
#   2. Apache Kafka jars from Maven Central (scripts/kafka/pom.xml) into .cache/kafka/libs,
#      skipped when the stamp matches the pom's sha256;
#   3. the pinned schemathesis in .cache/venv (scripts/schemathesis.sh), for the contract test.
# Idempotent; a second run takes a few seconds. Env: KPI_SKIP_APT=1 skips step 1.
set -euo pipefail

t0=$(date +%s.%N)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

packages=(
  build-essential cmake pkg-config
  librdkafka-dev libpq-dev libcjson-dev libuv1-dev libhttp-parser-dev
  libcurl4-openssl-dev libssl-dev libcmocka-dev libcsv-dev
  postgresql openjdk-17-jre-headless maven python3-aiosmtpd python3-yaml python3-venv
  kcat wrk curl openssl ca-certificates
  clang libfuzzer-14-dev libclang-rt-14-dev
  chromium fonts-noto-cjk
  nginx-light prometheus
)

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "bootstrap: not root and no sudo" >&2; exit 1; }
  sudo_cmd=(sudo)
fi

# --- 1. Debian packages -----------------------------------------------------------------
if [ "${KPI_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${packages[@]}"; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$st" = "install ok installed" ] || missing+=("$p")
  done
  # npm (for axe-core in the browser tests): Debian's nodejs and npm only where no node is
  # installed; an image with NodeSource's nodejs has npm inside it, and Debian's npm
  # conflicts with that package.
  command -v npm >/dev/null || missing+=(nodejs npm)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing ${missing[*]}"
    "${sudo_cmd[@]}" apt-get update
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  else
    echo "bootstrap: Debian packages present"
  fi
fi

# --- 2. Kafka jars ------------------------------------------------------------------------
pom="$root/scripts/kafka/pom.xml"
libs="$root/.cache/kafka/libs"
stamp="$root/.cache/kafka/libs.stamp"
want=$(sha256sum "$pom" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && compgen -G "$libs/kafka_2.13-*.jar" >/dev/null; then
  echo "bootstrap: Kafka jars up to date ($libs)"
else
  echo "bootstrap: fetching Kafka jars with Maven into $libs"
  rm -rf "$libs" "$stamp"
  mkdir -p "$libs"
  mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime
  compgen -G "$libs/kafka_2.13-*.jar" >/dev/null || { echo "bootstrap: no kafka jar in $libs" >&2; exit 1; }
  echo "$want" >"$stamp"
  echo "bootstrap: $(find "$libs" -name '*.jar' | wc -l) jars"
fi

# --- 3. schemathesis ---------------------------------------------------------------------
bash "$root/scripts/schemathesis.sh" --install-only

t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "bootstrap: done in %.1f s\n", b - a }'
