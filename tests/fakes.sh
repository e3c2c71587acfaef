# fakes.sh: sourced by the test drivers. Starts three fake servers on loopback (one that
# demands a key, like the hosted API, an open one, like a self-hosted container, and one that
# takes 20,000 passages, the oracle for batching; each also speaks the other providers'
# dialects) and exports FAKE_URL, FAKE_OPEN_URL, FAKE_BIG_URL, FAKE_KEY. They are stopped
# when the driver exits.
LOG=$(mktemp -d)
FAKE_KEY="test-key-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
export FAKE_KEY

start_fake() { # name, extra args...
    name=$1; shift
    "$BUILD/fakenim" "$@" >"$LOG/$name.port" 2>"$LOG/$name.err" &
    echo $! >"$LOG/$name.pid"
    i=0
    while ! grep -q PORT "$LOG/$name.port" 2>/dev/null; do
        i=$((i + 1))
        if [ $i -gt 100 ]; then
            echo "fake server $name did not start" >&2
            cat "$LOG/$name.err" >&2
            exit 1
        fi
        sleep 0.05
    done
    echo "http://127.0.0.1:$(awk '/PORT/{print $2}' "$LOG/$name.port")"
}
cleanup() {
    for p in "$LOG"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done
    rm -rf "$LOG"
}
trap cleanup EXIT INT TERM

FAKE_URL=$(start_fake keyed --api-key "$FAKE_KEY") || exit 1
FAKE_OPEN_URL=$(start_fake open) || exit 1
FAKE_BIG_URL=$(start_fake big --max-passages 20000) || exit 1 # the oracle for batching
export FAKE_URL FAKE_OPEN_URL FAKE_BIG_URL NIMRANK_BIN="$BUILD/nimrank"

