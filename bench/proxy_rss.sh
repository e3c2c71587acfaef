#!/bin/sh
# Memory under many slow requests: 1000 client connections through `nimrank serve` to an
# upstream that holds every request 200 ms (nginx with the echo module, answering a canned
# NIM ranking after echo_sleep), for a few seconds. Reports whether every request completed
# (wrk's non-2xx, socket errors and timeouts) and the summed RSS of the supervisor and its
# workers idle, at peak (sampled every 0.2 s under load) and idle again afterwards. The same
# load straight at the upstream first shows the upstream itself keeps up.
# Targets (issue): all complete with RSS under 100 MB; idle RSS per worker under 10 MB.
# Usage: sh bench/proxy_rss.sh   (root installs wrk, nginx-light and its echo module)
# Environment: RSS_CONNS (default 1000), RSS_SECONDS (default 10), DELAY_MS (default 200),
# NIMRANK_WORKERS (default: cores), NIMRANK_LOG_LEVEL (default: nimrank's own), BUILD.
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
CONNS=${RSS_CONNS:-1000}
SECS=${RSS_SECONDS:-10}
DELAY=${DELAY_MS:-200}
WORKERS=${NIMRANK_WORKERS:-$(nproc 2>/dev/null || echo 2)}
KEY=sk-bench-rss
sh .ci/deps.sh wrk nginx-light libnginx-mod-http-echo
[ -x "$BUILD/nimrank" ] || make -s
. bench/servers.sh # $TMP, started/stop, pick_port, wait_http, rss_tree, nginx_upstream
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

UPATH=/v1/retrieval/nvidia/bench-slow/reranking
# the upstream holds each request DELAY ms (nginx's echo module), then answers a ranking
ANSWER='{"rankings":[{"index":2,"logit":3.25},{"index":0,"logit":1.5},{"index":1,"logit":-2.75}],'
ANSWER=$ANSWER'"usage":{"prompt_tokens":12,"total_tokens":12}}'
SLEEP=$(awk -v d="$DELAY" 'BEGIN { printf "%.3f", d / 1000 }')
nginx_upstream "load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;" 16384 \
    "location = $UPATH { echo_sleep $SLEEP; echo -n '$ANSWER'; }"

printf '{"model":"slow","query":"gpu memory bandwidth","top_n":3,"documents":[%s]}' \
    '"gpu memory bandwidth","cats","tensor cores and memory"' >"$TMP/body.json"
{ wrk_post; cat <<'EOF'; } >"$TMP/post.lua"
function done(s, lat)
  local e = s.errors
  io.write(("RESULT %d %.6f %d %d %d %d %d %d %d %d %d\n"):format(s.requests,
    s.duration / 1e6, lat.mean, lat:percentile(50), lat:percentile(99), lat.max, e.status,
    e.connect, e.read, e.write, e.timeout))
end
EOF
# load URL: runs wrk in the background (PID in WRK), the report in $TMP/wrk.out
load() {
    BENCH_BODY="$TMP/body.json" BENCH_KEY=$KEY wrk -t 2 -c "$CONNS" -d "${SECS}s" \
        --timeout 30s -s "$TMP/post.lua" "$1" >"$TMP/wrk.out" 2>&1 &
    WRK=$!
    PIDS="$PIDS $WRK"
}
report() { # name: one line from wrk's RESULT
    awk -v name="$1" -v conns="$CONNS" '/^RESULT/ {
        printf "%-8s %7d requests  %7.0f req/s  in flight %5.0f  p50 %6.1f ms  p99 %6.1f ms", \
            name, $2, $2 / $3, $2 / $3 * $4 / 1e6, $5 / 1000, $6 / 1000
        printf "  max %6.1f ms\n%-8s non-2xx %d, connect %d, read %d, write %d, timeouts %d", \
            $7 / 1000, "", $8, $9, $10, $11, $12
        bad = $8 + $9 + $10 + $11 + $12
        print bad ? "  <- NOT all completed" : "  (all completed)"; found = 1 }
        END { if (!found) print name ": wrk gave no result" }' "$TMP/wrk.out"
}
echo "$CONNS connections for $SECS s, upstream delay $DELAY ms"
load "http://127.0.0.1:$UP$UPATH"
wait $WRK || true
report direct

if ! "$BUILD/nimrank" serve --help >/dev/null 2>&1; then
    echo "nimrank serve: not available"
    exit 0
fi
cat >"$TMP/config.yaml" <<EOF
model_list:
  - model_name: slow
    litellm_params: { model: nvidia_nim/nvidia/bench-slow, api_base: "http://127.0.0.1:$UP/v1" }
general_settings:
  master_key: $KEY
EOF
start_nimrank # $NIM, $SERVE
code=$(curl -s -o "$TMP/check.json" -w '%{http_code}' -H "Authorization: Bearer $KEY" \
    -H 'Content-Type: application/json' --data-binary "@$TMP/body.json" \
    "http://127.0.0.1:$NIM/rerank")
[ "$code" = 200 ] || { echo "nimrank answered $code: $(head -c 300 "$TMP/check.json")"; exit 1; }
sleep 1
set -- $(rss_tree $SERVE)
IDLE=$1; IDLE_PARTS="$*"; IDLE_PSS=$(pss_tree $SERVE)
load "http://127.0.0.1:$NIM/rerank"
PEAK=0
while kill -0 $WRK 2>/dev/null; do # sampled here, in this shell: no sampler to clean up
    set -- $(rss_tree $SERVE)
    [ "${1:-0}" -le "$PEAK" ] || { PEAK=$1; PEAK_PARTS="$*"; }
    sleep 0.2
done
wait $WRK || true
report nimrank
sleep 1
set -- $(rss_tree $SERVE)
AFTER=$1; AFTER_PARTS="$*"; AFTER_PSS=$(pss_tree $SERVE)
kill -0 $SERVE 2>/dev/null || echo "nimrank serve: exited during the run"

# "total own child..." -> the supervisor's own and each worker's RSS, in MB.
parts() {
    shift
    printf "supervisor %s MB" "$(mb "$1")"; shift
    [ $# -eq 0 ] && { printf ", workers are threads\n"; return; }
    printf ", workers"; for k in "$@"; do printf " %s" "$(mb "$k")"; done; printf " MB\n"
}
printf "RSS idle   %6s MB: " "$(mb "$IDLE")"; parts $IDLE_PARTS
printf "RSS peak   %6s MB: " "$(mb "$PEAK")"; parts $PEAK_PARTS
printf "RSS after  %6s MB: " "$(mb "$AFTER")"; parts $AFTER_PARTS
set -- $IDLE_PARTS
shift 2
max=0
for k in "$@"; do [ "$k" -le "$max" ] || max=$k; done
[ $# -gt 0 ] || max=$((IDLE / WORKERS))
echo "targets: peak $(mb "$PEAK") MB (< 100 MB); idle per worker $(mb "$max") MB (< 10 MB)"
echo "(RSS summed over the supervisor and its $WORKERS workers: shared pages count in each;"
echo "PSS, which splits them, idle $(mb "$IDLE_PSS") MB, after $(mb "$AFTER_PSS") MB)"
