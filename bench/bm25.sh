#!/bin/sh
# Throughput of the embedded reranker: 10,000 documents of 1 KB, one core.
# Usage: sh bench/bm25.sh [NDOCS] [RUNS]   (after `make`)
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
NDOCS=${1:-10000}
RUNS=${2:-20}
cc -O2 -o "$BUILD/bm25_core" bench/bm25_core.c src/bm25.c src/ranking.c -lm -lpthread
taskset -c 0 "$BUILD/bm25_core" "$NDOCS" "$RUNS"
taskset -c 0 "$BUILD/nimrank" bench/bm25.lua "$NDOCS" "$RUNS"
