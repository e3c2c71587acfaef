#!/bin/sh
# CPU per rerank call, nimrank against raw libcurl. The baseline (build/curl_baseline, from
# bench/curl_baseline.c) posts the byte-identical body of one request with every document on
# one reused easy handle; nimrank makes the same call through nim.rerank (above 512 documents
# it sends batches of 512, four at a time, and merges them). Both talk to the same local
# upstream, fakenim --canned, which answers at once with a ranking of every passage it got,
# so the clients' own work is what is measured. ~200-byte documents; CPU = user + system of
# the client process over many calls; medians of alternating rounds.
# Usage: sh bench/overhead.sh [SCALE]   (after make bench; SCALE multiplies the call counts;
#        CALLS=N sets them all to N, as the test that runs this script tiny does)
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SCALE=${1:-1}
ROUNDS=${ROUNDS:-3}
TMP=$(mktemp -d)
FAKES=""
# The fakes are started in this shell (never inside $(...), where their PIDs would be lost),
# and stopped however the script ends.
stop() { [ -z "$FAKES" ] || kill $FAKES 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap stop EXIT
trap 'exit 1' INT TERM HUP PIPE # a reader gone (| head) or a closed terminal ends it too
"$BUILD/fakenim" --canned 20000 >"$TMP/port" &
FAKES="$FAKES $!"
[ -z "$BENCH_PIDS" ] || echo $! >>"$BENCH_PIDS" # for the test that checks they all end
while ! grep -q PORT "$TMP/port" 2>/dev/null; do sleep 0.05; done
URL="http://127.0.0.1:$(awk '/PORT/{print $2}' "$TMP/port")"
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

printf "%-6s %6s %12s %12s %8s %8s %12s %12s %10s %7s\n" docs calls "nim cpu µs" \
    "curl cpu µs" ratio target "nim wall µs" "curl wall µs" "tables µs" floor
for level in "1 2000 1.3" "100 1000 -" "500 400 2" "1000 200 3" "10000 20 3" \
    "1000 200 - lean"; do
    set -- $level
    DOCS=$1; N=${CALLS:-$(( $2 * SCALE ))}; TARGET=$3; LEAN=$4
    : >"$TMP/nc"; : >"$TMP/nw"; : >"$TMP/cc"; : >"$TMP/cw"; : >"$TMP/ft"
    r=0
    while [ $r -lt "$ROUNDS" ]; do # alternate the two, so drift hits both alike
        "$BUILD/nimrank" bench/overhead.lua "$URL/v1/ranking" "$N" "$DOCS" "$TMP/body.json" \
            $LEAN >"$TMP/nim.out"
        cut -d' ' -f1 "$TMP/nim.out" >>"$TMP/nc"; cut -d' ' -f2 "$TMP/nim.out" >>"$TMP/nw"
        "$BUILD/curl_baseline" "$URL/v1/ranking" "$TMP/body.json" "$N" >"$TMP/curl.out"
        cut -d' ' -f1 "$TMP/curl.out" >>"$TMP/cc"; cut -d' ' -f2 "$TMP/curl.out" >>"$TMP/cw"
        [ -n "$LEAN" ] || "$BUILD/nimrank" bench/overhead.lua "$URL/v1/ranking" "$N" "$DOCS" \
            "$TMP/floor.json" floor | cut -d' ' -f1 >>"$TMP/ft"
        r=$((r + 1))
    done
    nc=$(median <"$TMP/nc"); cc=$(median <"$TMP/cc")
    nw=$(median <"$TMP/nw"); cw=$(median <"$TMP/cw"); ft=$(median <"$TMP/ft")
    floor=$(awk -v f="$ft" -v c="$cc" \
        'BEGIN{if (f == "") print "-"; else printf "%.2fx", (c + f) / c}')
    printf "%-6s %6s %12s %12s %7sx %8s %12s %12s %10s %7s\n" "$DOCS${LEAN:+*}" "$N" "$nc" "$cc" \
        "$(awk -v a="$nc" -v b="$cc" 'BEGIN{printf "%.2f", a / b}')" "${TARGET}x" "$nw" "$cw" \
        "${ft:--}" "$floor"
done
echo "CPU per call in µs (median of $ROUNDS alternating rounds); nimrank splits more than 512"
echo "documents into batches of 512, curl posts one request; target: the issue's ratio bound;"
echo "* top_n = 5, return_documents = false (curl: the same body, every ranking returned)"
echo "tables: CPU of only building the tables nim.rerank's result is made of (a Lua constructor,"
echo "no request); floor: (curl + tables) / curl, the lowest ratio any binding returning them has"
set -- $("$BUILD/nimrank" bench/batching.lua "$URL/v1/ranking" 5000 "${CALLS:-100}")
echo "5000 documents: auto-batched $1 ms ($3 requests) against one request $2 ms:" \
    "$(awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2fx", a / b}') (target 1.1x);" \
    "wall, medians of calls that alternate"
