#!/bin/sh
# The gateway's HTTP library measured alone, side by side with another: two minimal servers
# doing only the HTTP layer's job of `nimrank serve` (read a POST /rerank and its whole body,
# answer 200 with a canned JSON ranking, keep-alive, one thread, one event loop):
# (a) build/httpd_mhd, libmicrohttpd driven as src/server.c drives it (external epoll, the
#     connection suspended and resumed before its answer; bench/httpd_mhd.c), and
# (b) build/httpd_h2o, Debian's h2o 2.2.5 (libh2o-evloop; bench/httpd_h2o.c);
# for scale, (c) nginx answering the canned body itself (`return 200`, one worker) and
# (d) `nimrank serve --workers 1` in front of such an nginx (as in bench/proxy.sh).
# Same Cohere-style body as bench/proxy.sh, 10 and 100 documents. Prints req/s and p50 at 1
# and 64 connections (median and range of ROUNDS interleaved rounds), then for (a) and (b)
# instructions per request (callgrind) and system calls per request (strace -c), each the
# difference between a run of CALLS_SHORT and one of CALLS_LONG requests at one connection,
# over the difference in requests: start-up and shutdown cancel out.
# Usage: sh bench/httpd.sh   (root installs wrk, nginx-light, valgrind, strace and
# libh2o-evloop-dev when missing)
# Environment: BENCH_SECONDS (per point, default 3), ROUNDS (default 3), LEVELS (connections,
# default "1 64"), CALLS_SHORT / CALLS_LONG (requests of the counted runs, 1000 / 4000),
# NIMRANK_LOG_LEVEL (default warn), BUILD (default build).
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECONDS_PER=${BENCH_SECONDS:-3}
ROUNDS=${ROUNDS:-3}
LEVELS=${LEVELS:-"1 64"}
CALLS_SHORT=${CALLS_SHORT:-1000}
CALLS_LONG=${CALLS_LONG:-4000}
NIMRANK_LOG_LEVEL=${NIMRANK_LOG_LEVEL:-warn}
KEY=sk-bench-httpd
# h2o's headers include OpenSSL's, which its -dev package does not pull in.
sh .ci/deps.sh wrk nginx-light valgrind strace libh2o-evloop-dev libssl-dev
[ -x "$BUILD/nimrank" ] || make -s
make -s --no-print-directory BUILD="$BUILD" bench-httpd # a new make: h2o may be new
[ -x "$BUILD/httpd_h2o" ] || { echo "httpd.sh: $BUILD/httpd_h2o was not built" >&2; exit 1; }
. bench/servers.sh # $TMP, started/stop, pick_port, cohere_body, canned_answer, nginx_upstream

MODEL_PATH=/v1/retrieval/nvidia/bench # + -10 or -100 + /reranking
for N in 10 100; do
    cohere_body $N bench-$N >"$TMP/body$N.json"
    canned_answer $N >"$TMP/answer$N.json"
done
# One nginx: the upstream of nimrank, and target (c) on /rerank-N.
canned_upstream "$MODEL_PATH-10/reranking $TMP/answer10.json" \
    "$MODEL_PATH-100/reranking $TMP/answer100.json" \
    "/rerank-10 $TMP/answer10.json" "/rerank-100 $TMP/answer100.json"
gateway_config "$TMP/config.yaml" 10 100
WORKERS=1
start_nimrank # $NIM

# start_httpd NAME DOCS [WRAPPER...]: build/httpd_NAME answering DOCS' canned ranking, under
# WRAPPER (valgrind, strace) if given; sets HP (the server's port) and HPID (what was started).
start_httpd() {
    name=$1 docs=$2
    shift 2
    pick_port; HP=$PORT
    : >"$TMP/httpd.out"
    "$@" "$BUILD/httpd_$name" "$HP" "$TMP/answer$docs.json" >"$TMP/httpd.out" \
        2>"$TMP/httpd.err" &
    HPID=$!
    started $HPID
    n=0
    until grep -q "^PORT" "$TMP/httpd.out"; do
        kill -0 $HPID 2>/dev/null && [ $n -lt 600 ] || {
            echo "httpd_$name did not start:" >&2; tail -n 5 "$TMP/httpd.err" >&2; exit 1; }
        sleep 0.1; n=$((n + 1))
    done
}
# The servers of the timed runs: one of each per body size.
for N in 10 100; do
    for S in mhd h2o; do
        start_httpd $S $N
        eval "PORT_${S}_$N=$HP"
    done
done

{ wrk_post; cat <<'EOF'; wrk_result; } >"$TMP/post.lua"
-- With LIMIT set, a counted run: after that many answers the thread stops and wrk is told to
-- end (SIGINT, as from the keyboard; its main thread otherwise sleeps out -d). From a
-- background job: system() ignores SIGINT in wrk while its shell runs.
local limit, seen = tonumber(os.getenv("LIMIT") or ""), 0
if limit then
  function response()
    seen = seen + 1
    if seen == limit then
      wrk.thread:stop()
      os.execute("(sleep 0.1; kill -INT $PPID) >/dev/null 2>&1 &")
    end
  end
end
EOF
url() { # target docs
    case $1 in
    mhd) eval "echo http://127.0.0.1:\$PORT_mhd_$2/rerank" ;;
    h2o) eval "echo http://127.0.0.1:\$PORT_h2o_$2/rerank" ;;
    nginx) echo "http://127.0.0.1:$UP/rerank-$2" ;;
    nimrank) echo "http://127.0.0.1:$NIM/rerank" ;;
    esac
}
# run URL docs conns seconds: "req/s p50_ms p99_ms errors requests", or nothing if wrk failed.
run() {
    BENCH_BODY="$TMP/body$2.json" BENCH_KEY=$KEY wrk -t 1 -c "$3" -d "${4}s" --timeout 10s \
        -s "$TMP/post.lua" "$1" >"$TMP/wrk.out" 2>&1 || true
    awk '/^RESULT/ { printf "%.0f %.3f %.3f %d %d\n", $2 / $3, $4 / 1000, $5 / 1000, $6, $2 }' \
        "$TMP/wrk.out"
}
TARGETS="mhd h2o nginx nimrank"
# A wrong answer must not pass for a fast one: each target answers each body once first.
for N in 10 100; do
    for T in $TARGETS; do
        code=$(curl -s -o "$TMP/check.json" -w '%{http_code}' -H "Authorization: Bearer $KEY" \
            -H 'Content-Type: application/json' --data-binary "@$TMP/body$N.json" "$(url $T $N)")
        [ "$code" = 200 ] && grep -q '"index"' "$TMP/check.json" || {
            echo "$T ($N docs) answered $code: $(head -c 300 "$TMP/check.json")" >&2; exit 1; }
        run "$(url $T $N)" $N 16 1 >/dev/null # warm-up
    done
done

echo "== req/s and p50 (ms): median of $ROUNDS rounds [range], ${SECONDS_PER} s a point," \
    "wrk 1 thread, one worker/thread per server"
printf "%-5s %5s  %-8s %17s %20s %6s\n" docs conns target "req/s" "p50 ms" errors
for N in 10 100; do
    for C in $LEVELS; do
        rm -f "$TMP"/round.*
        r=0
        while [ $r -lt "$ROUNDS" ]; do
            for T in $TARGETS; do # interleaved, so drift hits every target alike
                run "$(url $T $N)" $N $C "$SECONDS_PER" >>"$TMP/round.$T"
            done
            r=$((r + 1))
        done
        for T in $TARGETS; do
            sort -n "$TMP/round.$T" | awk -v n=$N -v c=$C -v t=$T '
                { rps[NR] = $1; p50[NR] = $2; err += $4 }
                END {
                    if (NR == 0) { printf "%-5s %5s  %-8s wrk failed\n", n, c, t; exit }
                    m = int((NR + 1) / 2)
                    lo = p50[1]; hi = p50[1]; for (i = 2; i <= NR; i++) {
                        if (p50[i] < lo) lo = p50[i]; if (p50[i] > hi) hi = p50[i] }
                    # the p50s sorted on their own for their median
                    for (i = 1; i <= NR; i++) q[i] = p50[i]
                    for (i = 1; i <= NR; i++) for (j = i + 1; j <= NR; j++)
                        if (q[j] < q[i]) { x = q[i]; q[i] = q[j]; q[j] = x }
                    printf "%-5s %5s  %-8s %6d [%d-%d] %7.3f [%.3f-%.3f] %6d\n", n, c, t,
                        rps[m], rps[1], rps[NR], q[m], lo, hi, err }'
        done
    done
done

# counted NAME DOCS TOOL WRAPPER...: the server under WRAPPER (TOOL: callgrind or strace) for
# CALLS_SHORT then CALLS_LONG requests at one connection, stopped with SIGTERM after each (the
# tool writes its counts as the server exits); "requests count" per run in $TMP/counted, the
# count per request in $TMP/per_request. (Not inside $(...): the servers it starts must be
# this shell's, for stop().)
counted() {
    name=$1 docs=$2 tool=$3
    shift 3
    : >"$TMP/counted"
    for L in $CALLS_SHORT $CALLS_LONG; do
        rm -f "$TMP"/cg.*.out "$TMP/st.out"
        start_httpd "$name" "$docs" "$@"
        # the server itself: under strace it is strace's child
        SP=$HPID
        [ "$tool" != strace ] || SP=$(ps -o pid= --ppid $HPID | tr -d ' ')
        LIMIT=$L BENCH_BODY="$TMP/body$docs.json" BENCH_KEY=$KEY wrk -t 1 -c 1 -d 300s \
            --timeout 30s -s "$TMP/post.lua" "http://127.0.0.1:$HP/rerank" >"$TMP/wrk.out" 2>&1
        kill $SP
        wait $HPID 2>/dev/null || true
        unstarted $HPID
        reqs=$(awk '/^RESULT/ {print $2}' "$TMP/wrk.out")
        if [ "$tool" = callgrind ]; then
            echo "$reqs $(awk '/^(summary|totals):/ {print $2; exit}' "$TMP"/cg.*.out)" \
                >>"$TMP/counted"
        else # strace -c: calls per system call
            cp "$TMP/st.out" "$TMP/st.$L"
            echo "$reqs $(awk '$NF == "total" {print $4}' "$TMP/st.out")" >>"$TMP/counted"
        fi
    done
    awk 'NR == 1 {r = $1; i = $2} NR == 2 {
            if ($1 <= r) { print "-"; exit } printf "%.1f\n", ($2 - i) / ($1 - r) }' \
        "$TMP/counted" >"$TMP/per_request"
}
echo
echo "== counted at one connection: the difference between runs of $CALLS_SHORT and" \
    "$CALLS_LONG requests"
printf "%-5s %-8s %14s %14s  %s\n" docs target "Ir/request" "syscalls/req" \
    "system calls per request, by name"
for N in 10 100; do
    for S in mhd h2o; do
        counted $S $N callgrind valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.%p.out"
        ir=$(cat "$TMP/per_request")
        counted $S $N strace strace -c -f -o "$TMP/st.out"
        sc=$(cat "$TMP/per_request")
        r1=$(sed -n 1p "$TMP/counted" | cut -d' ' -f1)
        r2=$(sed -n 2p "$TMP/counted" | cut -d' ' -f1)
        # per system call: the difference of its count between the two runs, per request
        by=$(awk -v d=$((r2 - r1)) 'FNR == 1 { f++ } $NF != "total" && $4 ~ /^[0-9]+$/ {
                c[$NF] += (f == 1 ? -$4 : $4) }
            END { for (k in c) if (c[k] / d >= 0.05) printf "%s %.2f\n", k, c[k] / d }' \
            "$TMP/st.$CALLS_SHORT" "$TMP/st.$CALLS_LONG" | sort -k2,2nr |
            awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }')
        printf "%-5s %-8s %14.0f %14s  %s\n" $N $S "$ir" "$sc" "$by"
    done
done
echo "servers: one thread each; nimrank: --workers 1, --log-level $NIMRANK_LOG_LEVEL;" \
    "nginx: 1 worker, no access log, answers with return 200 (its body read and discarded)"
