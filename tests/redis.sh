#!/bin/sh
# redis.sh: starts a real redis-server (Debian's) for a test, on loopback, in the background,
# and prints "PORT <port> PID <pid>" once it accepts connections.
#   sh tests/redis.sh DIR OWNER PORT [redis-server options...]
# DIR holds its log and pid; PORT 0 picks a free port (a taken one is tried again elsewhere).
# A watchdog kills the server when the process OWNER (the test) is gone, however it ended, so
# no server outlives its test; the test stops it itself too (kill "$(cat DIR/pid)").
dir=$1 owner=$2 want=$3
shift 3
command -v redis-server >/dev/null 2>&1 || { echo "redis-server is not installed" >&2; exit 1; }
tries=0
while [ $tries -lt 20 ]; do
    tries=$((tries + 1))
    port=$want
    [ "$port" = 0 ] && port=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000))
    : >"$dir/log" # emptied here: the child's own redirection may come after the first look
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
        --dir "$dir" --logfile '' "$@" >"$dir/log" 2>&1 </dev/null &
    pid=$!
    i=0
    while kill -0 "$pid" 2>/dev/null && ! grep -q "Ready to accept" "$dir/log" && [ $i -lt 250 ]
    do
        i=$((i + 1))
        sleep 0.02
    done
    if grep -q "Ready to accept" "$dir/log"; then
        echo "$pid" >"$dir/pid"
        (while kill -0 "$owner" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
            kill -9 "$pid" 2>/dev/null) >/dev/null 2>&1 </dev/null &
        echo "PORT $port PID $pid"
        exit 0
    fi
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    [ "$want" = 0 ] || { cat "$dir/log" >&2; exit 1; } # a given port: no second choice
done
echo "redis-server did not start" >&2
cat "$dir/log" >&2
exit 1
