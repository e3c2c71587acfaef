#!/bin/sh
# The user's document, end to end on one machine: a fake NVIDIA NIM on loopback stands in for
# the hosted API, `nimrank serve` reads the LiteLLM config, and the document's curl commands
# run unchanged against it. Run from the repository root: sh examples/proxy/run.sh
# (PORT=N sh examples/proxy/run.sh when port 4000 is taken).
cd "$(dirname "$0")/../.." || exit 1
[ -x build/nimrank ] && [ -x build/fakenim ] || make --no-print-directory >/dev/null || exit 1
TMP=$(mktemp -d)
cleanup() {
    [ -f "$TMP/nimrank.pid" ] && kill "$(cat "$TMP/nimrank.pid")" 2>/dev/null
    [ -f "$TMP/fake.pid" ] && kill "$(cat "$TMP/fake.pid")" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap "exit 1" INT TERM HUP PIPE # cleanup runs at exit, also when the output is cut (| head)

# The stand-in for https://ai.api.nvidia.com: it checks the key like the real API.
export NVIDIA_NIM_API_KEY=nvapi-demo-key
build/fakenim --api-key "$NVIDIA_NIM_API_KEY" >"$TMP/fake.port" 2>"$TMP/fake.err" &
echo $! >"$TMP/fake.pid"
until grep -q PORT "$TMP/fake.port" 2>/dev/null; do sleep 0.05; done
export NVIDIA_NIM_API_BASE="http://127.0.0.1:$(awk '/PORT/{print $2}' "$TMP/fake.port")"

# The document's `litellm --config /path/to/config.yaml`, on port 4000.
PORT=${PORT:-4000}
build/nimrank serve --config examples/proxy/config.yaml --port "$PORT" --workers 2 \
    --log "$TMP/requests.log" 2>"$TMP/serve.err" &
echo $! >"$TMP/nimrank.pid"
i=0
until grep -q "listening on" "$TMP/serve.err" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 "$(cat "$TMP/nimrank.pid")" 2>/dev/null; then
        cat "$TMP/serve.err" >&2
        exit 1
    fi
    sleep 0.05
done
cat "$TMP/serve.err"

# The document's requests, as written.
curl -sS -X POST http://0.0.0.0:$PORT/rerank \
  -H "Authorization: Bearer sk-1234" \
  -H "Content-Type: application/json" \
  -d '{
    "model": "nvidia-rerank",
    "query": "What is the GPU memory bandwidth of H100?",
    "documents": [
      "H100 delivers 3TB/s memory bandwidth",
      "A100 has 2TB/s memory bandwidth",
      "V100 offers 900GB/s memory bandwidth"
    ],
    "top_n": 2
  }'
echo
curl -sS -X POST http://0.0.0.0:$PORT/rerank \
  -H "Authorization: Bearer sk-1234" \
  -H "Content-Type: application/json" \
  -d '{
    "model": "nvidia-ranking",
    "query": "which way did the traveler go?",
    "documents": [
      "two roads diverged in a yellow wood...",
      "then took the other, as just as fair..."
    ],
    "top_n": 2
  }'
echo
# The route tenant.lua added.
curl -sS http://127.0.0.1:$PORT/models/names -H "Authorization: Bearer sk-1234"
echo
echo "--- the gateway's log, a JSON line per request:"
cat "$TMP/requests.log"
