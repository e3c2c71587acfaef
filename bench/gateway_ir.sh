#!/bin/sh
# Instructions per gateway request, counted: one `nimrank serve` worker under callgrind behind
# wrk at one connection, run twice (SHORT and LONG seconds); the difference in instructions
# over the difference in requests is what one request costs the worker, start-up and shutdown
# cancelled out. Deterministic where req/s on a shared machine is not. The upstream is nginx
# answering a canned NIM ranking, as in bench/proxy.sh.
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

: >"$TMP/ir"
for D in ${SHORT:-10} ${LONG:-30}; do
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
    BENCH_BODY="$TMP/body.json" BENCH_KEY=$KEY wrk -t 1 -c 1 -d "${D}s" -s "$TMP/post.lua" \
        "http://127.0.0.1:$NIM/rerank" >"$TMP/wrk.out" 2>&1
    kill $SV; wait $SV 2>/dev/null || true
    n=0 # the worker writes its profile as it exits
    until grep -Eqs "^(summary|totals):" "$TMP/cg.$W.out" || [ $n -ge 100 ]; do
        sleep 0.1; n=$((n + 1))
    done
    reqs=$(awk '/^DONE/ {print $2}' "$TMP/wrk.out")
    echo "$reqs $(awk '/^(summary|totals):/ {print $2; exit}' "$TMP/cg.$W.out")" >>"$TMP/ir"
done
awk -v n="$N" 'NR == 1 {r = $1; i = $2}
    NR == 2 { if ($1 <= r) { print "no difference in requests"; exit 1 }
        printf "%d documents: %.0f instructions per request (runs of %d and %d requests)\n",
            n, ($2 - i) / ($1 - r), r, $1 }' \
    "$TMP/ir"
