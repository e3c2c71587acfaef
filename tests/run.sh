#!/bin/sh
# Runs every test: C unit tests, Lua specs (host and stock lua5.4), CLI specs.
# Starts the fake NIM servers on loopback itself; ends with "N passed, N failed".
BUILD=${1:-build}
cd "$(dirname "$0")/.." || exit 1
unset NVIDIA_NIM_API_KEY NVIDIA_NIM_API_BASE NVIDIA_NIM_RERANK_API_BASE NIMRANK_MODEL \
    NIMRANK_LUA_PATH NIMRANK_CONFIG NIMRANK_INIT
. tests/fakes.sh

# A sanitized nim.so inside the uninstrumented lua5.4 needs the runtimes preloaded.
PRELOAD=
if [ -n "$NIMRANK_SANITIZE" ]; then
    PRELOAD="$(cc -print-file-name=libasan.so) $(cc -print-file-name=libubsan.so)"
fi
export NIMRANK_PRELOAD="$PRELOAD"

passed=0; failed=0
tally() { # a log whose last "N passed, N failed" line counts; a runner that died counts 1 failure
    line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1)
    if [ -z "$line" ]; then
        failed=$((failed + 1)); echo "  (no summary from $2: counted as a failure)"
        return
    fi
    p=$(echo "$line" | awk '{for (i = 2; i <= NF; i++) if ($i == "passed,") print $(i - 1)}')
    f=$(echo "$line" | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^failed/) print $(i - 1)}')
    passed=$((passed + p)); failed=$((failed + f))
}
run() { # name, command...
    name=$1; shift
    echo "== $name"
    "$@" >"$LOG/out" 2>&1
    rc=$?
    cat "$LOG/out"
    tally "$LOG/out" "$name"
    if [ $rc -ne 0 ] && ! grep -qE ' [1-9][0-9]* failed' "$LOG/out"; then
        failed=$((failed + 1)); echo "  ($name exited $rc)"
    fi
}

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] && run "$(basename "$t")" "$t"
done
for t in "$BUILD"/tests/fuzz_*; do # each fuzz target replays its seeds and kept regressions
    name=${t##*/fuzz_}
    [ -x "$t" ] && run "fuzz replay $name" "$t" tests/fuzz/corpus/"$name" \
        tests/fuzz/regressions/"$name"
done
SPECS=$(ls tests/lua/*_spec.lua)
if [ -n "$NIMRANK_SANITIZE" ]; then # packaging builds its own, unsanitized trees: run it once
    SPECS=$(echo "$SPECS" | grep -v packaging_spec)
    echo "(packaging_spec.lua runs in the plain suite only: it builds its own trees)"
fi
run "lua specs (nimrank host)" "$BUILD/nimrank" tests/lua/run.lua $SPECS
# No LUA_PATH: nim.so finds its Lua layer itself. NIMRANK_INIT is set to show that only the
# nimrank program runs it, never the library.
run "lua specs (stock lua5.4 + nim.so)" env LD_PRELOAD="$PRELOAD" LUA_CPATH="$BUILD/?.so;;" \
    NIMRANK_INIT=tests/lua/module/init_marker.lua lua5.4 tests/lua/run.lua \
    tests/lua/module/*_spec.lua
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
