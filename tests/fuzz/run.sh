#!/bin/sh
# Runs every libFuzzer target (built in the tree given, by `make fuzz-build`) for SECONDS
# each, from its seed corpus and the kept regressions, with ASan+UBSan (float-cast-overflow
# included). A crash, a hang past 10 s or memory past 2 GB fails the target and leaves the
# input under BUILD/artifacts/ (keep it in tests/fuzz/regressions/TARGET/). Ends with
# "N passed, N failed".
B=${1:-build-fuzz}
S=${2:-10}
cd "$(dirname "$0")/../.." || exit 1
mkdir -p "$B/artifacts"
passed=0; failed=0
for t in resolve answer bm25 config docs proxy redis_url; do
    work=$(mktemp -d)
    cp tests/fuzz/corpus/$t/* "$work/" 2>/dev/null
    "$B/fuzz_$t" -max_total_time="$S" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$B/artifacts/$t-" "$work" tests/fuzz/regressions/$t >"$work.log" 2>&1
    rc=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work.log" | grep -o '[0-9]*$')
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1))
        echo "ok   fuzz $t: ${runs:-?} executions in ${S} s, no crash"
    else
        failed=$((failed + 1))
        echo "FAIL fuzz $t (exit $rc)"
        grep -E 'ERROR|SUMMARY|invariant|artifact' "$work.log" | head -n 20
    fi
    rm -rf "$work" "$work.log"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
