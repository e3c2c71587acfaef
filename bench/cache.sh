#!/bin/sh
# The response cache through one `nimrank serve` instance: requests per second when every
# request is a cache hit (local, and Redis) against no cache; and what a miss costs at one
# connection (p50, p99), every request a new one (its query numbered), against no cache with the
# same requests: a Redis miss is a GET and a SET on top of the upstream call. The upstream is
# nginx answering a canned NIM ranking at once, so the gateway and its cache are what is
# measured; Redis is a redis-server of its own on loopback (--save '' --appendonly no).
# Usage: sh bench/cache.sh   (root installs wrk, nginx-light and redis-server when missing)
# Environment: BENCH_SECONDS (per point, default 5), CONNS (connections for req/s, default 16),
# DOCS (documents per request, default 10), NIMRANK_WORKERS (default 1), BUILD (default build).
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECONDS_PER=${BENCH_SECONDS:-5}
CONNS=${CONNS:-16}
N=${DOCS:-10}
WORKERS=${NIMRANK_WORKERS:-1}
NIMRANK_LOG_LEVEL=${NIMRANK_LOG_LEVEL:-warn} # no line per request
KEY=sk-bench-cache
sh .ci/deps.sh wrk nginx-light redis-server
[ -x "$BUILD/nimrank" ] || make -s
. bench/servers.sh # $TMP, started/stop (every server stopped however this ends), pick_port...

# The request (Cohere-style, N documents of ~200 bytes) and the canned NIM answer.
cohere_body "$N" bench >"$TMP/body.json"
canned_answer "$N" >"$TMP/answer.json"

canned_upstream "/v1/retrieval/nvidia/bench/reranking $TMP/answer.json"

# Redis, through nim.redis (the client on the engine's loop: a command yields, the worker serves).
"$BUILD/nimrank" -e 'require "nim.redis"' >/dev/null 2>&1 ||
    { echo "this build has no nim.redis: run make" >&2; exit 1; }
pick_port; REDIS=$PORT
redis-server --port "$REDIS" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" \
    >"$TMP/redis.log" 2>&1 &
started $!
n=0
until [ "$(redis-cli -p "$REDIS" ping 2>/dev/null)" = PONG ]; do
    n=$((n + 1)); [ $n -lt 100 ] || { cat "$TMP/redis.log"; exit 1; }
    sleep 0.1
done

# config CACHE: none | local | redis
config() {
    {
        echo "model_list:"
        echo "  - model_name: bench"
        echo "    litellm_params: { model: nvidia_nim/nvidia/bench," \
            "api_base: \"http://127.0.0.1:$UP/v1\" }"
        echo "general_settings: { master_key: $KEY }"
        case $1 in
        local) echo "litellm_settings: { cache: true, cache_params: { type: local, ttl: 600 } }" ;;
        redis)
            echo "litellm_settings:"
            echo "  cache: true"
            echo "  cache_params: { type: redis, host: 127.0.0.1, port: $REDIS, ttl: 600 }"
            ;;
        esac
    } >"$TMP/config.yaml"
}
stop_nimrank() {
    kill "$SERVE" 2>/dev/null || true
    n=0
    while kill -0 "$SERVE" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
}

# The wrk scripts: one fixed request (every one a hit once cached), or every request new (its
# query numbered: every one a miss), both printing one RESULT line.
DONE='function done(s, lat)
  local e = s.errors
  io.write(("RESULT %d %.6f %d %d %d\n"):format(s.requests, s.duration / 1e6,
    lat:percentile(50), lat:percentile(99), e.status + e.connect + e.read + e.write + e.timeout))
end'
{ wrk_post; printf "%s\n" "$DONE"; } >"$TMP/same.lua"
{ wrk_post; cat <<'EOF'; printf "%s\n" "$DONE"; } >"$TMP/new.lua"
-- every request a new one: the query numbered (one wrk thread: one counter)
local head, tail = wrk.body:match('^(.-"query":")(.*)$')
local run, n = tostring(os.time()) .. "-" .. tostring(math.random(1, 1e9)), 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, ("%s%s-%d %s"):format(head, run, n, tail))
end
EOF

# point SCRIPT CONNS -> "req/s p50_ms p99_ms errors"
point() {
    BENCH_BODY="$TMP/body.json" BENCH_KEY=$KEY wrk -t 1 -c "$2" -d "${SECONDS_PER}s" \
        --timeout 10s -s "$TMP/$1.lua" "http://127.0.0.1:$NIM/rerank" >"$TMP/wrk.out" 2>&1 || true
    awk '/^RESULT/ { printf "%.0f %.3f %.3f %d\n", $2 / $3, $4 / 1000, $5 / 1000, $6 }' \
        "$TMP/wrk.out"
}
# check WANT_HIT: the request answers 200, and (when caching) says whether it was a hit
check() {
    curl -s -o "$TMP/check.json" -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' --data-binary "@$TMP/body.json" \
        "http://127.0.0.1:$NIM/rerank"
    grep -q '"results":\[{"index"' "$TMP/check.json" ||
        { echo "nimrank answered: $(head -c 300 "$TMP/check.json")" >&2; exit 1; }
    [ -z "$1" ] || grep -q "\"cache_hit\":$1" "$TMP/check.json" ||
        { echo "expected cache_hit $1: $(head -c 300 "$TMP/check.json")" >&2; exit 1; }
}

printf "%-34s %5s %9s %8s %8s %6s\n" point conns req/s "p50 ms" "p99 ms" errors
: >"$TMP/table"
row() { # label conns result...
    label=$1 conns=$2; shift 2
    if [ $# -lt 4 ]; then
        printf "%-34s %5s  wrk failed: %s\n" "$label" "$conns" "$(tail -n 1 "$TMP/wrk.out")"
        return
    fi
    printf "%-34s %5s %9s %8s %8s %6s\n" "$label" "$conns" "$1" "$2" "$3" "$4"
    printf "%s\t%s\t%s\t%s\t%s\t%s\n" "$label" "$conns" "$1" "$2" "$3" "$4" >>"$TMP/table"
}
for CACHE in none local redis; do
    config $CACHE
    start_nimrank
    if [ $CACHE = none ]; then check ""; else check false; check true; fi
    point same "$CONNS" >/dev/null # warm-up
    label="$CACHE: same request"; [ $CACHE = none ] || label="$CACHE: same request (hits)"
    # shellcheck disable=SC2046
    row "$label" "$CONNS" $(point same "$CONNS")
    # shellcheck disable=SC2046
    row "$label" 1 $(point same 1)
    label="$CACHE: new requests"; [ $CACHE = none ] || label="$CACHE: new requests (misses)"
    # shellcheck disable=SC2046
    row "$label" 1 $(point new 1)
    # shellcheck disable=SC2046
    row "$label" "$CONNS" $(point new "$CONNS")
    stop_nimrank
done
awk -F'\t' '{ p50[$1, $2] = $4; rps[$1, $2] = $3 }
    function d(a, b) { return (a == "" || b == "") ? "-" : sprintf("%+.3f ms", a - b) }
    function r(a, b) { return (a == "" || b == "" || b == 0) ? "-" : sprintf("x%.2f", a / b) }
    END {
        printf "\nhits against no cache, req/s at %s connections: local %s, redis %s\n", c,
            r(rps["local: same request (hits)", c], rps["none: same request", c]),
            r(rps["redis: same request (hits)", c], rps["none: same request", c])
        printf "a miss adds, p50 at 1 connection: local %s, redis %s\n",
            d(p50["local: new requests (misses)", 1], p50["none: new requests", 1]),
            d(p50["redis: new requests (misses)", 1], p50["none: new requests", 1])
        printf "a hit against no cache, p50 at 1 connection: local %s, redis %s\n",
            d(p50["local: same request (hits)", 1], p50["none: same request", 1]),
            d(p50["redis: same request (hits)", 1], p50["none: same request", 1]) }' \
    c="$CONNS" "$TMP/table"
echo "wrk: 1 thread, ${SECONDS_PER} s a point; nimrank serve: $WORKERS worker(s), log level" \
    "$NIMRANK_LOG_LEVEL; $N documents of 200 bytes, top_n $N, documents returned;"
echo "upstream: nginx, a canned answer; redis: redis-server $(redis-server --version |
    sed -n 's/.*v=\([^ ]*\).*/\1/p') on loopback through nim.redis"
