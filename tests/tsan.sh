#!/bin/sh
# ThreadSanitizer: two lua_States on two threads (tests/c/test_threads.c), built with
# -fsanitize=thread in the tree given (build-tsan), against the normal build's fake server.
# Ends with "N passed, N failed"; any race report fails it.
TSAN_BUILD=${1:-build-tsan}
cd "$(dirname "$0")/.." || exit 1
unset NVIDIA_NIM_API_KEY NVIDIA_NIM_API_BASE NVIDIA_NIM_RERANK_API_BASE NIMRANK_LUA_PATH
BUILD=build
. tests/fakes.sh
TSAN_OPTIONS="halt_on_error=1 exitcode=66" "$TSAN_BUILD/tests/test_threads" >"$LOG/tsan.out" 2>&1
rc=$?
cat "$LOG/tsan.out"
if [ $rc -eq 0 ] && ! grep -q "WARNING: ThreadSanitizer" "$LOG/tsan.out"; then
    echo "ok   threadsanitizer: two states on two threads"
    echo "1 passed, 0 failed"
else
    echo "FAIL threadsanitizer (exit $rc)"
    echo "0 passed, 1 failed"
    exit 1
fi
