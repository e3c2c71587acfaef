#!/bin/sh
# Client CPU per rerank call, provider by provider, against the fake server's dialects on
# loopback: a descriptor's provider (Cohere's shape, TEI's bare list) beside NIM's own C path.
# The server's time is not counted (it is another process): this is nimrank's cost alone.
# Usage: sh bench/providers.sh [CALLS]   (after `make`)
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
CALLS=${1:-300}
. bench/servers.sh
"$BUILD/fakenim" >"$TMP/fake.port" 2>"$TMP/fake.err" &
started $!
n=0
until grep -q PORT "$TMP/fake.port" 2>/dev/null; do
    n=$((n + 1)); [ $n -lt 100 ] || { cat "$TMP/fake.err" >&2; exit 1; }
    sleep 0.05
done
URL="http://127.0.0.1:$(awk '/PORT/{print $2}' "$TMP/fake.port")"
taskset -c 0 "$BUILD/nimrank" bench/providers.lua "$URL" "$CALLS"
