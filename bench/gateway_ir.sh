#!/bin/sh
# Instructions per gateway request, counted: one `nimrank serve` worker under callgrind behind
# wrk at one connection, run twice (SHORT and LONG seconds); the difference in instructions
# over the difference in requests is what one request costs the worker, start-up and shutdown
# cancelled out. Deterministic where req/s on a shared machine is not. The same count for nginx
# proxy_pass (one process) in front of the same upstream: the issue's throughput bar, in
# instructions. The upstream is nginx answering a canned NIM ranking, as in bench/proxy.sh.
# Usage: sh bench/gateway_ir.sh [DOCS]   (default 10; root installs wrk, nginx-light, valgrind)
# Environment: SHORT (default 10), LONG (default 30) seconds of wrk per run, BUILD.
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
N=${1:-10}
KEY=sk-bench-ir
sh .ci/deps.sh wrk nginx-light valgrind
[ -x "$BUILD/nimrank" ] || make -s
. bench/servers.sh # $TMP, started/stop, pick_port, wait_http, cohere_body, canned_answer

cohere_body "$N" "bench-$N" >"$TMP/body.json"
canned_answer "$N" >"$TMP/answer.json"
canned_upstream "/v1/retrieval/nvidia/bench-$N/reranking $TMP/answer.json"
cat >"$TMP/config.yaml" <<EOF
model_list:
  - model_name: bench-$N
    litellm_params: { model: nvidia_nim/nvidia/bench-$N, api_base: "http://127.0.0.1:$UP/v1" }
general_settings:
  master_key: $KEY
EOF
{ wrk_post; cat <<'EOF'; } >"$TMP/post.lua"
function done(s) io.write(("DONE %d\n"):format(s.requests)) end
EOF

: >"$TMP/ir.nimrank"
: >"$TMP/ir.nginx"
# profile FILE: waits (up to 10 s) until a stopped process has written its callgrind profile.
profile() {
    n=0
    until grep -Eqs "^(summary|totals):" "$1" || [ $n -ge 100 ]; do sleep 0.1; n=$((n + 1)); done
}
# drive PORT SECONDS: wrk at one connection; the count of requests it made goes to $TMP/reqs.
drive() {
    BENCH_BODY="$TMP/body.json" BENCH_KEY=$KEY wrk -t 1 -c 1 -d "${2}s" -s "$TMP/post.lua" \
        "http://127.0.0.1:$1/rerank" >"$TMP/wrk.out" 2>&1
    awk '/^DONE/ {print $2}' "$TMP/wrk.out" >"$TMP/reqs"
    ! grep -Eq "Non-2xx|Socket errors" "$TMP/wrk.out" || { echo "answers that were not 200:" \
        >&2; cat "$TMP/wrk.out" >&2; exit 1; }
}
for D in ${SHORT:-10} ${LONG:-30}; do
    # (a) nimrank serve, one worker
    pick_port; NIM=$PORT
    : >"$TMP/serve.err"
    valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.%p.out" "$BUILD/nimrank" serve \
        --config "$TMP/config.yaml" --host 127.0.0.1 --port "$NIM" --workers 1 \
        --log-level warn 2>"$TMP/serve.err" &
    SV=$!
    started $SV
    n=0
    until grep -q "listening on" "$TMP/serve.err"; do
        kill -0 $SV 2>/dev/null && [ $n -lt 600 ] || { tail -n 5 "$TMP/serve.err" >&2; exit 1; }
        sleep 0.2; n=$((n + 1))
    done
    W=$(ps -o pid= --ppid $SV | tr -d ' ')
    drive "$NIM" "$D"
    kill $SV; wait $SV 2>/dev/null || true
    unstarted $SV
    profile "$TMP/cg.$W.out" # the worker writes its profile as it exits
    echo "$(cat "$TMP/reqs") $(awk '/^(summary|totals):/ {print $2; exit}' "$TMP/cg.$W.out")" \
        >>"$TMP/ir.nimrank"

    # (b) nginx proxy_pass in front of the same upstream (bench/proxy.sh's), one process
    pick_port; NGX=$PORT
    cat >"$TMP/ngx/proxy.conf" <<EOF
worker_processes 1;
master_process off;
pid $TMP/ngx/proxy.pid;
events { worker_connections 1024; }
http {
    $NGX_COMMON
    upstream nim { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 100000000; }
    server {
        listen 127.0.0.1:$NGX;
        location = /rerank {
            proxy_pass http://nim/v1/retrieval/nvidia/bench-$N/reranking;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    valgrind --tool=callgrind --callgrind-out-file="$TMP/ngx.%p.out" nginx -p "$TMP/ngx" \
        -e "$TMP/ngx/proxy.err" -c "$TMP/ngx/proxy.conf" -g 'daemon off;' 2>"$TMP/ngx.vg" &
    NG=$!
    started $NG
    n=0
    until curl -s -o /dev/null "http://127.0.0.1:$NGX/rerank"; do
        kill -0 $NG 2>/dev/null && [ $n -lt 600 ] || { cat "$TMP/ngx/proxy.err" >&2; exit 1; }
        sleep 0.2; n=$((n + 1))
    done
    drive "$NGX" "$D"
    # valgrind holds a signal until the process's epoll_wait returns: one more request wakes it
    # (one in each run, so it cancels out as the probe does)
    kill $NG; curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$NGX/rerank" || true
    wait $NG 2>/dev/null || true
    unstarted $NG
    profile "$TMP/ngx.$NG.out"
    echo "$(cat "$TMP/reqs") $(awk '/^(summary|totals):/ {print $2; exit}' "$TMP/ngx.$NG.out")" \
        >>"$TMP/ir.nginx"
done
# per_request LABEL NAME: instructions per request from NAME's two runs (start-up, the
# readiness probes and shutdown are in both, so they cancel out).
per_request() {
    awk -v n="$N" -v who="$1" 'NR == 1 {r = $1; i = $2}
        NR == 2 { if ($1 <= r) { print "no difference in requests"; exit 1 }
            printf "%d documents, %s: %.0f instructions per request (runs of %d and %d requests)\n",
                n, who, ($2 - i) / ($1 - r), r, $1 }' "$TMP/ir.$2"
}
per_request "nimrank serve" nimrank
per_request "nginx proxy_pass" nginx
echo "(user-space instructions of the serving process, counted by callgrind; its kernel work is"
echo "not in them)"
