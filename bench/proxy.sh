#!/bin/sh
# The gateway's own cost: wrk against (a) a canned upstream directly, (b) `nimrank serve` in
# front of it, (c) nginx proxy_pass in front of it, with the same request body (10 and 100
# documents, ~200 bytes each) at several concurrencies. The upstream is nginx answering a
# canned NIM ranking at once, so the gateway is what is measured. Prints req/s, p50 and p99
# per point, nimrank/nginx ratios and the p50 each gateway adds at 1 connection; draws latency
# against concurrency to bench/out/proxy.png (data in bench/out/proxy.tsv).
# Usage: sh bench/proxy.sh   (root installs wrk, nginx-light and gnuplot-nox when missing)
# Environment: BENCH_SECONDS (per point, default 5), NIMRANK_WORKERS (default: cores; nginx
# gets as many), LEVELS (connections, default "1 4 16 64 256"), ROUNDS (per point, the median
# by req/s is shown; default 1), WRK_THREADS (default 1: on a small machine wrk's own CPU is
# taken from the servers), NIMRANK_LOG_LEVEL (default warn: no line per request, as nginx
# has no access log here), NIMRANK_SERVE_ARGS (more options), BUILD (default build).
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECONDS_PER=${BENCH_SECONDS:-5}
ROUNDS=${ROUNDS:-1}
LOG_LEVEL=${NIMRANK_LOG_LEVEL:-warn}
WORKERS=${NIMRANK_WORKERS:-$(nproc 2>/dev/null || echo 2)}
LEVELS=${LEVELS:-"1 4 16 64 256"}
WRK_THREADS=${WRK_THREADS:-1}
KEY=sk-bench-proxy
OUT=bench/out
sh .ci/deps.sh wrk nginx-light gnuplot-nox
[ -x "$BUILD/nimrank" ] || make -s
mkdir -p "$OUT"
. bench/servers.sh # $TMP, started/stop, pick_port, wait_http, rss_tree

# The documents, the Cohere-style body every target gets, and the canned NIM answers.
for N in 10 100; do
    cohere_body $N bench-$N >"$TMP/body$N.json"
    canned_answer $N >"$TMP/answer$N.json"
done
MODEL_PATH=/v1/retrieval/nvidia/bench # + -10 or -100 + /reranking

canned_upstream "$MODEL_PATH-10/reranking $TMP/answer10.json" \
    "$MODEL_PATH-100/reranking $TMP/answer100.json"
pick_port; NGX=$PORT
cat >"$TMP/ngx/proxy.conf" <<EOF
worker_processes $WORKERS;
pid $TMP/ngx/proxy.pid;
events { worker_connections 8192; }
http {
    $NGX_COMMON
    upstream nim {
        server 127.0.0.1:$UP;
        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$NGX backlog=4096;
        location / {
            proxy_pass http://nim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
nginx -p "$TMP/ngx" -e "$TMP/ngx/proxy.err" -c "$TMP/ngx/proxy.conf" -g 'daemon off;' &
started $!
wait_http "http://127.0.0.1:$NGX/" $! || { cat "$TMP/ngx/proxy.err" >&2; exit 1; }

# nimrank serve, when this build has it.
pick_port; NIM=$PORT
NIM_OK=""
if "$BUILD/nimrank" serve --help >/dev/null 2>&1; then
    gateway_config "$TMP/config.yaml" 10 100
    : >"$TMP/serve.err" # there before the first look at it
    "$BUILD/nimrank" serve --config "$TMP/config.yaml" --host 127.0.0.1 --port "$NIM" \
        --workers "$WORKERS" --log "$TMP/serve.log" \
        --log-level "$LOG_LEVEL" $NIMRANK_SERVE_ARGS 2>"$TMP/serve.err" &
    started $!
    n=0
    while ! grep -q "listening on" "$TMP/serve.err" && kill -0 $! 2>/dev/null &&
        [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    if grep -q "listening on" "$TMP/serve.err"; then
        NIM_OK=1
    else
        echo "nimrank serve did not start:" >&2; tail -n 5 "$TMP/serve.err" >&2
    fi
fi

{ wrk_post; wrk_result; } >"$TMP/post.lua"
url() { # target docs
    case $1 in
    direct) echo "http://127.0.0.1:$UP$MODEL_PATH-$2/reranking" ;;
    nginx) echo "http://127.0.0.1:$NGX$MODEL_PATH-$2/reranking" ;;
    nimrank) echo "http://127.0.0.1:$NIM/rerank" ;;
    esac
}
# run target docs conns seconds: "req/s p50_ms p99_ms errors", or nothing when wrk fails.
run() {
    t=$WRK_THREADS; [ "$t" -le "$3" ] || t=$3
    BENCH_BODY="$TMP/body$2.json" BENCH_KEY=$KEY wrk -t "$t" -c "$3" -d "${4}s" \
        --timeout 10s -s "$TMP/post.lua" "$(url "$1" "$2")" >"$TMP/wrk.out" 2>&1 || true
    awk '/^RESULT/ { printf "%.0f %.3f %.3f %d\n", $2 / $3, $4 / 1000, $5 / 1000, $6 }' \
        "$TMP/wrk.out"
}
# A wrong answer must not pass for a fast one: every target answers the body once first.
TARGETS="direct nginx"; [ -z "$NIM_OK" ] || TARGETS="$TARGETS nimrank"
for N in 10 100; do
    for T in $TARGETS; do
        code=$(curl -s -o "$TMP/check.json" -w '%{http_code}' -H "Authorization: Bearer $KEY" \
            -H 'Content-Type: application/json' --data-binary "@$TMP/body$N.json" "$(url $T $N)")
        [ "$code" = 200 ] || { echo "$T ($N docs) answered $code:" \
            "$(head -c 300 "$TMP/check.json")" >&2; exit 1; }
        run $T $N 16 1 >/dev/null # warm-up: connections, caches
    done
done

printf "%-5s %6s  %-8s %9s %9s %9s %7s\n" docs conns target req/s "p50 ms" "p99 ms" errors
# The data stays in $TMP until the end: a second run at the same time cannot mix into it.
printf "docs\tconns\ttarget\treq_s\tp50_ms\tp99_ms\terrors\n" >"$TMP/proxy.tsv"
for N in 10 100; do
    for C in $LEVELS; do
        r=0
        rm -f "$TMP"/round.*
        while [ $r -lt "$ROUNDS" ]; do
            for T in $TARGETS; do # interleaved, so drift hits every target alike
                run $T $N $C "$SECONDS_PER" >>"$TMP/round.$T"
            done
            r=$((r + 1))
        done
        for T in direct nginx nimrank; do
            if [ $T = nimrank ] && [ -z "$NIM_OK" ]; then
                printf "%-5s %6s  %-8s nimrank serve: not available\n" $N $C $T
                continue
            fi
            # the round with the median req/s
            set -- $(sort -n "$TMP/round.$T" 2>/dev/null |
                awk '{ l[NR] = $0 } END { print l[int((NR + 1) / 2)] }')
            if [ $# -lt 4 ]; then
                printf "%-5s %6s  %-8s wrk failed: %s\n" $N $C $T "$(tail -n 1 "$TMP/wrk.out")"
                continue
            fi
            printf "%-5s %6s  %-8s %9s %9s %9s %7s\n" $N $C $T "$1" "$2" "$3" "$4"
            printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n" $N $C $T "$1" "$2" "$3" "$4" >>"$TMP/proxy.tsv"
        done
    done
done
cp "$TMP/proxy.tsv" "$OUT/proxy.tsv"

# Ratios and added latency, from the table.
awk -F'\t' 'NR > 1 { k = $1 " " $2; rps[k, $3] = $4; p50[k, $3] = $5; p99[k, $3] = $6
        if (!(k in seen)) { seen[k] = 1; order[++n] = k } }
    function r(a, b) { return (a == "" || b == "" || b == 0) ? "-" : sprintf("%.2f", a / b) }
    function d(a, b) { return (a == "" || b == "") ? "-" : sprintf("%+.3f", a - b) }
    END {
        printf "\n%-5s %6s  %14s %14s %14s\n", "docs", "conns", "req/s nim/ngx", \
            "p50 nim/ngx", "p99 nim/ngx"
        for (i = 1; i <= n; i++) { split(order[i], kc, " "); k = order[i]
            printf "%-5s %6s  %14s %14s %14s\n", kc[1], kc[2], r(rps[k, "nimrank"], \
                rps[k, "nginx"]), r(p50[k, "nimrank"], p50[k, "nginx"]), \
                r(p99[k, "nimrank"], p99[k, "nginx"]) }
        printf "\nadded p50 at 1 connection (gateway p50 - direct p50), ms:\n"
        for (N = 10; N <= 100; N *= 10) { k = N " 1"
            printf "  %3d docs: nimrank %s  nginx %s\n", N, d(p50[k, "nimrank"], \
                p50[k, "direct"]), d(p50[k, "nginx"], p50[k, "direct"]) } }' "$TMP/proxy.tsv"
echo "wrk: $WRK_THREADS thread(s), ${SECONDS_PER} s a point, median req/s of $ROUNDS round(s)," \
    "--timeout 10s"
echo "errors = non-2xx answers and socket errors; gateways: $WORKERS workers each, no access"
echo "log (nimrank --log-level $LOG_LEVEL); upstream: nginx, 1 worker, a canned answer;"
echo "nimrank also returns each document's text in its answer (return_documents)"

# Latency against concurrency: p50 solid, p99 dashed, one panel per body size.
plot=""
for N in 10 100; do
    for T in direct nginx nimrank; do
        awk -F'\t' -v n=$N -v t=$T '$1 == n && $3 == t { print $2, $5, $6 }' \
            "$TMP/proxy.tsv" >"$TMP/$T$N.dat"
    done
done
{
    echo "set terminal pngcairo size 1200,500 font 'sans,10'"
    echo "set output '$OUT/proxy.png'"
    echo "set multiplot layout 1,2 title 'rerank gateway latency, canned upstream'"
    echo "set logscale xy; set xlabel 'connections'; set ylabel 'latency (ms)'"
    echo "set key top left; set grid"
    for N in 10 100; do
        echo "set title '$N documents'"
        plot=""; lt=1
        for T in direct nginx nimrank; do
            if [ -s "$TMP/$T$N.dat" ]; then
                plot="$plot${plot:+, }'$TMP/$T$N.dat' using 1:2 with linespoints lt $lt"
                plot="$plot title '$T p50', '' using 1:3 with linespoints lt $lt dt 2"
                plot="$plot title '$T p99'"
            fi
            lt=$((lt + 1))
        done
        echo "plot $plot"
    done
    echo "unset multiplot"
} >"$TMP/plot.gp"
gnuplot "$TMP/plot.gp" && echo "latency plot: $OUT/proxy.png"
