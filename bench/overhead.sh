#!/bin/sh
# Per-call cost of nim.rerank against the cost of posting the same pre-built body with plain
# curl (one curl process, N requests on one connection), side by side, same local upstream.
# Two upstreams: the scoring fake NIM (realistic, but its Lua scoring of 1 MB varies by +-20%
# and drowns small differences), and the same fake with --canned (reads the body, answers at
# once with a prebuilt ranking of every document: the client's own cost, isolated).
# Usage: sh bench/overhead.sh [CALLS]   (after `make`)
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
N=${1:-200}
TMP=$(mktemp -d)
FAKES=""
# The fakes are started in this shell (never inside $(...), where their PIDs would be lost),
# and stopped however the script ends.
stop() { [ -z "$FAKES" ] || kill $FAKES 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap stop EXIT
trap 'exit 1' INT TERM
start_fake() { # port file, args...: sets URL
    out=$1; shift
    "$BUILD/fakenim" "$@" >"$out" &
    FAKES="$FAKES $!"
    [ -z "$BENCH_PIDS" ] || echo $! >>"$BENCH_PIDS" # for the test that checks they all end
    while ! grep -q PORT "$out" 2>/dev/null; do sleep 0.05; done
    URL="http://127.0.0.1:$(awk '/PORT/{print $2}' "$out")"
}
ROUNDS=${ROUNDS:-3}
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

measure() { # label, url, docs
    LABEL=$1; URL=$2; DOCS=$3
    : >"$TMP/nw"; : >"$TMP/nc"; : >"$TMP/cw"; : >"$TMP/cc"
    urls=""
    i=0
    while [ $i -lt "$N" ]; do urls="$urls $URL/v1/ranking"; i=$((i + 1)); done
    r=0
    while [ $r -lt "$ROUNDS" ]; do # alternate the two, so drift in the upstream hits both
        line=$("$BUILD/nimrank" bench/overhead.lua "$URL" "$N" "$DOCS" "$TMP/body.json")
        echo "$line" | cut -d' ' -f3 >>"$TMP/nw"
        echo "$line" | cut -d' ' -f4 >>"$TMP/nc"
        curl -s -o /dev/null --data-binary @"$TMP/body.json" -H "Content-Type: application/json" \
            "$URL/v1/ranking" # warm-up
        start=$(date +%s%N)
        /usr/bin/env time -f "%U %S" -o "$TMP/time" curl -s --data-binary @"$TMP/body.json" \
            -H "Content-Type: application/json" -H "Accept: application/json" $urls >/dev/null
        end=$(date +%s%N)
        awk -v a="$start" -v b="$end" -v n="$N" 'BEGIN{printf "%.3f\n", (b-a)/1e6/n}' >>"$TMP/cw"
        awk -v n="$N" '{printf "%.3f\n", ($1+$2)*1000/n}' "$TMP/time" >>"$TMP/cc"
        r=$((r + 1))
    done
    nw=$(median <"$TMP/nw"); nc=$(median <"$TMP/nc")
    cw=$(median <"$TMP/cw"); cc=$(median <"$TMP/cc")
    printf "%-9s %5s %6s %12s %12s %11s %11s %9s %9s\n" "$LABEL" "$DOCS" "$N" "$nw" "$cw" \
        "$nc" "$cc" "$(awk -v a="$nw" -v b="$cw" 'BEGIN{printf "%+.1f%%", (a-b)/b*100}')" \
        "$(awk -v a="$nc" -v b="$cc" -v w="$cw" 'BEGIN{printf "%+.1f%%", (a-b)/w*100}')"
}

printf "%-9s %5s %6s %12s %12s %11s %11s %9s %9s\n" upstream docs calls "nim wall" "curl wall" \
    "nim cpu" "curl cpu" "wall ovh" "cpu ovh"
start_fake "$TMP/p0" --max-passages 1000
SCORING=$URL
for DOCS in 100 1000; do measure scoring "$SCORING" "$DOCS"; done
for DOCS in 100 1000; do
    start_fake "$TMP/p$DOCS" --max-passages 1000 --canned "$DOCS"
    measure canned "$URL" "$DOCS"
done
echo "times in ms per call; medians of $ROUNDS alternating rounds;"
echo "wall ovh = (nim wall - curl wall) / curl wall;"
echo "cpu ovh = (nim client CPU - curl client CPU) / curl wall: nimrank's own work per exchange"
