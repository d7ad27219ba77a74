#!/bin/sh
# tools/check_call_cycles.sh: no two files of a service call each other both ways.
# For every pair of object files given (one per source file), lists the functions defined in
# one (nm -g --defined-only) and referenced in the other (nm -u), then fails when some pair
# references each other in both directions. A callback registered through a pointer is not a
# reference and is the intended way to report up.
#   tools/check_call_cycles.sh build/rel/services/evaluator/CMakeFiles/*/*.c.o
set -eu
[ $# -ge 2 ] || { echo "usage: $0 OBJ.o OBJ.o..." >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for o in "$@"; do
  n=$(basename "$o" .c.o)
  nm -g --defined-only "$o" | awk '$2 ~ /[TDBR]/ {print $3}' | sort -u >"$tmp/$n.def"
  nm -u "$o" | awk '{print $2}' | sort -u >"$tmp/$n.use"
done
status=0
for a in "$tmp"/*.def; do
  na=$(basename "$a" .def)
  for b in "$tmp"/*.def; do
    nb=$(basename "$b" .def)
    [ "$na" = "$nb" ] && continue
    calls=$(comm -12 "$tmp/$na.use" "$b" | tr '\n' ' ')
    [ -n "$calls" ] && echo "$na.c -> $nb.c: $calls"
    if [ -n "$calls" ] && [ "$na" \< "$nb" ] && [ -n "$(comm -12 "$tmp/$nb.use" "$a")" ]; then
      echo "CYCLE: $na.c <-> $nb.c" >&2
      status=1
    fi
  done
done
[ $status -eq 0 ] && echo "no two files call each other both ways"
exit $status
