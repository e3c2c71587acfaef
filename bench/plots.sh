#!/bin/sh
# The plots of docs/benchmarks.md, drawn by gnuplot (bench/plots/*.gp) into docs/img/*.png
# from the benches' own output:
#   overhead.png   bench/overhead.sh   bench/out/overhead.txt
#   fanout.png     bench/fanout.sh     bench/out/fanout.txt
#   providers.png  bench/providers.sh  bench/out/providers.txt
#   bm25.png       bench/bm25.sh       bench/out/bm25.txt
#   gateway.png    bench/proxy.sh      bench/out/proxy.tsv
# `make bench` keeps the first four outputs there, `sh bench/proxy.sh` writes the last. A bench
# whose output is missing is run quick first (small counts, short points), into
# bench/out/NAME.quick.txt (proxy.quick.tsv); each plot's title says which it shows and when
# that output was made.
# Usage: sh bench/plots.sh [--quick | --saved]   (after `make`; `make bench-plots` runs it)
#   --quick   run every bench quick, whatever bench/out/ holds
#   --saved   plot only what bench/out/ holds (its .txt, else its .quick.txt); run nothing
# Environment: BUILD (default build), IMG (default docs/img), BENCH_OUT (default bench/out),
# NO_GATEWAY=1: no quick run of bench/proxy.sh (it needs wrk and nginx, which it installs as
# root, and takes ~40 s). BENCH_PIDS is passed on to the benches (they list their servers).
# Every bench stops its own servers however it ends; this script runs one at a time, and on
# SIGINT or SIGTERM stops the one running (whose traps stop its servers) before it exits.
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
IMG=${IMG:-docs/img}
OUT=${BENCH_OUT:-bench/out}
MODE=auto
case ${1:-} in
--quick) MODE=quick ;;
--saved) MODE=saved ;;
"") ;;
*) echo "usage: sh bench/plots.sh [--quick | --saved]" >&2; exit 2 ;;
esac
export BUILD
FAILED=0 # a bench that failed, or gnuplot: the exit status says so (a plot without data does not)
sh .ci/deps.sh gnuplot-nox
[ -x "$BUILD/nimrank" ] || make -s
mkdir -p "$OUT" "$IMG"
TMP=$(mktemp -d)
CHILD=""
# A bench runs in a session of its own (setsid: its process group is everything it started),
# so stopping it reaches its servers too, even those of a bench that has no trap.
stop_child() {
    [ -n "$CHILD" ] || return 0
    if kill -0 -"$CHILD" 2>/dev/null; then
        kill -TERM -"$CHILD" 2>/dev/null || true
        n=0
        while kill -0 -"$CHILD" 2>/dev/null && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
        kill -KILL -"$CHILD" 2>/dev/null || true
    fi
    wait "$CHILD" 2>/dev/null || true
    CHILD=""
}
cleanup() {
    stop_child
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP PIPE # a reader gone (| head) or a closed terminal ends it too

# run_bench FILE COMMAND...: runs one bench, its output shown and kept in FILE only when it
# ran to its end.
run_bench() {
    file=$1; shift
    echo "== $*"
    setsid "$@" >"$TMP/run.out" </dev/null &
    CHILD=$!
    if wait "$CHILD"; then
        CHILD=""
        cat "$TMP/run.out"
        mv "$TMP/run.out" "$file"
        return 0
    fi
    stop_child
    cat "$TMP/run.out"
    echo "plots: $* failed: its plot is skipped" >&2
    return 1
}

# source_of NAME EXT QUICK-COMMAND...: sets SRC to the output to plot (or "" when there is
# none) and NOTE to what it is: the bench's saved output, else a quick run's.
source_of() {
    name=$1 ext=$2; shift 2
    SRC=""
    if [ $MODE != quick ] && [ -s "$OUT/$name.$ext" ]; then
        SRC="$OUT/$name.$ext"
        NOTE="make bench output of $(date -r "$SRC" +%F), $(nproc) cores"
        return
    fi
    if [ $MODE = saved ] || [ "$1" = "" ]; then
        if [ -s "$OUT/$name.quick.$ext" ]; then
            SRC="$OUT/$name.quick.$ext"
            NOTE="quick run of $(date -r "$SRC" +%F), $(nproc) cores: indicative only"
        fi
        return
    fi
    if run_bench "$TMP/$name.quick" "$@"; then
        mv "$TMP/$name.quick" "$OUT/$name.quick.$ext"
        SRC="$OUT/$name.quick.$ext"
        NOTE="quick run of $(date +%F), $(nproc) cores: indicative only"
    else
        FAILED=1
    fi
}

plot() { # NAME DATA: bench/plots/NAME.gp draws DATA into $IMG/NAME.png
    if gnuplot -c "bench/plots/$1.gp" "$2" "$IMG/$1.png" "$NOTE"; then
        echo "plots: $IMG/$1.png ($(wc -c <"$IMG/$1.png") bytes) from $SRC"
    else
        echo "plots: gnuplot failed for $1" >&2
        FAILED=1
    fi
}
skipped() { echo "plots: no data for $1: $IMG/$1.png left as it was" >&2; }

# ---- overhead: docs nim_us curl_us ratio floor_us (curl + result tables; "-" when unknown) ---
source_of overhead txt env ROUNDS=1 CALLS=50 sh bench/overhead.sh
if [ -n "$SRC" ]; then
    awk '$1 ~ /^[0-9]+$/ && $5 ~ /x$/ { sub(/x$/, "", $5)
        print $1, $3, $4, $5, ($9 ~ /^[0-9.]+$/ ? $4 + $9 : "-") }' "$SRC" \
        >"$TMP/overhead.dat"
    plot overhead "$TMP/overhead.dat"
else skipped overhead; fi

# ---- fanout: concurrency nim_req_s curl_req_s nim_kb curl_kb --------------------------------
source_of fanout txt sh bench/fanout.sh 20 "1 4 16 64 256"
if [ -n "$SRC" ]; then
    awk '$1 ~ /^[0-9]+$/ && $5 ~ /x$/ { print $1, $3, $4, $8, $9 }' "$SRC" >"$TMP/fanout.dat"
    delay=$(sed -n 's/^upstream delay \([0-9]*\) ms.*/\1/p' "$SRC")
    NOTE="${delay:-?} ms upstream delay; $NOTE"
    plot fanout "$TMP/fanout.dat"
else skipped fanout; fi

# ---- providers: a row per document count, a column per provider ----------------------------
source_of providers txt sh bench/providers.sh 50
if [ -n "$SRC" ]; then
    awk '$NF ~ /^[0-9.]+$/ && $(NF - 1) ~ /^[0-9]+$/ {
            name = $0; sub(/ +[0-9]+ +[0-9.]+ *$/, "", name)
            if (!(name in col)) { col[name] = ++ncol; names[ncol] = name }
            if (!($(NF - 1) in row)) { row[$(NF - 1)] = ++nrow; docs[nrow] = $(NF - 1) }
            v[row[$(NF - 1)], col[name]] = $NF }
        END {
            printf "docs"; for (c = 1; c <= ncol; c++) printf " \"%s\"", names[c]; print ""
            for (r = 1; r <= nrow; r++) {
                printf "%s", docs[r]
                for (c = 1; c <= ncol; c++) printf " %s", ((r, c) in v) ? v[r, c] : "NaN"
                print "" } }' "$SRC" >"$TMP/providers.dat"
    plot providers "$TMP/providers.dat"
else skipped providers; fi

# ---- bm25: "label" median_ms mb_per_s ----------------------------------------------------------
source_of bm25 txt sh bench/bm25.sh 10000 5
if [ -n "$SRC" ]; then
    awk '/^bm25 core:|^local\/bm25:/ {
            label = /^bm25 core/ ? "C core (bm25_core.c)" : \
                "nim.rerank, local/bm25"
            for (i = 1; i < NF; i++) {
                if ($i == "median") ms = $(i + 1)
                if ($(i + 1) ~ /^MB\/s/ && !mbs) mbs = $i
            }
            printf "\"%s\" %s %s\n", label, ms, mbs; ms = ""; mbs = "" }' "$SRC" >"$TMP/bm25.dat"
    docs=$(sed -n 's/^bm25 core: \([0-9]*\) docs, \([0-9.]* MB\).*/\1 documents, \2/p' "$SRC")
    NOTE="${docs:-?}; $NOTE"
    plot bm25 "$TMP/bm25.dat"
else skipped bm25; fi

# ---- gateway: bench/proxy.sh writes bench/out/proxy.tsv (and proxy.png) itself --------------
if [ -n "$NO_GATEWAY" ]; then
    QUICK_PROXY=""
else
    QUICK_PROXY="sh $TMP/proxy_quick.sh"
    # a quick run must not take the place of a saved one: the saved files are kept aside
    cat >"$TMP/proxy_quick.sh" <<EOF
# bench/proxy.sh writes bench/out/proxy.tsv and proxy.png: what was there is kept aside
restore() {
    rm -f bench/out/proxy.tsv bench/out/proxy.png
    for f in proxy.tsv proxy.png; do
        [ ! -f $TMP/saved.\$f ] || mv $TMP/saved.\$f bench/out/\$f
    done
}
trap 'restore; exit 1' INT TERM HUP PIPE
mkdir -p bench/out
for f in proxy.tsv proxy.png; do [ ! -f bench/out/\$f ] || mv bench/out/\$f $TMP/saved.\$f; done
rc=0
BENCH_SECONDS=\${BENCH_SECONDS:-1} LEVELS=\${LEVELS:-"1 4 16 64"} sh bench/proxy.sh >&2 || rc=\$?
[ \$rc != 0 ] || cat bench/out/proxy.tsv
restore
exit \$rc
EOF
fi
# shellcheck disable=SC2086
source_of proxy tsv $QUICK_PROXY
if [ -n "$SRC" ]; then
    mkdir -p "$TMP/gw"
    for n in 10 100; do
        for t in direct nginx nimrank; do
            awk -F'\t' -v n=$n -v t=$t '$1 == n && $3 == t { print $2, $4, $5, $6 }' "$SRC" \
                >"$TMP/gw/$t-$n.dat"
        done
    done
    plot gateway "$TMP/gw"
else skipped gateway; fi

exit $FAILED
