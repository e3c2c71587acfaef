#!/bin/sh
# Fan-out: nim.rerank_many against a plain libcurl multi program (bench/curl_fanout.c) at the
# same concurrency, the fake upstream holding every request DELAY_MS: throughput, TCP
# connections opened (counted by the fake), and memory per request in flight.
# Usage: sh bench/fanout.sh [DELAY_MS] [LEVELS]   (after make bench; LEVELS: "1 2 4 ... 512")
# Each level sends ten times its concurrency in requests (at least 64).
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DELAY=${1:-100}
LEVELS=${2:-"1 4 16 64 128 256 512"}
ulimit -n 4096 2>/dev/null || true # 512 connections in flight, plus the fake's threads
TMP=$(mktemp -d)
"$BUILD/fakenim" >"$TMP/port" &
FAKE=$!
[ -z "$BENCH_PIDS" ] || echo $FAKE >>"$BENCH_PIDS" # for the test that checks they all end
trap 'kill $FAKE 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
trap 'exit 1' INT TERM HUP PIPE # a reader gone (| head) or a closed terminal ends it too
while ! grep -q PORT "$TMP/port" 2>/dev/null; do sleep 0.05; done
URL="http://127.0.0.1:$(awk '/PORT/{print $2}' "$TMP/port")"
opened() { curl -s "$URL/_fake/stats" | sed 's/.*"connections":\([0-9]*\).*/\1/'; }
PASSAGES='[{"text":"gpu memory bandwidth"},{"text":"cats"},{"text":"tensor cores"}]'
printf '{"model":"%s","query":{"text":"!delay=%s gpu memory"},"passages":%s}' \
    "nvidia/llama-3.2-nv-rerankqa-1b-v2" "$DELAY" "$PASSAGES" >"$TMP/body.json"
printf "%-6s %6s %10s %10s %8s %9s %9s %12s %12s\n" conc reqs "nim req/s" "curl req/s" \
    nim/curl "nim conns" "curl conns" "nim KB/req" "curl KB/req"
for C in $LEVELS; do
    N=$((C * 10)); [ "$N" -ge 64 ] || N=64
    before=$(opened)
    set -- $("$BUILD/nimrank" bench/fanout.lua "$URL" "$DELAY" "$N" "$C")
    nim_s=$1; mid=$(opened)
    set -- $("$BUILD/curl_fanout" "$URL/v1/ranking" "$TMP/body.json" "$N" "$C")
    curl_s=$1; after=$(opened)
    # Memory: one round of C requests, all in flight at once, so the peak holds C requests
    # and their answers, not the results of ten rounds that rerank_many returns.
    set -- $("$BUILD/nimrank" bench/fanout.lua "$URL" "$DELAY" "$C" "$C")
    nim_kb=$(( $2 - $3 ))
    set -- $("$BUILD/curl_fanout" "$URL/v1/ranking" "$TMP/body.json" "$C" "$C")
    curl_kb=$(( $2 - $3 ))
    awk -v c="$C" -v n="$N" -v ns="$nim_s" -v cs="$curl_s" -v nc=$((mid - before - 1)) \
        -v cc=$((after - mid - 1)) -v nk="$nim_kb" -v ck="$curl_kb" 'BEGIN {
        printf "%-6d %6d %10.1f %10.1f %7.2fx %9d %9d %12.1f %12.1f\n", c, n, n / ns, n / cs,
            (n / ns) / (n / cs), nc, cc, nk / c, ck / c }'
done
echo "upstream delay $DELAY ms; connections as the fake counted them (its stats request"
echo "excluded); KB/req = (peak RSS - RSS before) / concurrency, in a separate round of"
echo "exactly concurrency requests (all in flight at once)"
