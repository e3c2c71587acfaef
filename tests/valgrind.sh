#!/bin/sh
# Runs the C unit tests and one Lua spec run under valgrind's leak checker.
# Ends with "N passed, N failed"; a leak or memory error fails that run.
BUILD=${1:-build}
cd "$(dirname "$0")/.." || exit 1
unset NVIDIA_NIM_API_KEY NVIDIA_NIM_API_BASE NVIDIA_NIM_RERANK_API_BASE NIMRANK_MODEL \
    NIMRANK_LUA_PATH NIMRANK_CONFIG NIMRANK_INIT
. tests/fakes.sh
export NIMRANK_BIN="$BUILD/nimrank"
VG="valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect
    --show-leak-kinds=definite,indirect --error-exitcode=99"
passed=0; failed=0
check() { # name, command...
    name=$1; shift
    if $VG "$@" >"$LOG/vg.out" 2>&1; then
        passed=$((passed + 1)); echo "ok   valgrind $name"
    else
        failed=$((failed + 1)); echo "FAIL valgrind $name"; tail -n 40 "$LOG/vg.out"
    fi
}
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] && check "$(basename "$t")" "$t"
done
# Lua's objects from malloc here, so memcheck sees our C code's every write into them (the
# pool allocator, lalloc.c, hands out blocks of its own chunks) ...
export NIMRANK_LUA_ALLOC=libc
check "lua specs (request, response, async, binding, router, redis)" \
    "$BUILD/nimrank" tests/lua/run.lua tests/lua/request_spec.lua tests/lua/response_spec.lua \
    tests/lua/async_spec.lua tests/lua/binding_spec.lua tests/lua/router_spec.lua \
    tests/lua/redis_spec.lua
unset NIMRANK_LUA_ALLOC
# ... and one run on the pool itself, as the program uses it by default
check "lua specs on the pool allocator (response, batch)" "$BUILD/nimrank" tests/lua/run.lua \
    tests/lua/response_spec.lua tests/lua/batch_spec.lua
check "frameloop example (simple loop)" "$BUILD/frameloop" "$FAKE_OPEN_URL" "!delay=100 q"
check "frameloop example (socket callbacks)" "$BUILD/frameloop" --callbacks "$FAKE_OPEN_URL" \
    "!delay=100 q"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
