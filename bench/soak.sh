#!/bin/sh
# Soak: SOAK_REQUESTS (default 200 000) requests of a mixed workload through `nimrank serve`
# to the fake NIM (build/fakenim, open, no key): successes, upstream faults injected by
# directives in the query text (!status=N, !malformed, !drop, ...) and bad input (bad JSON,
# missing fields, wrong key, unknown model or route). wrk cycles through the requests and
# checks every answer in Lua: valid JSON, and an error is {"error":{"message","type","param",
# "code"}} with code equal to the HTTP status. Reports requests lost (wrk's socket errors and
# timeouts; must be 0), answers not well-formed (must be 0), the statuses seen, and the RSS of
# the supervisor and its workers at the start, at peak and at the end. Each kind of request is
# also sent once with curl before and after, and checked with lua5.4 and lua-cjson.
# Usage: sh bench/soak.sh
# Environment: SOAK_REQUESTS, SOAK_CONNS (default 64), SOAK_MAX_SECONDS (wrk's time limit,
# default 170), NIMRANK_WORKERS (default: cores), NIMRANK_LOG_LEVEL (default: nimrank's own:
# a log line per request, to a file in the temporary directory), BUILD (default build).
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
TOTAL=${SOAK_REQUESTS:-200000}
CONNS=${SOAK_CONNS:-64}
MAX_SECONDS=${SOAK_MAX_SECONDS:-170}
WORKERS=${NIMRANK_WORKERS:-$(nproc 2>/dev/null || echo 2)}
KEY=sk-bench-soak
sh .ci/deps.sh wrk
[ -x "$BUILD/nimrank" ] && [ -x "$BUILD/fakenim" ] || make -s
if ! "$BUILD/nimrank" serve --help >/dev/null 2>&1; then
    echo "nimrank serve: not available"
    exit 0
fi
. bench/servers.sh # $TMP, started/stop, pick_port, wait_http, rss_tree
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

"$BUILD/fakenim" >"$TMP/fake.port" 2>"$TMP/fake.err" &
started $!
FAKE=$!
n=0
while ! grep -q PORT "$TMP/fake.port" 2>/dev/null; do
    kill -0 $FAKE 2>/dev/null && [ $n -lt 100 ] || { cat "$TMP/fake.err"; exit 1; }
    sleep 0.05; n=$((n + 1))
done
BASE="http://127.0.0.1:$(awk '/PORT/{print $2}' "$TMP/fake.port")/v1"
MODEL=nvidia_nim/nvidia/nv-rerankqa-mistral-4b-v3
# Faults go to a group of two deployments, so a retry moves to the sibling at once (no
# backoff wait) and, with no cooldown, faults never take a deployment out: every request
# reaches the fake, and the soak runs at the gateway's pace rather than the backoff's.
cat >"$TMP/config.yaml" <<EOF
model_list:
  - model_name: soak
    litellm_params: { model: $MODEL, api_base: "$BASE" }
    model_info: { id: ok }
  - model_name: soak-faults
    litellm_params: { model: $MODEL, api_base: "$BASE" }
    model_info: { id: faults-a }
  - model_name: soak-faults
    litellm_params: { model: $MODEL, api_base: "$BASE" }
    model_info: { id: faults-b }
router_settings:
  num_retries: 1
  cooldown_time: 0
general_settings:
  master_key: $KEY
EOF
start_nimrank # $NIM, $SERVE
[ -z "$BENCH_PIDS" ] || ps -o pid= --ppid $SERVE >>"$BENCH_PIDS" || true

# The workload, one request a line: name|method|path|auth|body (auth: key, xkey, none, wrong).
# Successes come twice in the cycle, so about 40% of the requests succeed.
D3='"documents":["gpu memory bandwidth","cats sleep all day","tensor cores multiply"]'
D20='"documents":["'$(awk 'BEGIN { for (i = 1; i <= 20; i++)
    printf "%sdoc %d on gpu memory and tensor cores", (i > 1 ? "\",\"" : ""), i }')'"]'
ok='{"model":"soak","query":"gpu memory",'$D3',"top_n":2}'
fault() { printf '{"model":"soak-faults","query":"%s gpu memory",%s}' "$1" "$D3"; }
cat >"$TMP/requests" <<EOF
ok|POST|/rerank|key|$ok
ok-20-docs|POST|/v1/rerank|key|{"model":"soak","query":"tensor cores",$D20,"top_n":5}
ok-no-docs-back|POST|/v2/rerank|key|{"model":"soak","query":"cats",$D3,"return_documents":false}
ok-x-api-key|POST|/rerank|xkey|$ok
ok-slow|POST|/rerank|key|{"model":"soak","query":"!delay=20 gpu memory",$D3}
ok|POST|/rerank|key|$ok
ok-20-docs|POST|/v1/rerank|key|{"model":"soak","query":"tensor cores",$D20,"top_n":5}
ok-x-api-key|POST|/rerank|xkey|$ok
models|GET|/v1/models|key|
readiness|GET|/health/readiness|none|
up-503|POST|/rerank|key|$(fault '!status=503')
up-500-text|POST|/rerank|key|$(fault '!status=500 !text')
up-429|POST|/rerank|key|$(fault '!status=429 !retry-after=0')
up-400|POST|/rerank|key|$(fault '!status=400')
up-502-empty|POST|/rerank|key|$(fault '!status=502 !empty')
up-malformed|POST|/rerank|key|$(fault '!malformed')
up-shape|POST|/rerank|key|$(fault '!shape')
up-badindex|POST|/rerank|key|$(fault '!badindex')
up-nan|POST|/rerank|key|$(fault '!nan')
up-drop|POST|/rerank|key|$(fault '!drop')
bad-json|POST|/rerank|key|{"model":"soak","query":
bad-no-query|POST|/rerank|key|{"model":"soak",$D3}
bad-top-n|POST|/rerank|key|{"model":"soak","query":"gpu",$D3,"top_n":0}
bad-docs|POST|/rerank|key|{"model":"soak","query":"gpu","documents":"gpu"}
edge-no-docs|POST|/rerank|key|{"model":"soak","query":"gpu","documents":[]}
bad-param|POST|/rerank|key|{"model":"soak","query":"gpu",$D3,"rank_fields":["x"]}
bad-model|POST|/rerank|key|{"model":"no-such-model","query":"gpu",$D3}
bad-no-key|POST|/rerank|none|$ok
bad-wrong-key|POST|/rerank|wrong|$ok
bad-route|POST|/no/such/route|key|$ok
EOF

# The wrk script: requests from the file, in turn; each answer checked; counts per thread
# in globals (only numbers and strings cross between wrk's Lua states), summed in done().
cat >"$TMP/soak.lua" <<'EOF'
local NULL, ARRAY = {}, {}
local function ws(s, i) local _, e = s:find("^[ \t\r\n]*", i) return e + 1 end
local function str(s, i) -- s[i] is '"': the raw contents (escapes checked, kept), next index
  local j = i + 1
  while true do
    local a = s:find('["\\%z\1-\31]', j)
    if not a then return nil end
    local c = s:sub(a, a)
    if c == '"' then return s:sub(i + 1, a - 1), a + 1 end
    if c ~= "\\" then return nil end
    local e = s:sub(a + 1, a + 1)
    if e == "u" then
      if not s:find("^%x%x%x%x", a + 2) then return nil end
      j = a + 6
    elseif e ~= "" and ('"\\/bfnrt'):find(e, 1, true) then j = a + 2
    else return nil end
  end
end
local function num(s, i)
  local _, e = s:find("^-?0", i)
  if not e then _, e = s:find("^-?[1-9]%d*", i) end
  if not e then return nil end
  local _, f = s:find("^%.%d+", e + 1)
  if f then e = f end
  _, f = s:find("^[eE][-+]?%d+", e + 1)
  if f then e = f end
  return tonumber(s:sub(i, e)), e + 1
end
local value
function value(s, i, depth)
  if depth > 100 then return nil end
  i = ws(s, i)
  local c = s:sub(i, i)
  if c == "{" or c == "[" then
    local obj, t, n = c == "{", {}, 0
    if not obj then t[ARRAY] = true end
    i = ws(s, i + 1)
    if s:sub(i, i) == (obj and "}" or "]") then return t, i + 1 end
    while true do
      local k
      if obj then
        if s:sub(i, i) ~= '"' then return nil end
        k, i = str(s, i)
        if not k then return nil end
        i = ws(s, i)
        if s:sub(i, i) ~= ":" then return nil end
        i = i + 1
      else
        n = n + 1; k = n
      end
      local v
      v, i = value(s, i, depth + 1)
      if v == nil then return nil end
      t[k] = v
      i = ws(s, i)
      c = s:sub(i, i)
      if c == (obj and "}" or "]") then return t, i + 1 end
      if c ~= "," then return nil end
      i = ws(s, i + 1)
    end
  elseif c == '"' then return str(s, i)
  elseif s:find("^true", i) then return true, i + 4
  elseif s:find("^false", i) then return false, i + 5
  elseif s:find("^null", i) then return NULL, i + 4
  end
  return num(s, i)
end
local function decode(s)
  local v, i = value(s, 1, 0)
  if v == nil or ws(s, i) <= #s then return nil end
  return v
end
local function is_object(v) return type(v) == "table" and v ~= NULL and not v[ARRAY] end
-- nil when the answer is well-formed, else why not.
local function check(status, body)
  local v = decode(body)
  if v == nil then return "not JSON" end
  if not is_object(v) then return "not an object" end
  if status >= 200 and status < 300 then
    if v.results ~= nil then
      if type(v.results) ~= "table" or not v.results[ARRAY] then return "results not a list" end
      for _, r in ipairs(v.results) do
        if not is_object(r) or type(r.index) ~= "number" or type(r.relevance_score) ~= "number"
        then return "a result without index or relevance_score" end
      end
    end
    return nil
  end
  if status < 400 then return "unexpected status" end
  local e = v.error
  if not is_object(e) then return "no error object" end
  if type(e.message) ~= "string" then return "error.message not a string" end
  if type(e.type) ~= "string" then return "error.type not a string" end
  if e.param == nil then return "no error.param" end
  if type(e.code) ~= "string" then return "error.code not a string" end
  if e.code ~= tostring(status) then return "error.code is not the status" end
  return nil
end

local reqs, next_req, quota = {}, 1, 0
local threads = {}
function setup(thread)
  thread:set("id", #threads) -- threads start at different places in the cycle
  threads[#threads + 1] = thread
end
function init(args)
  quota = tonumber(args[1])
  local offset = tonumber(args[2]) or 0
  local key = os.getenv("SOAK_KEY")
  for line in io.lines(os.getenv("SOAK_REQUESTS_FILE")) do
    local name, method, path, auth, body = line:match("^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$")
    local h = { ["Content-Type"] = "application/json" }
    if auth == "key" then h["Authorization"] = "Bearer " .. key
    elseif auth == "xkey" then h["x-api-key"] = key
    elseif auth == "wrong" then h["Authorization"] = "Bearer sk-wrong" end
    reqs[#reqs + 1] = wrk.format(method, path, h, body ~= "" and body or nil)
  end
  next_req = 1 + (id or 0) * 7 % #reqs
  responses, bad, ctype, samples = 0, 0, 0, ""
end
function request()
  local r = reqs[next_req]
  next_req = next_req % #reqs + 1
  return r
end
function response(status, headers, body)
  responses = responses + 1
  local k = "st_" .. status
  _G[k] = (_G[k] or 0) + 1
  local why = check(status, body or "")
  if why then
    bad = bad + 1
    if bad <= 3 then
      samples = samples .. ("  %d, %s: %s\n"):format(status, why, (body or ""):sub(1, 160))
    end
  end
  local ct
  for name, v in pairs(headers) do if name:lower() == "content-type" then ct = v end end
  if not (ct and ct:find("application/json", 1, true)) then ctype = ctype + 1 end
  if responses == quota then -- wrk's main thread sleeps out -d: the shell interrupts it
    local f = io.open(os.getenv("SOAK_DONE_DIR") .. "/" .. id, "w")
    if f then f:close() end
    wrk.thread:stop()
  end
end
function done(s)
  local total, bad_total, ct_total, statuses = 0, 0, 0, {}
  local out = {}
  for _, t in ipairs(threads) do
    total = total + (t:get("responses") or 0)
    bad_total = bad_total + (t:get("bad") or 0)
    ct_total = ct_total + (t:get("ctype") or 0)
    for st = 100, 599 do
      local n = t:get("st_" .. st)
      if n then statuses[st] = (statuses[st] or 0) + n end
    end
    out[#out + 1] = t:get("samples") or ""
  end
  local e = s.errors
  io.write(("SOAK %d %d %d %d %d %d %d %.3f\n"):format(total, bad_total, ct_total,
    e.connect, e.read, e.write, e.timeout, s.duration / 1e6))
  for st = 100, 599 do
    if statuses[st] then io.write(("STATUS %d %d\n"):format(st, statuses[st])) end
  end
  io.write("SAMPLES\n", table.concat(out))
end
EOF

# Each kind once, checked with lua-cjson: "name status verdict" lines.
cat >"$TMP/check.lua" <<'EOF'
local cjson = require "cjson"
local status, file = tonumber(arg[1]), arg[2]
local f = assert(io.open(file, "rb")); local body = f:read("a"); f:close()
cjson.decode_invalid_numbers(false) -- NaN and Infinity are not JSON
local ok, v = pcall(cjson.decode, body)
local function say(s) print(s); os.exit(0) end
if not ok then say("not JSON: " .. body:sub(1, 80)) end
if type(v) ~= "table" then say("not an object") end
if status >= 200 and status < 300 then say("ok") end
local e = v.error
if type(e) ~= "table" then say("no error object") end
if type(e.message) ~= "string" or type(e.type) ~= "string" then say("message/type") end
if e.param == nil then say("no error.param") end
if e.code ~= tostring(status) then
  say("error.code " .. tostring(e.code) .. " is not the status")
end
say("ok: " .. e.type .. ": " .. e.message:sub(1, 48))
EOF
kinds() { # FILE: each kind's status and verdict, one line each
    seen=""
    while IFS='|' read -r name method path auth body; do
        case " $seen " in *" $name "*) continue ;; esac
        seen="$seen $name"
        set -- -s -o "$TMP/answer" -w '%{http_code}' -X "$method" \
            -H 'Content-Type: application/json'
        case $auth in
        key) set -- "$@" -H "Authorization: Bearer $KEY" ;;
        xkey) set -- "$@" -H "x-api-key: $KEY" ;;
        wrong) set -- "$@" -H "Authorization: Bearer sk-wrong" ;;
        esac
        [ -z "$body" ] || set -- "$@" --data-binary "$body"
        code=$(curl "$@" "http://127.0.0.1:$NIM$path") || true # 000: no answer
        printf "%-16s %s %s\n" "$name" "$code" "$(lua5.4 "$TMP/check.lua" "$code" "$TMP/answer")"
    done <"$TMP/requests" >"$1"
}
kinds "$TMP/before"

set -- $(rss_tree $SERVE)
START=$1; START_PSS=$(pss_tree $SERVE)
THREADS=2
[ "$CONNS" -ge 2 ] || THREADS=1
mkdir "$TMP/done"
SOAK_KEY=$KEY SOAK_REQUESTS_FILE="$TMP/requests" SOAK_DONE_DIR="$TMP/done" \
    wrk -t $THREADS -c "$CONNS" -d "${MAX_SECONDS}s" --timeout 10s -s "$TMP/soak.lua" \
    "http://127.0.0.1:$NIM" -- $(( (TOTAL + THREADS - 1) / THREADS )) >"$TMP/wrk.out" 2>&1 &
WRK=$!
PIDS="$PIDS $WRK"
PEAK=0
while kill -0 $WRK 2>/dev/null; do # sampled here, in this shell: no sampler to clean up
    set -- $(rss_tree $SERVE)
    [ "${1:-0}" -le "$PEAK" ] || PEAK=$1
    # every thread has its quota: SIGINT ends wrk's wait, and it reports as usual
    [ "$(ls "$TMP/done" | wc -l)" -lt $THREADS ] || kill -INT $WRK 2>/dev/null || true
    sleep 0.5
done
wait $WRK || true
sleep 1
set -- $(rss_tree $SERVE)
END=$1; END_PSS=$(pss_tree $SERVE)
kill -0 $SERVE 2>/dev/null || echo "nimrank serve: exited during the soak"
kinds "$TMP/after"

echo "each kind of request once, before and after the soak (status, lua-cjson verdict):"
awk 'NR == FNR { after[FNR] = $2; next }
    { s = $0; sub(/^[^ ]+ +[0-9]+ /, "", s)
      printf "  %-16s %s -> %s  %s\n", $1, $2, after[FNR], s }' "$TMP/after" "$TMP/before"
if ! grep -q '^SOAK' "$TMP/wrk.out"; then
    echo "wrk gave no result:"; tail -n 5 "$TMP/wrk.out"; exit 1
fi
awk -v want="$TOTAL" -v conns="$CONNS" '
    /^SOAK/ { n = $2; bad = $3; ct = $4; lost = $5 + $6 + $7 + $8; secs = $9
        printf "%d requests in %.1f s (%.0f req/s, %d connections)%s\n", n, secs, n / secs, \
            conns, n < want ? " -- fewer than " want ": time limit" : ""
        printf "lost (socket errors %d connect, %d read, %d write; %d timeouts): %d\n", \
            $5, $6, $7, $8, lost
        printf "not well-formed: %d\n", bad
        printf "Content-Type not application/json: %d\n", ct }
    /^STATUS/ { st = st sprintf(" %s:%d", $2, $3) }
    /^SAMPLES/ { samples = 1; next }
    samples { ex = ex $0 "\n" }
    END { print "statuses:" st; if (ex != "") printf "first answers not well-formed:\n%s", ex }
    ' "$TMP/wrk.out"
echo "RSS (supervisor + $WORKERS workers): start $(mb "$START") MB, peak $(mb "$PEAK") MB," \
    "end $(mb "$END") MB; PSS: start $(mb "$START_PSS") MB, end $(mb "$END_PSS") MB"
