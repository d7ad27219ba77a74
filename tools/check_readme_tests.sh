#!/bin/sh
# tools/check_readme_tests.sh: every integration test file is named in README.md's test list
# (ctest unit.readme_tests). A name counts when it appears literally (`test_ingest_api`) or in
# a brace group (`test_evaluator_{flow,alerts}`).
#   check_readme_tests.sh SOURCE_DIR
set -eu
src=${1:-.}
readme=$src/README.md
# The brace groups spelled out: test_a_{b,c} -> test_a_b test_a_c.
names=$(grep -oE 'test_[a-z0-9_]*(\{[a-z0-9_,]+\})?' "$readme" | awk '{
  i = index($0, "{")
  if (i == 0) { print; next }
  n = split(substr($0, i + 1, length($0) - i - 1), parts, ",")
  for (k = 1; k <= n; k++) print substr($0, 1, i - 1) parts[k]
}' | sort -u)
missing=0
for f in "$src"/tests/integration/test_*.c; do
  t=$(basename "$f" .c)
  if ! printf '%s\n' "$names" | grep -qx "$t"; then
    echo "README.md does not name tests/integration/$t.c in its test list" >&2
    missing=1
  fi
done
[ "$missing" = 0 ] && echo "README.md names every tests/integration/test_*.c"
exit "$missing"
