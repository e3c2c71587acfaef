#!/bin/sh
# Fan-out: nim.rerank_many throughput against concurrency, the fake upstream holding every
# request DELAY_MS, side by side with curl's own --parallel at the same concurrency against
# the same upstream (what the upstream itself allows).
# Usage: sh bench/fanout.sh [DELAY_MS] [REQUESTS]   (after `make`)
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DELAY=${1:-100}
N=${2:-256}
TMP=$(mktemp -d)
"$BUILD/fakenim" >"$TMP/port" &
FAKE=$!
[ -z "$BENCH_PIDS" ] || echo $FAKE >>"$BENCH_PIDS" # for the test that checks they all end
trap 'kill $FAKE 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
trap 'exit 1' INT TERM
while ! grep -q PORT "$TMP/port" 2>/dev/null; do sleep 0.05; done
URL="http://127.0.0.1:$(awk '/PORT/{print $2}' "$TMP/port")"
PASSAGES='[{"text":"gpu memory bandwidth"},{"text":"cats"},{"text":"tensor cores"}]'
printf '{"model":"%s","query":{"text":"!delay=%s gpu memory"},"passages":%s}' \
    "nvidia/llama-3.2-nv-rerankqa-1b-v2" "$DELAY" "$PASSAGES" >"$TMP/body.json"
urls=""
i=0
while [ $i -lt "$N" ]; do urls="$urls $URL/v1/ranking"; i=$((i + 1)); done
printf "%-12s %12s %14s %12s %10s\n" concurrency "nim req/s" "curl req/s" "ideal req/s" "nim/curl"
for C in 1 2 4 8 16 32 64 128; do
    nim_s=$("$BUILD/nimrank" bench/fanout.lua "$URL" "$DELAY" "$N" "$C")
    start=$(date +%s%N)
    curl -s --parallel --parallel-max "$C" --data-binary @"$TMP/body.json" \
        -H "Content-Type: application/json" $urls >/dev/null 2>&1
    end=$(date +%s%N)
    awk -v c="$C" -v n="$N" -v ns="$nim_s" -v cs="$(( end - start ))" -v d="$DELAY" 'BEGIN {
        nr = n / ns; cr = n / (cs / 1e9)
        printf "%-12d %12.1f %14.1f %12.1f %9.0f%%\n", c, nr, cr, c * 1000 / d, nr / cr * 100 }'
done
echo "$N requests, upstream delay $DELAY ms each, fake NIM on loopback"
