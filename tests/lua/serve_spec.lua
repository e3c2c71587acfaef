-- `nimrank serve`: the gateway over real HTTP (curl), against the fake NIM servers. Each test
-- starts its own server (`--port 0`) from a shell wrapper that records the supervisor's pid
-- and exit code in files, waits for its "listening on" line, and stops it when the test ends,
-- passed or not. Waits are polling loops with generous deadlines; nothing asserts a speed.
local spec = require "spec"
local h = require "helpers"
local json = require "nim.json"
local nim = require "nim"
local eq, ok, match = spec.eq, spec.ok, spec.match
-- SERVE_SPEC_ONLY=a,b runs only the tests whose names contain a or b (the last always runs).
local ONLY = os.getenv("SERVE_SPEC_ONLY")
local function test(name, fn)
  if not ONLY then return spec.test(name, fn) end
  for part in ONLY:gmatch("[^,]+") do
    if name:find(part, 1, true) then return spec.test(name, fn) end
  end
end
local q, sh = h.q, h.sh
local BIN = h.nimrank

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local TMP = trim(sh("mktemp -d"))
local MASTER = "sk-serve-" .. trim(sh("od -An -N8 -tx1 /dev/urandom | tr -d ' \\n'"))
local RETRIEVAL = "nvidia_nim/nvidia/llama-nemotron-rerank-1b-v2"

-- The body of the seed document's curl example (LiteLLM proxy, /rerank).
local SEED = {
  model = "nvidia-rerank",
  query = "What is the GPU memory bandwidth of H100?",
  documents = {
    "H100 delivers 3TB/s memory bandwidth",
    "A100 has 2TB/s memory bandwidth",
    "V100 offers 900GB/s memory bandwidth",
  },
  top_n = 2,
}

-- ---- small utilities ------------------------------------------------------------------------
local function write(path, content)
  local f = assert(io.open(path, "wb"))
  f:write(content)
  f:close()
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function sleep(s) os.execute("sleep " .. s) end

-- Polls fn until it returns a true value (returned); fails after deadline seconds.
local function poll(what, deadline, fn)
  local t_end = nim.now() + deadline
  repeat
    local v = fn()
    if v then return v end
    sleep(0.05)
  until nim.now() > t_end
  error(("%s: not within %g s"):format(what, deadline), 2)
end

-- A process is alive when /proc has it and it is not a zombie.
local function alive(pid)
  local stat = read("/proc/" .. pid .. "/stat")
  if not stat then return false end
  return stat:match("%) (%a)") ~= "Z"
end

local function children(pid)
  local out = sh("pgrep -P " .. pid .. " 2>/dev/null")
  local t = {}
  for p in out:gmatch("%d+") do t[#t + 1] = tonumber(p) end
  table.sort(t)
  return t
end

local function cmdline(pid)
  return (read("/proc/" .. pid .. "/cmdline") or ""):gsub("%z", " ")
end

local function json_lines(text)
  local out = {}
  for line in (text or ""):gmatch("[^\n]+") do
    local okd, v = pcall(json.decode, line)
    if okd and type(v) == "table" then out[#out + 1] = v end
  end
  return out
end

-- ---- configs --------------------------------------------------------------------------------
local function deployment(name, extra)
  return ([[
  - model_name: %s
    litellm_params:
      model: %s
      api_key: os.environ/FAKE_KEY
      api_base: %s
%s]]):format(name, RETRIEVAL, extra and extra.api_base or "os.environ/FAKE_URL",
    extra and extra.more or "")
end

-- The gateway's usual config: groups on the keyed fake, one that times out, one whose
-- upstream refuses connections, an offline BM25 group, an alias, a fallback; the master key
-- from the environment.
local function main_config(o)
  o = o or {}
  return table.concat({
    "model_list:",
    deployment("nvidia-rerank"),
    deployment("flaky"),
    deployment("solo"),
    deployment("slow", { more = "      timeout: 0.5\n" }),
    deployment("refused", { api_base = "http://127.0.0.1:1" }),
    [[
  - model_name: unset-key
    litellm_params:
      model: nvidia_nim/nvidia/llama-nemotron-rerank-1b-v2
      api_key: os.environ/NIMRANK_SERVE_SPEC_UNSET
      api_base: os.environ/FAKE_URL
]],
    [[
  - model_name: offline
    litellm_params:
      model: local/bm25
  - model_name: 'no'
    litellm_params:
      model: local/bm25
]],
    o.more_models or "",
    [[
router_settings:
  num_retries: 1
  cooldown_time: 120
  model_group_alias: { rerank: nvidia-rerank }
  fallbacks:
    - flaky: [offline]
]],
    (o.general or not o.no_key) and "general_settings:" or "",
    o.no_key and "" or "  master_key: os.environ/SERVE_SPEC_MASTER",
    o.general or "",
    o.tail or "",
  }, "\n")
end

-- ---- servers --------------------------------------------------------------------------------
local servers = {}  -- every server started, for the final check
local leaks = {}    -- secrets found in a server's output
local nserver, nreq = 0, 0

local function start(o)
  o = o or {}
  nserver = nserver + 1
  local dir = ("%s/s%d"):format(TMP, nserver)
  os.execute("mkdir -p " .. q(dir))
  local srv = { dir = dir, cfg = dir .. "/config.yaml", log = dir .. "/serve.log",
    err = dir .. "/stderr", out = dir .. "/stdout", pidf = dir .. "/pid", rcf = dir .. "/rc",
    key = not o.no_key and MASTER or nil, workers = o.workers or 1 }
  write(srv.cfg, o.config or main_config(o))
  local cmd = ("%s SERVE_SPEC_MASTER=%s %s serve --config %s --port 0 --workers %d --log %s %s")
    :format(o.env or "", q(MASTER), BIN, q(srv.cfg), srv.workers, q(srv.log), o.args or "")
  -- the wrapper records the pid and, once the server is gone, its exit code
  os.execute(("(%s </dev/null >%s 2>%s & echo $! >%s; wait $!; echo $? >%s) >/dev/null 2>&1 &")
    :format(cmd, q(srv.out), q(srv.err), q(srv.pidf), q(srv.rcf)))
  srv.pid = poll("the server's pid file", 10, function()
    return tonumber(read(srv.pidf) or "")
  end)
  servers[#servers + 1] = srv
  local line = poll("the server's 'listening on' line", 15, function()
    local err = read(srv.err) or ""
    local l = err:match("nimrank serve: listening on [^\n]*")
    if l then return l end
    if read(srv.rcf) then error("the server exited at start: " .. err .. (read(srv.log) or "")) end
  end)
  srv.host, srv.port, srv.nworkers = line:match("http://(.-):(%d+) %((%d+) workers?%)")
  ok(srv.port, "port in " .. line)
  srv.line = line
  srv.base = "http://127.0.0.1:" .. srv.port
  return srv
end

local function check_secrets(srv)
  for _, f in ipairs({ srv.log, srv.err, srv.out }) do
    local text = read(f) or ""
    for _, secret in ipairs({ MASTER, h.key }) do
      if text:find(secret, 1, true) then leaks[#leaks + 1] = f end
    end
  end
end

-- Stops the server (SIGTERM, then SIGKILL after a deadline) and returns its exit code.
local function stop(srv)
  if srv.stopped then return srv.rc end
  local known = children(srv.pid)
  if alive(srv.pid) then os.execute("kill -TERM " .. srv.pid .. " 2>/dev/null") end
  local t_end = nim.now() + 15
  while (alive(srv.pid) or not read(srv.rcf)) and nim.now() < t_end do sleep(0.05) end
  if alive(srv.pid) then
    for _, p in ipairs(children(srv.pid)) do known[#known + 1] = p end
    os.execute("kill -KILL " .. srv.pid .. " 2>/dev/null")
  end
  for _, p in ipairs(known) do -- workers die with the supervisor; make sure of it
    if alive(p) and cmdline(p):find(srv.cfg, 1, true) then
      os.execute("kill -KILL " .. p .. " 2>/dev/null")
    end
  end
  srv.stopped = true
  srv.rc = tonumber(poll("the wrapper's exit code", 10, function() return read(srv.rcf) end))
  check_secrets(srv)
  return srv.rc
end

-- Runs fn(server) with a fresh server; stops it whatever happens.
local function with_server(o, fn)
  local srv = start(o)
  local okr, err = pcall(fn, srv)
  stop(srv)
  if not okr then error(err, 0) end
end

-- ---- HTTP through curl ----------------------------------------------------------------------
local function parse_headers(text)
  -- the last block (a 100 Continue comes first)
  local block = (text or ""):gsub("\r", "")
  local last = block
  for b in block:gmatch("(HTTP/[^\n]*\n.-)\n\n") do last = b end
  local hs = {}
  for name, value in last:gmatch("\n([^:\n]+):%s*([^\n]*)") do hs[name:lower()] = value end
  return hs
end

-- request(srv, method, path, o) -> { status, headers, body, json, curl_exit }
-- o: body (string or table: JSON-encoded), key (default: the master key; false: none),
-- headers { "Name: value", ... }, ctype (default application/json; false: no Content-Type),
-- timeout (curl --max-time; default 20), url (instead of srv.base .. path).
local function request(srv, method, path, o)
  o = o or {}
  nreq = nreq + 1
  local base = ("%s/r%d"):format(srv.dir, nreq)
  local parts = { "curl -s --http1.1 -X", method, "--max-time", tostring(o.timeout or 20),
    "-o", q(base .. ".body"), "-D", q(base .. ".hdr"), "-w '%{http_code}'" }
  local key = o.key
  if key == nil then key = srv.key end
  if key then parts[#parts + 1] = "-H " .. q("Authorization: Bearer " .. key) end
  for _, hd in ipairs(o.headers or {}) do parts[#parts + 1] = "-H " .. q(hd) end
  if o.body ~= nil then
    local body = type(o.body) == "table" and json.encode(o.body) or o.body
    write(base .. ".in", body)
    parts[#parts + 1] = "--data-binary @" .. q(base .. ".in")
    if o.ctype == false then
      parts[#parts + 1] = "-H 'Content-Type:'"
    else
      parts[#parts + 1] = "-H " .. q("Content-Type: " .. (o.ctype or "application/json"))
    end
  end
  parts[#parts + 1] = q(o.url or (srv.base .. path))
  local out, code = sh(table.concat(parts, " ") .. " 2>/dev/null")
  local r = { status = tonumber(out), curl_exit = code, headers = parse_headers(read(base
    .. ".hdr")), body = read(base .. ".body") or "" }
  local okd, v = pcall(json.decode, r.body)
  r.json = okd and v or nil
  return r
end

local function get(srv, path, o) return request(srv, "GET", path, o) end
local function post(srv, path, body, o)
  o = o or {}
  o.body = body
  return request(srv, "POST", path, o)
end

-- The error envelope: exactly {"error": {"message", "type", "param", "code"}}, code = status.
local ENVELOPE = { message = true, type = true, param = true, code = true }
local function is_error(r, status, etype, param)
  eq(r.status, status, "status (body " .. r.body:sub(1, 300) .. ")")
  local j = r.json
  ok(type(j) == "table" and type(j.error) == "table", "an error object: " .. r.body)
  for k in pairs(j) do eq(k, "error", "top-level key") end
  for k in pairs(j.error) do ok(ENVELOPE[k], "unexpected key error." .. tostring(k)) end
  for k in pairs(ENVELOPE) do ok(j.error[k] ~= nil, "error." .. k .. " present") end
  eq(type(j.error.message), "string", "error.message")
  eq(type(j.error.type), "string", "error.type")
  ok(j.error.param == json.null or type(j.error.param) == "string", "error.param")
  eq(j.error.code, tostring(status), "error.code")
  if etype then eq(j.error.type, etype, "error.type") end
  if param == false then
    eq(j.error.param, json.null, "error.param")
  elseif param then
    eq(j.error.param, param, "error.param")
  end
  eq(r.headers["content-type"], "application/json", "Content-Type")
  return j.error
end

-- Sums the samples of a metric whose labels include every given label.
local function metric(text, name, labels)
  local sum, found = 0, false
  for line in text:gmatch("[^\n]+") do
    local n, lbl, v = line:match("^([%w_]+)(%b{}) (%S+)$")
    if not n then
      n, v = line:match("^([%w_]+) (%S+)$")
      lbl = ""
    end
    if n == name then
      local have = {}
      for k, x in lbl:gmatch('([%w_]+)="([^"]*)"') do have[k] = x end
      local all = true
      for k, x in pairs(labels or {}) do if have[k] ~= x then all = false end end
      if all then
        sum, found = sum + tonumber(v), true
      end
    end
  end
  return found and sum or 0
end

local function log_lines(srv) return json_lines(read(srv.log)) end

-- The request log line of a request id (polled: lines are written once a loop turn).
local function log_line(srv, id)
  return poll("the log line of request " .. id, 10, function()
    for _, l in ipairs(log_lines(srv)) do
      if l.request_id == id and l.route then return l end
    end
  end)
end

local function log_event(srv, pattern, deadline)
  return poll("a log line matching " .. pattern, deadline or 10, function()
    for line in (read(srv.log) or ""):gmatch("[^\n]+") do
      if line:find(pattern) then return line end
    end
  end)
end

local function fake_stats()
  return h.decode(sh("curl -s --max-time 10 " .. q(h.url .. "/_fake/stats")))
end

local function rerank_ok(r, what)
  eq(r.status, 200, (what or "rerank") .. " status (body " .. r.body:sub(1, 300) .. ")")
  ok(r.json and type(r.json.results) == "table", "results")
  return r.json
end

local function models(srv)
  local r = get(srv, "/v1/models")
  eq(r.status, 200, "/v1/models status")
  local ids = {}
  for _, m in ipairs(r.json.data) do ids[m.id] = true end
  return ids, r
end

-- ---- routes ---------------------------------------------------------------------------------
test("serve_rerank_routes_answer_the_seed_body_sorted_with_top_n", function()
  with_server({}, function(srv)
    for _, path in ipairs({ "/rerank", "/v1/rerank", "/v2/rerank" }) do
      local r = post(srv, path, SEED)
      local res = rerank_ok(r, path)
      eq(#res.results, 2, path .. ": top_n = 2")
      ok(res.results[1].relevance_score >= res.results[2].relevance_score, path .. ": sorted")
      eq(res.results[1].index, 0, path .. ": H100 first")
      for i, it in ipairs(res.results) do
        if path == "/v2/rerank" then -- Cohere's v2 returns no documents unless asked
          eq(it.document, nil, path .. ": no document " .. i)
        else
          eq(it.document.text, SEED.documents[it.index + 1], path .. ": document.text " .. i)
        end
        eq(type(it.relevance_score), "number", "relevance_score")
      end
      ok(type(res.id) == "string" and #res.id > 0, path .. ": id")
      ok(type(res.meta) == "table" and type(res.meta.billed_units) == "table",
        path .. ": meta.billed_units")
      ok(res.meta.billed_units.total_tokens > 0, "billed tokens")
      eq(r.headers["content-type"], "application/json", "Content-Type")
    end
    local v2 = rerank_ok(post(srv, "/v2/rerank", { model = SEED.model, query = SEED.query,
      documents = SEED.documents, return_documents = true }), "/v2/rerank with documents")
    eq(v2.results[1].document.text, SEED.documents[1], "/v2: document.text when asked")
    -- the alias, return_documents = false, top_n above the count
    local r = post(srv, "/rerank", { model = "rerank", query = SEED.query,
      documents = SEED.documents, return_documents = false, top_n = 10 })
    local res = rerank_ok(r, "alias")
    eq(#res.results, 3, "all three")
    eq(res.results[1].document, nil, "no documents")
  end)
end)

test("serve_health_routes_are_open_without_a_key", function()
  with_server({}, function(srv)
    local r = get(srv, "/health/liveliness", { key = false })
    eq(r.status, 200, "liveliness")
    eq(r.json.status, "I'm alive!", "liveliness body")
    r = get(srv, "/health/readiness", { key = false })
    eq(r.status, 200, "readiness")
    eq(r.json.status, "healthy", "readiness body")
    ok(r.json.nimrank_version, "version")
  end)
end)

test("serve_v1_models_lists_groups_and_aliases", function()
  with_server({}, function(srv)
    local ids, r = models(srv)
    eq(r.json.object, "list", "object")
    for _, name in ipairs({ "nvidia-rerank", "flaky", "offline", "rerank", "no" }) do
      ok(ids[name], "lists " .. name)
    end
    for _, m in ipairs(r.json.data) do
      eq(m.object, "model", "item object")
      eq(type(m.id), "string", "item id")
    end
    is_error(get(srv, "/v1/models", { key = false }), 401, "auth_error")
  end)
end)

test("serve_unknown_route_is_404_and_wrong_method_405_with_allow", function()
  with_server({}, function(srv)
    is_error(get(srv, "/v1/nothing"), 404, "not_found_error")
    is_error(post(srv, "/nothing", "{}"), 404, "not_found_error")
    local r = get(srv, "/rerank")
    is_error(r, 405, "method_not_allowed")
    eq(r.headers["allow"], "POST", "Allow")
    r = post(srv, "/v1/models", "{}")
    is_error(r, 405, "method_not_allowed")
    eq(r.headers["allow"], "GET, HEAD", "Allow (HEAD wherever GET)")
    r = request(srv, "DELETE", "/health/readiness", { key = false })
    is_error(r, 405)
    eq(r.headers["allow"], "GET, HEAD", "Allow")
  end)
end)

test("serve_metrics_count_by_route_model_status_across_two_workers", function()
  with_server({ workers = 2 }, function(srv)
    eq(srv.nworkers, "2", "two workers")
    eq(#children(srv.pid), 2, "two worker processes")
    for _ = 1, 3 do rerank_ok(post(srv, "/rerank", SEED)) end
    rerank_ok(post(srv, "/v1/rerank", SEED))
    rerank_ok(post(srv, "/rerank", { model = "rerank", query = "q", documents = { "a" } }))
    is_error(post(srv, "/rerank", { model = "nope", query = "q", documents = { "a" } }), 404)
    local N = 24 -- separate connections: the kernel spreads them over both workers
    for _ = 1, N do eq(get(srv, "/health/liveliness").status, 200, "liveliness") end
    -- peers publish once a second: poll until one answer adds every worker up, then check
    -- that several answers in a row (from either worker) agree
    local want = {
      { { route = "/rerank", model = "nvidia-rerank", status = "200" }, 4 },
      { { route = "/v1/rerank", model = "nvidia-rerank", status = "200" }, 1 },
      { { route = "/rerank", model = "other", status = "404" }, 1 },
      { { route = "/health/liveliness", status = "200" }, N },
    }
    local function adds_up()
      local r = get(srv, "/metrics")
      if r.status ~= 200 then return false end
      for _, w in ipairs(want) do
        if metric(r.body, "nimrank_requests_total", w[1]) ~= w[2] then return false end
      end
      return r
    end
    local r
    for _ = 1, 6 do r = poll("/metrics adding up both workers", 15, adds_up) end
    match(r.headers["content-type"], "^text/plain; version=0%.0%.4", "Content-Type")
    match(r.body, "# TYPE nimrank_requests_total counter", "TYPE line")
    match(r.body, "# HELP nimrank_request_duration_seconds ", "HELP line")
    eq(metric(r.body, "nimrank_request_duration_seconds_count", { route = "/rerank" }), 5,
      "duration histogram count")
    ok(metric(r.body, "nimrank_request_duration_seconds_bucket",
      { route = "/rerank", le = "+Inf" }) == 5, "+Inf bucket")
    is_error(get(srv, "/metrics", { key = false }), 401, "auth_error")
  end)
end)

-- ---- auth -----------------------------------------------------------------------------------
test("serve_master_key_via_bearer_or_x_api_key_else_401", function()
  with_server({}, function(srv)
    eq(srv.host, "0.0.0.0", "with a master key it listens on every address: " .. srv.line)
    rerank_ok(post(srv, "/rerank", SEED), "Bearer")
    rerank_ok(post(srv, "/rerank", SEED, { key = false, headers = { "x-api-key: " .. MASTER } }),
      "x-api-key")
    local e = is_error(post(srv, "/rerank", SEED, { key = false }), 401, "auth_error", false)
    match(e.message, "Bearer", "says how")
    is_error(post(srv, "/rerank", SEED, { key = "sk-wrong" }), 401, "auth_error")
    is_error(post(srv, "/rerank", SEED, { key = MASTER .. "x" }), 401, "auth_error")
    is_error(post(srv, "/rerank", SEED, { key = MASTER:sub(1, -2) }), 401, "auth_error")
    is_error(post(srv, "/rerank", SEED, { key = false, headers = { "x-api-key: nope" } }), 401,
      "auth_error")
    is_error(post(srv, "/rerank", SEED, { key = false,
      headers = { "Authorization: Basic " .. MASTER } }), 401, "auth_error")
    -- the key came from os.environ/SERVE_SPEC_MASTER: the config file does not hold it
    ok(not read(srv.cfg):find(MASTER, 1, true), "config has no key")
    match(read(srv.cfg), "master_key: os.environ/SERVE_SPEC_MASTER", "from the environment")
    eq(get(srv, "/health/liveliness", { key = "sk-wrong" }).status, 200, "health open")
  end)
end)

test("serve_without_master_key_binds_loopback_warns_and_needs_no_auth", function()
  with_server({ no_key = true }, function(srv)
    eq(srv.host, "127.0.0.1", "host in " .. srv.line)
    local l = log_event(srv, '"event":"no_master_key"')
    match(l, '"level":"warn"', "a warning")
    rerank_ok(post(srv, "/rerank", SEED, { key = false }), "no key needed")
  end)
end)

-- ---- errors ---------------------------------------------------------------------------------
test("serve_malformed_json_and_non_object_bodies_are_400", function()
  with_server({}, function(srv)
    is_error(post(srv, "/rerank", "{bad"), 400, "invalid_request_error")
    is_error(post(srv, "/rerank", '{"model": "nvidia-rerank",'), 400, "invalid_request_error")
    for _, body in ipairs({ "[1,2]", '"text"', "42", "null", "true", "[]" }) do
      local e = is_error(post(srv, "/rerank", body), 400, "invalid_request_error")
      match(e.message, "JSON object", "message for " .. body)
    end
    is_error(post(srv, "/rerank", ""), 400, "invalid_request_error")
    is_error(request(srv, "POST", "/rerank"), 400, "invalid_request_error")
  end)
end)

test("serve_each_wrong_field_type_is_400_naming_the_field", function()
  with_server({}, function(srv)
    local values = { number = "1", float = "1.5", string = '"s"', bool = "true",
      null = "null", array = '["x"]', object = '{"a":1}' }
    local wrong = {
      model = { "number", "float", "bool", "null", "array", "object" },
      query = { "number", "float", "bool", "null", "array", "object" },
      documents = { "number", "float", "string", "bool", "null", "object" },
      top_n = { "float", "string", "bool", "array", "object" },
      truncate = { "number", "bool", "array", "object" },
      return_documents = { "number", "string", "array", "object" },
    }
    local base = { model = '"nvidia-rerank"', query = '"gpu"', documents = '["a","b"]' }
    for field, kinds in pairs(wrong) do
      for _, kind in ipairs(kinds) do
        local fields = {}
        for k, v in pairs(base) do fields[k] = v end
        fields[field] = values[kind]
        local parts = {}
        for k, v in pairs(fields) do parts[#parts + 1] = ("%q:%s"):format(k, v) end
        local body = "{" .. table.concat(parts, ",") .. "}"
        local e = is_error(post(srv, "/rerank", body), 400, "invalid_request_error")
        eq(e.param, field, ("param for %s = %s"):format(field, kind))
        match(e.message, field, "message names " .. field)
      end
    end
    -- a document the call refuses is named as the client counts (from 0); a number is its text
    local e = is_error(post(srv, "/rerank", '{"model":"offline","query":"q","documents":["a",'
      .. 'null]}'), 400, "invalid_request_error")
    eq(e.param, "documents[1]", "the second document, counted from 0")
    match(e.message, "got null", "named null, not a Lua type")
    e = is_error(post(srv, "/rerank", '{"model":"offline","query":"q","documents":[{"text":'
      .. 'true}]}'), 400)
    eq(e.param, "documents[0].text", "param of a document's text")
    local r = rerank_ok(post(srv, "/rerank", '{"model":"offline","query":"3","documents":[3,"x"]}'),
      "a number document")
    eq(r.results[1].document.text, "3", "3, not 3.0")
    e = is_error(post(srv, "/rerank", '{"model":"offline","documents":["a"]}'), 400)
    eq(e.message, "query: required (string)", "a missing query")
    -- values of the right type but out of range
    for _, c in ipairs({ { "top_n", "0" }, { "top_n", "-1" }, { "truncate", '"MIDDLE"' },
        { "query", '""' }, { "model", '""' } }) do
      local fields = { model = '"nvidia-rerank"', query = '"gpu"', documents = '["a"]' }
      fields[c[1]] = c[2]
      local parts = {}
      for k, v in pairs(fields) do parts[#parts + 1] = ("%q:%s"):format(k, v) end
      local e = is_error(post(srv, "/rerank", "{" .. table.concat(parts, ",") .. "}"), 400)
      eq(e.param, c[1], "param for " .. c[1] .. " = " .. c[2])
    end
    -- null for an optional field is the field left out
    for _, f in ipairs({ "top_n", "truncate", "return_documents" }) do
      local body = ('{"model":"nvidia-rerank","query":"gpu","documents":["a"],%q:null}')
        :format(f)
      rerank_ok(post(srv, "/rerank", body), f .. " = null")
    end
  end)
end)

test("serve_zero_documents_is_400", function()
  with_server({}, function(srv)
    local e = is_error(post(srv, "/rerank", { model = "nvidia-rerank", query = "q",
      documents = json.array({}) }), 400, "invalid_request_error")
    eq(e.param, "documents", "param")
    e = is_error(post(srv, "/rerank", '{"model":"offline","query":"q","documents":[]}'), 400)
    eq(e.param, "documents", "param (offline)")
  end)
end)

test("serve_unknown_model_is_404_listing_configured_names", function()
  with_server({}, function(srv)
    local e = is_error(post(srv, "/rerank", { model = "gpt-rerank", query = "q",
      documents = { "a" } }), 404)
    for _, name in ipairs({ "nvidia-rerank", "offline", "rerank", "flaky" }) do
      match(e.message, name:gsub("%-", "%%-"), "lists " .. name)
    end
    match(e.message, "gpt%-rerank", "names the model")
  end)
end)

test("serve_body_over_max_request_size_is_413", function()
  with_server({ general = "  max_request_size_mb: 0.01\n" }, function(srv)
    local docs = {}
    for i = 1, 400 do docs[i] = ("document %d with some words in it"):format(i) end
    local big = { model = "offline", query = "words", documents = docs }
    ok(#json.encode(big) > 0.01 * 1024 * 1024, "body above the limit")
    local e = is_error(post(srv, "/rerank", big), 413, "request_too_large")
    match(e.message, "max_request_size_mb", "names the setting")
    -- chunked, so no Content-Length tells in advance
    is_error(post(srv, "/rerank", big, { headers = { "Transfer-Encoding: chunked" } }), 413,
      "request_too_large")
    -- under the limit still served, and the server goes on
    rerank_ok(post(srv, "/rerank", { model = "offline", query = "words",
      documents = { docs[1], docs[2] } }), "small body")
    -- the limit is checked after auth: no key is a 401 whatever the size
    is_error(post(srv, "/rerank", big, { key = false }), 401, "auth_error")
  end)
end)

test("serve_refuses_gateway_keys_in_the_request_naming_them", function()
  with_server({}, function(srv)
    local body = { model = "nvidia-rerank", query = "q", documents = { "a" },
      api_base = "http://evil.example", api_key = "k" }
    local e = is_error(post(srv, "/rerank", body), 400, "invalid_request_error")
    match(e.message, "api_base", "names api_base")
    match(e.message, "api_key", "names api_key")
    eq(e.param, "api_base", "param: the first")
    e = is_error(post(srv, "/rerank", { model = "nvidia-rerank", query = "q",
      documents = { "a" }, num_retries = 5 }), 400)
    eq(e.param, "num_retries", "param")
    -- user and metadata are accepted and ignored
    rerank_ok(post(srv, "/rerank", { model = "nvidia-rerank", query = "q", documents = { "a" },
      user = "u1", metadata = { a = 1 } }), "user/metadata")
  end)
end)

test("serve_upstream_4xx_passes_through", function()
  with_server({}, function(srv)
    local e = is_error(post(srv, "/rerank", { model = "nvidia-rerank",
      query = "!status=422 four twenty two", documents = { "a" } }), 422)
    eq(e.type, "bad_request", "type")
    e = is_error(post(srv, "/rerank", { model = "nvidia-rerank",
      query = "!status=400 four hundred", documents = { "a" } }), 400)
    eq(e.type, "bad_request", "type")
  end)
end)

test("serve_upstream_5xx_is_retried_then_passed_through", function()
  with_server({}, function(srv)
    local id = "retry-5xx-" .. nserver
    local r = post(srv, "/rerank", { model = "nvidia-rerank", query = "!status=503 retried",
      documents = { "a" } }, { headers = { "x-request-id: " .. id } })
    local e = is_error(r, 503, "provider")
    match(e.message, "503", "message")
    local l = log_line(srv, id)
    eq(l.status, 503, "log status")
    eq(l.attempts, 2, "one try and one retry (num_retries: 1)")
    match(l.deployment, "^nvidia%-rerank", "the deployment tried last, by its id")
    eq(l.error, "provider", "error type")
    -- a fault that clears: the retry answers
    local q2 = "!status=502 !times=1 retried once " .. nserver
    local res = rerank_ok(post(srv, "/rerank", { model = "nvidia-rerank", query = q2,
      documents = { "a", "b" } }, { headers = { "x-request-id: " .. id .. "-b" } }))
    eq(#res.results, 2, "results")
    eq(log_line(srv, id .. "-b").attempts, 2, "second attempt answered")
  end)
end)

test("serve_no_deployments_is_429_with_retry_after", function()
  with_server({}, function(srv) -- one worker: the cooldown is that worker's router state
    local r = post(srv, "/rerank", { model = "solo", query = "!status=429 cool it",
      documents = { "a" } })
    is_error(r, 429, "rate_limit")
    r = post(srv, "/rerank", { model = "solo", query = "fine now", documents = { "a" } })
    local e = is_error(r, 429, "rate_limit")
    match(e.message, "no deployments available", "message")
    local ra = tonumber(r.headers["retry-after"])
    ok(ra and ra > 0 and ra <= 120, "Retry-After: " .. tostring(r.headers["retry-after"]))
    -- other groups are untouched
    rerank_ok(post(srv, "/rerank", SEED), "other group")
  end)
end)

test("serve_upstream_timeout_is_504", function()
  with_server({}, function(srv)
    -- first a quick answer: the timeouts below cool the deployment down (allowed_fails)
    rerank_ok(post(srv, "/rerank", { model = "slow", query = "quick", documents = { "a" } }),
      "within the timeout")
    local e = is_error(post(srv, "/rerank", { model = "slow", query = "!delay=2000 too slow",
      documents = { "a" } }), 504, "timeout")
    ok(#e.message > 0, "message")
    e = is_error(post(srv, "/rerank", { model = "slow", query = "!silent never answers",
      documents = { "a" } }), 504, "timeout")
  end)
end)

test("serve_connection_refused_upstream_is_502", function()
  with_server({}, function(srv)
    local e = is_error(post(srv, "/rerank", { model = "refused", query = "q",
      documents = { "a" } }), 502, "connection")
    ok(#e.message > 0, "message")
  end)
end)

test("serve_a_deployment_with_an_unset_variable_is_500_not_the_clients_fault", function()
  with_server({}, function(srv)
    local e = is_error(post(srv, "/rerank", { model = "unset-key", query = "q",
      documents = { "a" } }), 500, "internal_error")
    match(e.message, "NIMRANK_SERVE_SPEC_UNSET is not set", "names the variable")
  end)
end)

test("serve_only_configured_model_names_are_served_and_names_are_bounded", function()
  with_server({}, function(srv)
    -- a provider model string would spend the gateway's keys on a model nobody configured
    is_error(post(srv, "/rerank", { model = RETRIEVAL, query = "q", documents = { "a" } }),
      404, "not_found", "model")
    is_error(post(srv, "/rerank", { model = "local/bm25", query = "q", documents = { "a" } }),
      404, "not_found", "model")
    local e = is_error(post(srv, "/rerank", { model = ("m"):rep(5000), query = "q",
      documents = { "a" } }), 400, "invalid_request_error", "model")
    ok(#e.message < 300, "the message does not repeat the name")
    is_error(get(srv, "/%ff%fe"), 404, "not_found_error") -- JSON (is_error decodes it)
  end)
end)

test("serve_documents_over_max_documents_are_400", function()
  with_server({ general = "  max_documents: 3\n" }, function(srv)
    is_error(post(srv, "/rerank", { model = "offline", query = "q",
      documents = { "a", "b", "c", "d" } }), 400, "invalid_request_error", "documents")
    eq(post(srv, "/rerank", { model = "offline", query = "q", documents = { "a", "b", "c" } })
      .status, 200, "at the limit")
  end)
end)

test("serve_client_refused_requests_do_not_cool_the_deployment_down", function()
  with_server({}, function(srv)
    for i = 1, 5 do -- more than allowed_fails (3) upstream 400s, all the client's doing
      is_error(post(srv, "/rerank", { model = "solo", query = "!status=400 bad " .. i,
        documents = { "a" } }), 400)
    end
    rerank_ok(post(srv, "/rerank", { model = "solo", query = "fine", documents = { "a" } }),
      "the deployment still serves others")
  end)
end)

test("serve_method_names_are_not_route_fields_and_the_bearer_scheme_is_any_case", function()
  with_server({}, function(srv)
    local probe = srv.dir .. "/open.sh"
    write(probe, [[
exec 3<>/dev/tcp/127.0.0.1/$1 || exit 1
printf 'open /health/liveliness HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
head -n 1 <&3
]])
    match(sh(("bash %s %s 2>&1"):format(q(probe), srv.port)), "^HTTP/1%.1 405",
      "an unknown method is 405, not a handler call")
    eq(get(srv, "/v1/models", { key = false, headers = { "Authorization: BEARER " .. MASTER } })
      .status, 200, "BEARER")
  end)
end)

-- raw(srv, text): text written to the server's port byte for byte (printf %b: no % is a
-- format); what came back.
local function raw(srv, text)
  local probe = srv.dir .. "/raw.sh"
  if not srv.raw_probe then
    write(probe, [[
exec 3<>/dev/tcp/127.0.0.1/$1 || exit 1
printf '%b' "$2" >&3
timeout 10 cat <&3
]])
    srv.raw_probe = true
  end
  return sh(("bash %s %s %s 2>/dev/null"):format(q(probe), srv.port, q(text)))
end

test("serve_heads_that_could_smuggle_a_request_are_400", function()
  with_server({}, function(srv)
    local cases = {
      { "Content-Length: 5\r\nContent-Length: 59", "two different Content%-Length" },
      { "Content-Length: 5\r\nTransfer-Encoding: chunked", "Content%-Length and Transfer" },
      { "Transfer-Encoding: gzip, chunked", "only chunked" },
      -- white space before the colon: a name of its own to libmicrohttpd, framing nothing
      { "Content-Length : 5", "white space before its colon" },
      { "Content-Length: 5\r\nTransfer-Encoding : chunked", "white space before its colon" },
    }
    for _, c in ipairs(cases) do
      local out = raw(srv, "POST /rerank HTTP/1.1\r\nHost: x\r\n" .. c[1]
        .. "\r\nConnection: close\r\n\r\n0\r\n\r\n")
      match(out, "^HTTP/1%.1 400", c[1])
      match(out, c[2], c[1] .. ": says why")
    end
    rerank_ok(post(srv, "/rerank", SEED), "served after")
  end)
end)

test("serve_http_details_host_head_nul_in_the_path_media_types_and_nulls", function()
  with_server({}, function(srv)
    local out = raw(srv, "GET /health/liveliness HTTP/1.1\r\nConnection: close\r\n\r\n")
    match(out, "^HTTP/1%.1 400", "HTTP/1.1 without Host")
    match(out, "Host header", "says why")
    match(raw(srv, "GET /health/liveliness HTTP/1.0\r\n\r\n"), "^HTTP/1%.[01] 200",
      "HTTP/1.0 needs none")
    match(raw(srv, "GET /health/liveliness HTTP/1.2\r\nConnection: close\r\n\r\n"),
      "^HTTP/1%.1 400", "a later 1.x needs one too")
    out = raw(srv, "GET /health/liveliness HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close"
      .. "\r\n\r\n")
    match(out, "^HTTP/1%.1 400", "two Host headers")
    match(out, "more than one Host", "says why")
    out = raw(srv, "HEAD /health/liveliness HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    match(out, "^HTTP/1%.1 200", "HEAD where GET is")
    ok(not out:find("alive", 1, true), "and no body")
    match(raw(srv, "GET /health/liveliness%00x HTTP/1.1\r\nHost: x\r\nConnection: close"
      .. "\r\n\r\n"),
      "^HTTP/1%.1 404", "%00 in a path is not cut there")
    local allow = raw(srv, "POST /health/liveliness HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
      .. "Connection: close\r\n\r\n")
    match(allow, "^HTTP/1%.1 405", "POST where GET is")
    match(allow, "[Aa]llow: GET, HEAD", "Allow names HEAD too")
    -- only JSON media types; two Content-Types are not one
    is_error(post(srv, "/rerank", SEED, { ctype = "application/jsonx" }), 415)
    is_error(post(srv, "/rerank", SEED, { ctype = "text/plain, application/json" }), 415)
    is_error(post(srv, "/rerank", SEED, { ctype = "application/json, text/plain" }), 415)
    is_error(post(srv, "/rerank", SEED, { ctype = "application/json;a=b, */*" }), 415)
    rerank_ok(post(srv, "/rerank", SEED, { ctype = 'application/json; charset="utf-8,a/b"' }),
      "a comma inside a quoted parameter")
    rerank_ok(post(srv, "/rerank", SEED, { ctype = "application/vnd.api+json" }), "+json")
    rerank_ok(post(srv, "/rerank", SEED, { ctype = "Application/JSON" }), "any case")
    -- a null counts as absent, also for a key the gateway refuses
    rerank_ok(post(srv, "/rerank", '{"model":"offline","query":"q","documents":["q"],'
      .. '"timeout":null,"api_key":null,"top_n":null}'), "nulls")
  end)
end)

test("serve_a_large_body_without_the_key_is_refused_before_it_is_read", function()
  with_server({}, function(srv)
    local big = srv.dir .. "/big.json"
    write(big, '{"model":"offline","query":"q","documents":["' .. ("x"):rep(3 * 1024 * 1024)
      .. '"]}')
    local out = sh(("curl -s -o /dev/null -w '%%{http_code} %%{size_upload}' --max-time 20 "
      .. "-H 'Content-Type: application/json' --data-binary @%s %s/rerank"):format(q(big),
      srv.base))
    local status, sent = out:match("^(%d+) (%d+)")
    eq(status, "401", "refused on its head")
    ok(tonumber(sent) < 3 * 1024 * 1024, "the body was not all taken: " .. out)
    rerank_ok(post(srv, "/rerank", SEED), "served after")
  end)
end)

test("serve_invalid_utf8_is_400", function()
  with_server({}, function(srv)
    local e = is_error(post(srv, "/rerank",
      '{"model":"nvidia-rerank","query":"\xff\xfe","documents":["a"]}'), 400,
      "invalid_request_error")
    match(e.message, "UTF%-8", "message")
    is_error(post(srv, "/rerank", '{"model":"offline","query":"q","documents":["\xc3"]}'), 400)
  end)
end)

test("serve_content_type_missing_is_json_and_text_plain_is_415", function()
  with_server({}, function(srv)
    rerank_ok(post(srv, "/rerank", SEED, { ctype = false }), "no Content-Type")
    rerank_ok(post(srv, "/rerank", SEED, { ctype = "application/json; charset=utf-8" }),
      "charset")
    local e = is_error(post(srv, "/rerank", SEED, { ctype = "text/plain" }), 415,
      "unsupported_media_type")
    eq(e.param, "Content-Type", "param")
    is_error(post(srv, "/rerank", SEED, { ctype = "application/x-www-form-urlencoded" }), 415)
  end)
end)

-- ---- fallbacks, the log line, secrets --------------------------------------------------------
test("serve_fallback_answers_and_the_log_line_shows_it_without_secrets", function()
  with_server({}, function(srv)
    local id = "fallback-" .. nserver
    local r = post(srv, "/rerank", { model = "flaky", query = "!status=503 gpu bandwidth",
      documents = { "cats and dogs", "gpu memory bandwidth" } },
      { headers = { "x-request-id: " .. id } })
    local res = rerank_ok(r, "fallback")
    eq(res.results[1].index, 1, "BM25 ranks the matching document first")
    local l = log_line(srv, id)
    eq(l.fallback, "offline", "fallback in the log line")
    eq(l.status, 200, "status")
    eq(l.route, "/rerank", "route")
    eq(l.model, "flaky", "model asked for")
    ok(l.attempts >= 3, "attempts: two on flaky, one on offline; got " .. tostring(l.attempts))
    for _, k in ipairs({ "total_ms", "upstream_ms", "own_ms" }) do
      eq(type(l[k]), "number", k)
      ok(l[k] >= 0, k .. " >= 0")
    end
    ok(l.total_ms + 1e-6 >= l.own_ms, "own <= total")
    eq(type(l.time), "string", "time")
    eq(l.method, "POST", "method")
    -- the requests that carried keys (right and wrong) and upstream errors are logged...
    post(srv, "/rerank", SEED, { key = "sk-wrong-" .. MASTER })
    local echoed = post(srv, "/rerank", { model = "nvidia-rerank", query = "!echo-auth show me",
      documents = { "a" } })
    is_error(echoed, 400, "bad_request")
    -- a deployment's key sent back as a model name and a request id: logged redacted, the id
    -- not echoed
    local sent = post(srv, "/rerank", { model = "x-" .. h.key, query = "q", documents = { "a" } },
      { headers = { "x-request-id: " .. h.key } })
    is_error(sent, 404)
    ok(sent.headers["x-request-id"] ~= h.key, "a request id holding a key is not echoed")
    ok(not echoed.body:find(h.key, 1, true), "the upstream's echo of the key is not passed on")
    match(echoed.body, "redacted", "it is redacted")
    rerank_ok(post(srv, "/rerank", SEED))
    get(srv, "/metrics")
    -- ...and neither key appears anywhere the server wrote
    stop(srv)
    for _, f in ipairs({ srv.log, srv.err, srv.out }) do
      local text = read(f) or ""
      ok(not text:find(MASTER, 1, true), "master key in " .. f)
      ok(not text:find(h.key, 1, true), "FAKE_KEY in " .. f)
    end
    local n = 0
    for _, line in ipairs(log_lines(srv)) do if line.route then n = n + 1 end end
    ok(n >= 5, "a line per request")
  end)
end)

-- Keys the config does not spell out are secrets too: a provider's key variable (used by a
-- deployment without api_key) and a credential header's value, with or without its scheme.
test("serve_keys_from_provider_variables_and_credential_headers_never_reach_the_log", function()
  local implicit, header, bearer = "nvapi-implicit-4711", "hdr-secret-0815", "tok-bearer-2342"
  local config = main_config({ more_models = ([[
  - model_name: implicit-key
    litellm_params:
      model: nvidia_nim/nvidia/llama-nemotron-rerank-1b-v2
      api_base: os.environ/FAKE_URL
  - model_name: with-headers
    litellm_params:
      model: nvidia_nim/nvidia/llama-nemotron-rerank-1b-v2
      api_base: os.environ/FAKE_URL
      api_key: os.environ/FAKE_KEY
      headers: { X-Upstream-Token: %s, Proxy-Authorization: "Bearer %s" }
]]):format(header, bearer) })
  with_server({ config = config, env = "NVIDIA_NIM_API_KEY=" .. implicit }, function(srv)
    for _, secret in ipairs({ implicit, header, bearer }) do
      is_error(post(srv, "/rerank", { model = "x-" .. secret, query = "q", documents = { "a" } },
        { headers = { "x-request-id: " .. secret } }), 404)
    end
    stop(srv)
    for _, f in ipairs({ srv.log, srv.err, srv.out }) do
      local text = read(f) or ""
      for _, secret in ipairs({ implicit, header, bearer }) do
        ok(not text:find(secret, 1, true), secret .. " in " .. f)
      end
    end
    match(read(srv.log) or "", "x%-%[redacted%]", "logged redacted")
  end)
end)

test("serve_request_id_echoed_or_generated_and_overhead_header", function()
  with_server({}, function(srv)
    local r = post(srv, "/rerank", SEED, { headers = { "x-request-id: my-id.42" } })
    rerank_ok(r)
    eq(r.headers["x-request-id"], "my-id.42", "echoed")
    eq(log_line(srv, "my-id.42").status, 200, "logged under that id")
    r = get(srv, "/health/liveliness")
    match(r.headers["x-request-id"], "^%x+$", "generated")
    eq(#r.headers["x-request-id"], 32, "32 hex digits")
    local r2 = get(srv, "/health/liveliness")
    ok(r2.headers["x-request-id"] ~= r.headers["x-request-id"], "a new id each time")
    -- an id that is not a token is replaced
    r = get(srv, "/health/liveliness", { headers = { "x-request-id: bad id with spaces" } })
    match(r.headers["x-request-id"], "^%x+$", "replaced")
    for _, resp in ipairs({ r, r2, post(srv, "/rerank", SEED), post(srv, "/rerank", "{") }) do
      local v = resp.headers["x-nimrank-overhead-ms"]
      ok(v and v:match("^%d+%.%d+$") and tonumber(v) >= 0, "overhead header: " .. tostring(v))
    end
    -- errors carry the id too
    r = post(srv, "/rerank", "{", { headers = { "x-request-id: err-7" } })
    eq(r.headers["x-request-id"], "err-7", "on an error")
  end)
end)

-- ---- client disconnect, handler errors, middleware ------------------------------------------
test("serve_client_disconnect_cancels_the_upstream_call_and_counts_499", function()
  with_server({}, function(srv)
    local before = fake_stats().aborted
    ok(type(before) == "number", "the fake counts aborted delays")
    local r = post(srv, "/rerank", { model = "nvidia-rerank",
      query = "!delay=3000 hang up " .. nserver, documents = { "a" } }, { timeout = 0.5 })
    eq(r.curl_exit, 28, "curl gave up (timeout)")
    -- the gateway closed its upstream connection: the fake saw it during its delay
    poll("the fake seeing the upstream connection closed", 10, function()
      return fake_stats().aborted > before
    end)
    local m = poll("/metrics counting the 499", 10, function()
      local mr = get(srv, "/metrics")
      return metric(mr.body, "nimrank_requests_total", { route = "/rerank",
        model = "nvidia-rerank", status = "499" }) == 1 and mr
    end)
    ok(m, "counted")
    local l = log_event(srv, '"status":499')
    match(l, '"error":"client_closed"', "logged as any request, with why")
    rerank_ok(post(srv, "/rerank", SEED), "still serving")
    eq(get(srv, "/health/readiness").status, 200, "ready")
  end)
end)

local SCRIPT = [[
local proxy = require("nim.proxy")
proxy.route("GET", "/boom", function() error("boom") end)
proxy.route("GET", "/hello", function(req)
  return 200, { hello = "world", tenant = req.headers["x-tenant"] }
end)
proxy.route("GET", "/badstatus", function() return "nope" end)
proxy.route("GET", "/spin", function() while true do end end)
proxy.route("GET", "/oddheaders", function() return 200, "hi", "not a table" end)
proxy.route("GET", "/typed", function()
  return 200, "plain", { ["content-type"] = "text/plain" }
end)
proxy.use("tenant", function(req)
  if req.path == "/hello" and not req.headers["x-tenant"] then
    return proxy.error(400, "invalid_request_error", "x-tenant header is required", "x-tenant")
  end
end)
]]

local function script_config(dir)
  local path = dir .. "/routes.lua"
  write(path, SCRIPT)
  return main_config({ tail = "nimrank_settings:\n  scripts: [" .. path .. "]\n" })
end

test("serve_a_raising_lua_handler_is_500_and_the_worker_keeps_serving", function()
  local dir = TMP .. "/script1"
  os.execute("mkdir -p " .. q(dir))
  with_server({ config = script_config(dir) }, function(srv)
    local pids = children(srv.pid)
    local r = get(srv, "/boom", { headers = { "x-request-id: boom-1" } })
    local e = is_error(r, 500, "internal_error")
    match(e.message, "boom%-1", "the message gives the request id")
    ok(not e.message:find("routes.lua", 1, true), "no traceback to the client")
    is_error(get(srv, "/badstatus"), 500, "internal_error")
    -- a handler that never ends runs out of its instruction budget: 500, the worker lives
    is_error(get(srv, "/spin"), 500, "internal_error")
    local odd = get(srv, "/oddheaders")
    eq(odd.status, 200, "headers that are not a table are left out")
    eq(odd.body, "hi", "the body still goes")
    local typed = get(srv, "/typed")
    eq(typed.headers["content-type"], "text/plain", "a handler's Content-Type, any case, wins")
    is_error(get(srv, "/boom", { key = false }), 401, "auth_error") -- auth first
    for _ = 1, 3 do
      eq(get(srv, "/hello", { headers = { "x-tenant: t1" } }).status, 200, "serving")
      rerank_ok(post(srv, "/rerank", SEED), "rerank after the error")
    end
    local l = log_event(srv, '"event":"handler_error"')
    match(l, "boom", "the log has the error")
    match(l, "boom%-1", "and the request id")
    eq(table.concat(children(srv.pid), ","), table.concat(pids, ","), "same worker")
  end)
end)

test("serve_middleware_from_a_config_script_answers_or_passes", function()
  local dir = TMP .. "/script2"
  os.execute("mkdir -p " .. q(dir))
  with_server({ config = script_config(dir) }, function(srv)
    local e = is_error(get(srv, "/hello"), 400, "invalid_request_error")
    eq(e.param, "x-tenant", "param")
    local r = get(srv, "/hello", { headers = { "X-Tenant: acme" } })
    eq(r.status, 200, "passes")
    eq(r.json.hello, "world", "the script's route")
    eq(r.json.tenant, "acme", "header names are lower-case")
    ok(r.headers["x-request-id"], "request id on a script route")
    rerank_ok(post(srv, "/rerank", SEED), "other routes unaffected")
  end)
end)

-- The per-request instruction budget (a count hook, a cost on every VM instruction) is on
-- exactly when Lua of the user's may run in a request: asked of nim.proxy in a fresh program.
test("serve_requests_run_on_the_budget_only_when_user_lua_may_run", function()
  local dir = TMP .. "/guard"
  os.execute("mkdir -p " .. q(dir))
  write(dir .. "/plain.yaml", "model_list:\n  - model_name: m\n    litellm_params:\n"
    .. "      model: local/bm25\n")
  write(dir .. "/script.lua", "-- does nothing\n")
  write(dir .. "/scripted.yaml", "model_list:\n  - model_name: m\n    litellm_params:\n"
    .. "      model: local/bm25\nnimrank_settings:\n  scripts: [" .. dir .. "/script.lua]\n")
  write(dir .. "/config.lua", "return { model_list = { { model_name = 'm', "
    .. "litellm_params = { model = 'local/bm25' } } } }\n")
  write(dir .. "/init.lua", "local nim = ...\n")
  local function guarded(env, config, code)
    return trim(sh(("%s %s --config %s -e %s"):format(env, BIN, q(config), q(
      "local p = require('nim.proxy') " .. (code or "") .. " io.write(tostring(p.guarded()))"))))
  end
  eq(guarded("env", dir .. "/plain.yaml"), "false", "a YAML config, no scripts: no budget")
  eq(guarded("env", dir .. "/scripted.yaml"), "true", "a config with scripts")
  eq(guarded("env", dir .. "/config.lua"), "true", "a .lua config")
  eq(guarded("env NIMRANK_INIT=" .. q(dir .. "/init.lua"), dir .. "/plain.yaml"), "true",
    "an init file")
  eq(guarded("env", dir .. "/plain.yaml", "p.use('m', function() end)"), "true",
    "a middleware added")
  eq(guarded("env", dir .. "/plain.yaml", "p.route('GET', '/x', function() end)"), "true",
    "a route added")
end)

-- ---- signals --------------------------------------------------------------------------------
local function added_config(broken)
  if broken then return "model_list:\n  - model_name: [unclosed\n" end
  return main_config({ more_models = [[
  - model_name: added
    litellm_params:
      model: local/bm25
]] })
end

-- Polls until n answers in a row from /v1/models agree with want(ids).
local function models_agree(srv, what, n, want)
  local streak = 0
  poll(what, 15, function()
    local ids = models(srv)
    streak = want(ids) and streak + 1 or 0
    return streak >= n
  end)
end

test("serve_sighup_reloads_and_a_broken_config_keeps_the_old_one", function()
  with_server({ workers = 2 }, function(srv)
    ok(not models(srv).added, "not there yet")
    write(srv.cfg, added_config())
    os.execute("kill -HUP " .. srv.pid)
    models_agree(srv, "/v1/models showing the new group", 6, function(ids)
      return ids.added
    end)
    rerank_ok(post(srv, "/rerank", { model = "added", query = "gpu", documents = { "gpu" } }),
      "the new group serves")
    -- a file that is not YAML, then one whose values are wrong: the supervisor refuses each
    -- (reload_refused); were one past it, each worker would refuse it (reload_failed)
    local function refusals()
      local n, last = 0, nil
      for line in (read(srv.log) or ""):gmatch("[^\n]+") do
        if line:find('"event":"reload_refused"', 1, true)
          or line:find('"event":"reload_failed"', 1, true) then
          n, last = n + 1, line
        end
      end
      return n, last
    end
    local broken = {
      { added_config(true), "YAML" },
      { "model_list:\n  - model_name: x\n    litellm_params:\n      model: 5\n",
        "litellm_params%.model" },
    }
    for _, b in ipairs(broken) do
      local before = refusals()
      write(srv.cfg, b[1])
      os.execute("kill -HUP " .. srv.pid)
      local l = poll("a reload_refused or reload_failed line", 10, function()
        local n, last = refusals()
        return n > before and last
      end)
      match(l, '"level":"error"', "an error line")
      match(l, b[2], "says what is wrong")
      for _ = 1, 6 do
        local ids = models(srv)
        ok(ids.added and ids["nvidia-rerank"], "the old config still serves")
      end
    end
    rerank_ok(post(srv, "/rerank", { model = "added", query = "gpu", documents = { "gpu" } }))
    rerank_ok(post(srv, "/rerank", SEED))
    eq(#children(srv.pid), 2, "both workers alive")
  end)
end)

local function kill_worker(srv)
  local before = children(srv.pid)
  eq(#before, srv.workers, "workers before")
  local victim = before[1]
  os.execute("kill -KILL " .. victim)
  poll("the killed worker gone", 10, function() return not alive(victim) end)
  return victim, before
end

local function replaced(srv, victim)
  return poll("a replacement worker", 15, function()
    local now = children(srv.pid)
    if #now ~= srv.workers then return false end
    for _, p in ipairs(now) do if p == victim then return false end end
    return now
  end)
end

test("serve_a_killed_worker_is_replaced_while_the_other_serves", function()
  with_server({ workers = 2 }, function(srv)
    rerank_ok(post(srv, "/rerank", SEED))
    sleep(2.5) -- workers publish their figures once a second: this one is on the board
    local victim, before = kill_worker(srv)
    for i = 1, 10 do rerank_ok(post(srv, "/rerank", SEED), "request " .. i .. " after kill") end
    local now = replaced(srv, victim)
    ok(now[1] ~= before[1] or now[2] ~= before[2], "a new pid")
    local l = log_event(srv, '"event":"worker_died"')
    match(l, "signal 9", "killed by SIGKILL")
    -- what the dead worker counted is still in the sums (the supervisor keeps it)
    poll("the dead worker's requests still counted", 15, function()
      local m = get(srv, "/metrics")
      return metric(m.body, "nimrank_requests_total",
        { route = "/rerank", model = "nvidia-rerank", status = "200" }) == 11
    end)
    log_event(srv, '"event":"worker_started"')
    for i = 1, 10 do rerank_ok(post(srv, "/rerank", SEED), "request " .. i .. " after") end
    eq(get(srv, "/health/readiness").status, 200, "ready")
  end)
end)

test("serve_a_worker_replaced_after_a_reload_serves_the_reloaded_config", function()
  with_server({ workers = 2 }, function(srv)
    write(srv.cfg, added_config())
    os.execute("kill -HUP " .. srv.pid)
    models_agree(srv, "/v1/models showing the new group", 6, function(ids)
      return ids.added
    end)
    local victim = kill_worker(srv)
    replaced(srv, victim)
    -- both workers (the old one and the new one) must know the reloaded config
    models_agree(srv, "every worker showing the reloaded group", 8, function(ids)
      return ids.added
    end)
  end)
end)

-- Asks /health/readiness on one kept-alive connection, sends SIGTERM, and asks again until
-- the answer is 503 or the connection closes. Prints one status line per answer.
local DRAIN_PROBE = [[
port=$1; pid=$2
exec 3<>/dev/tcp/127.0.0.1/$port || exit 1
ask() {
  printf 'GET /health/readiness HTTP/1.1\r\nHost: t\r\n\r\n' >&3
  IFS= read -r -t 10 status <&3 || return 1
  len=0
  while IFS= read -r -t 10 line <&3; do
    line=${line%$'\r'}
    [ -z "$line" ] && break
    case "$line" in [Cc]ontent-[Ll]ength:*) len=${line#*: };; esac
  done
  [ "$len" -gt 0 ] && read -r -t 10 -N "$len" body <&3
  echo "${status%$'\r'}"
}
ask || echo closed
kill -TERM "$pid"
i=0
while [ $i -lt 200 ]; do
  s=$(ask) || { echo closed; break; }
  echo "$s"
  case "$s" in *503*) break;; esac
  sleep 0.01
  i=$((i + 1))
done
]]

test("serve_sigterm_drains_in_flight_requests_and_exits_0", function()
  with_server({}, function(srv) -- one worker: the kept-alive probe reaches the draining one
    local marker = "drain-" .. nserver .. "-" .. os.time()
    local body = srv.dir .. "/slow.json"
    write(body, json.encode({ model = "nvidia-rerank", query = "!delay=2500 " .. marker,
      documents = { "a", "b" } }))
    local out = srv.dir .. "/slow.out"
    os.execute(("(curl -s --http1.1 --max-time 30 -H %s -H 'Content-Type: application/json' "
      .. "--data-binary @%s -o %s -w '%%{http_code}' %s >%s 2>/dev/null; echo done >>%s) "
      .. ">/dev/null 2>&1 &"):format(q("Authorization: Bearer " .. MASTER), q(body),
      q(out .. ".body"), q(srv.base .. "/rerank"), q(out), q(out)))
    poll("the slow request reaching the upstream", 10, function()
      local last = h.last(h.url)
      return last and last.body and last.body:find(marker, 1, true)
    end)
    local probe = srv.dir .. "/probe.sh"
    write(probe, DRAIN_PROBE)
    local lines = sh(("bash %s %s %d 2>&1"):format(q(probe), srv.port, srv.pid))
    match(lines, "^HTTP/1%.1 200", "ready before SIGTERM")
    match(lines, "\nHTTP/1%.1 503", "readiness 503 while draining: " .. lines)
    poll("the slow request's answer", 20, function()
      return (read(out) or ""):find("done")
    end)
    match(read(out), "^200", "the in-flight request completed")
    local res = h.decode(read(out .. ".body"))
    eq(#res.results, 2, "with its results")
    poll("the server exiting", 20, function() return read(srv.rcf) end)
    eq(stop(srv), 0, "exit code")
    log_event(srv, '"event":"draining"')
    log_event(srv, '"event":"stopped"')
  end)
end)

test("serve_sigterm_past_the_grace_period_answers_503_and_exits_0", function()
  with_server({ args = "--grace 0.5" }, function(srv)
    local marker = "grace-" .. nserver .. "-" .. os.time()
    local body = srv.dir .. "/slow.json"
    write(body, json.encode({ model = "nvidia-rerank", query = "!delay=8000 " .. marker,
      documents = { "a" } }))
    local out = srv.dir .. "/slow.out"
    os.execute(("(curl -s --http1.1 --max-time 30 -H %s -H 'Content-Type: application/json' "
      .. "-H 'x-request-id: %s' -D %s --data-binary @%s -o %s -w '%%{http_code}' %s >%s "
      .. "2>/dev/null; echo \" exit=$?\" >>%s) >/dev/null 2>&1 &"):format(
      q("Authorization: Bearer " .. MASTER), marker, q(out .. ".head"), q(body),
      q(out .. ".body"), q(srv.base .. "/rerank"), q(out), q(out)))
    poll("the slow request reaching the upstream", 10, function()
      local last = h.last(h.url)
      return last and last.body and last.body:find(marker, 1, true)
    end)
    os.execute("kill -TERM " .. srv.pid)
    poll("the server exiting", 20, function() return read(srv.rcf) end)
    eq(stop(srv), 0, "exit code: the worker ended itself")
    local res = poll("the slow request's end", 20, function()
      local t = read(out) or ""
      return t:find("exit=") and t
    end)
    -- its task is cancelled and it is told why (a worker may not stop with it suspended)
    match(res, "^503 exit=0", "the request was answered 503")
    is_error({ status = 503, body = read(out .. ".body"), json = h.decode(read(out .. ".body")),
      headers = { ["content-type"] = "application/json" } }, 503, "service_unavailable")
    match(read(out .. ".head") or "", "\n[Xx]%-[Rr]equest%-[Ii]d: " .. marker:gsub("%-", "%%-"),
      "the 503 carries the request's id, as every answer does")
    log_event(srv, '"event":"drain_timeout"')
    log_event(srv, '"pid":%d+,"event":"stopped","message":"worker stopped"')
  end)
end)

test("serve_kept_alive_connection_serves_requests_in_turn_and_pipelined", function()
  with_server({}, function(srv)
    -- curl: three URLs over one connection, the first two waiting on the upstream
    local body = srv.dir .. "/ka.json"
    write(body, json.encode({ model = "nvidia-rerank", query = "!delay=200 kept alive",
      documents = { "a", "b" }, top_n = 1 }))
    local out = sh(("curl -s --http1.1 --max-time 20 -H %s -H 'Content-Type: application/json' "
      .. "--data-binary @%s -o /dev/null -o /dev/null -o /dev/null "
      .. "-w '%%{http_code} %%{num_connects}\n' %s %s %s")
      :format(q("Authorization: Bearer " .. MASTER), q(body), q(srv.base .. "/rerank"),
        q(srv.base .. "/v1/rerank"), q(srv.base .. "/v2/rerank")))
    eq(out, "200 1\n200 0\n200 0\n", "three answers, one connection")
    -- raw: a POST that waits on the upstream, two GETs sent before its answer
    local b = json.encode({ model = "nvidia-rerank", query = "!delay=300 pipelined",
      documents = { "a" } })
    local script = srv.dir .. "/pipe.sh"
    write(script, ([[
exec 3<>/dev/tcp/127.0.0.1/$1 || exit 1
printf 'POST /rerank HTTP/1.1\r\nHost: t\r\nx-api-key: %s\r\n' >&3
printf 'Content-Type: application/json\r\n' >&3
printf 'Content-Length: %d\r\n\r\n%%s' %s >&3
printf 'GET /health/liveliness HTTP/1.1\r\nHost: t\r\n\r\n' >&3
printf 'GET /health/readiness HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n' >&3
cat <&3
]]):format(MASTER, #b, q(b)))
    local raw = sh(("timeout 20 bash %s %s 2>&1"):format(q(script), srv.port))
    local statuses = {}
    for st in raw:gmatch("HTTP/1%.1 (%d+)") do statuses[#statuses + 1] = st end
    eq(table.concat(statuses, " "), "200 200 200", "three answers in order")
    local first = raw:find('"results"', 1, true)
    local alive_at = raw:find("I'm alive", 1, true)
    local ready_at = raw:find('"healthy"', 1, true)
    ok(first and alive_at and ready_at and first < alive_at and alive_at < ready_at,
      "the rerank answer first, then the GETs: " .. raw:sub(1, 400))
  end)
end)

test("serve_idle_timeout_closes_idle_connections_not_ones_waiting_upstream", function()
  with_server({ args = "--idle-timeout 1" }, function(srv)
    -- waiting 2.5 s on the upstream is not idleness
    rerank_ok(post(srv, "/rerank", { model = "nvidia-rerank", query = "!delay=2500 patient",
      documents = { "a" } }), "a request longer than the idle timeout")
    local script = srv.dir .. "/idle.sh"
    write(script, [[
exec 3<>/dev/tcp/127.0.0.1/$1 || exit 1
printf 'GET /health/liveliness HTTP/1.1\r\nHost: t\r\n\r\n' >&3
IFS= read -r -t 10 status <&3 && echo "${status%$'\r'}"
while :; do
  IFS= read -r -t 15 line <&3
  rc=$?
  [ $rc -ne 0 ] && break
done
echo "rc=$rc"
]])
    local out = sh(("bash %s %s 2>&1"):format(q(script), srv.port))
    -- 1 is the end of the file (the server closed); above 128 would be read's own timeout
    eq(out, "HTTP/1.1 200 OK\nrc=1\n", "answered, then closed when idle")
  end)
end)

test("serve_request_head_over_the_limit_is_refused_and_the_server_goes_on", function()
  with_server({}, function(srv)
    eq(get(srv, "/health/liveliness", { headers = { "x-pad: " .. ("a"):rep(6000) } }).status,
      200, "a 6 KB header is fine")
    local r = get(srv, "/health/liveliness", { headers = { "x-pad: " .. ("a"):rep(40000) } })
    -- libmicrohttpd answers this one itself (431, its own HTML body: not the JSON envelope)
    eq(r.status, 431, "too large a head")
    rerank_ok(post(srv, "/rerank", SEED), "still serving")
  end)
end)

-- ---- --check ---------------------------------------------------------------------------------
test("serve_check_exits_0_on_a_good_config_and_2_on_a_bad_one", function()
  local dir = TMP .. "/check"
  os.execute("mkdir -p " .. q(dir))
  local good = dir .. "/good.yaml"
  write(good, main_config())
  local out, code = sh(("SERVE_SPEC_MASTER=x %s serve --config %s --check 2>&1"):format(BIN,
    q(good)))
  eq(code, 0, "good: exit")
  match(out, "config OK", "good: says so")
  local cases = {
    { "model_list:\n  - model_name: x\n    litellm_params:\n      model: 5\n", "model" },
    { main_config({ general = "  max_request_size_mb: -1\n" }), "max_request_size_mb" },
    { "model_list:\n  - model_name: [unclosed\n", "config" },
    -- a master key no client could send in a header
    { main_config({ no_key = true, general = '  master_key: " sk-x"\n' }), "white space" },
    { main_config({ no_key = true, general = '  master_key: "sk-a\\nb"\n' }), "control" },
  }
  for i, c in ipairs(cases) do
    local bad = ("%s/bad%d.yaml"):format(dir, i)
    write(bad, c[1])
    local so, sc = sh(("SERVE_SPEC_MASTER=x %s serve --config %s --check 2>/dev/null")
      :format(BIN, q(bad)))
    eq(sc, 2, "bad " .. i .. ": exit")
    eq(so, "", "bad " .. i .. ": nothing on stdout")
    local se = sh(("SERVE_SPEC_MASTER=x %s serve --config %s --check 2>&1 >/dev/null")
      :format(BIN, q(bad)))
    match(se, c[2], "bad " .. i .. ": the error on stderr")
  end
  -- a missing os.environ/ variable for the master key is an error too
  local _, sc = sh(("env -u SERVE_SPEC_MASTER %s serve --config %s --check 2>/dev/null")
    :format(BIN, q(good)))
  eq(sc, 2, "missing variable: exit")
end)

-- ---- robustness -----------------------------------------------------------------------------
-- Opens n connections from one bash process (no process per client). mode "half": each
-- sends a request's headers and part of its body, then waits; mode "idle": each sends one
-- GET and reads its answer, then stays open (keep-alive). Writes "opened n" and, for idle,
-- "ok k" (answers that were 200) to the ready file; then blocks until killed.
local HOLDER = [[
port=$1; n=$2; mode=$3; ready=$4
mkfifo "$ready.fifo" && exec {w}<>"$ready.fifo"
fds=()
for ((i = 0; i < n; i++)); do
  exec {fd}<>/dev/tcp/127.0.0.1/$port || { echo "failed $i" >"$ready"; exit 1; }
  if [ "$mode" = half ]; then
    printf 'POST /rerank HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n' >&$fd
    printf 'Content-Length: 1000\r\n\r\n{"model": "offline", "qu' >&$fd
  else
    printf 'GET /health/liveliness HTTP/1.1\r\nHost: t\r\n\r\n' >&$fd
  fi
  fds+=($fd)
done
echo "opened $n" >"$ready"
if [ "$mode" = idle ]; then
  good=0
  for fd in "${fds[@]}"; do
    IFS= read -r -u $fd line && case "$line" in "HTTP/1.1 200"*) good=$((good + 1));; esac
  done
  echo "ok $good" >>"$ready"
fi
read -u $w
]]

-- Starts the holder in the background; returns its pid and ready file.
local function hold_connections(srv, n, mode)
  local script = srv.dir .. "/hold.sh"
  write(script, HOLDER)
  local ready, pidf = srv.dir .. "/hold." .. mode, srv.dir .. "/hold.pid"
  os.execute(("(bash %s %d %d %s %s </dev/null >/dev/null 2>&1 & echo $! >%s) >/dev/null 2>&1")
    :format(q(script), srv.port, n, mode, q(ready), q(pidf)))
  local pid = poll("the holder's pid", 10, function() return tonumber(read(pidf) or "") end)
  return pid, ready
end

local function with_holder(srv, n, mode, fn)
  local pid, ready = hold_connections(srv, n, mode)
  local okr, err = pcall(fn, ready)
  os.execute("kill -KILL " .. pid .. " 2>/dev/null")
  poll("the holder gone", 10, function() return not alive(pid) end)
  if not okr then error(err, 0) end
end

test("serve_1000_half_sent_requests_do_not_stop_a_normal_request", function()
  with_server({ workers = 2 }, function(srv)
    with_holder(srv, 1000, "half", function(ready)
      local state = poll("1000 connections open", 30, function()
        local s = read(ready)
        return s and s:match("%a+ %d+")
      end)
      eq(state, "opened 1000", "all opened")
      for i = 1, 3 do
        rerank_ok(post(srv, "/rerank", SEED, { timeout = 10 }), "request " .. i)
      end
      eq(get(srv, "/health/readiness", { timeout = 10 }).status, 200, "ready")
    end)
    rerank_ok(post(srv, "/rerank", SEED, { timeout = 10 }), "after they went away")
  end)
end)

test("serve_header_timeout_closes_a_connection_that_sent_only_the_request_line", function()
  with_server({ args = "--header-timeout 1" }, function(srv)
    local probe = srv.dir .. "/line.sh"
    write(probe, [[
exec 3<>/dev/tcp/127.0.0.1/$1 || exit 1
printf 'POST /rerank HTTP/1.1\r\n' >&3
while :; do
  IFS= read -r -t 10 line <&3
  rc=$?
  [ $rc -ne 0 ] && break
  echo "got: $line"
done
echo "rc=$rc"
]])
    local out = sh(("bash %s %s 2>&1"):format(q(probe), srv.port))
    -- read ends with 1 at end of file; above 128 when the 10 s ran out
    eq(out, "rc=1\n", "closed by the server, nothing sent")
    rerank_ok(post(srv, "/rerank", SEED), "a whole request is still served")
  end)
end)

test("serve_10000_idle_keepalive_connections_while_requests_succeed", function()
  local limit = tonumber(trim(sh("ulimit -n"))) or 1024
  local n = math.min(10000, limit - 300)
  if n < 1000 then spec.skip(("ulimit -n is %d: too few descriptors for 1000"):format(limit)) end
  with_server({ workers = 2 }, function(srv)
    with_holder(srv, n, "idle", function(ready)
      local state = poll(n .. " connections answered", 45, function()
        local s = read(ready) or ""
        if s:find("failed") then return s end
        return s:match("ok %d+")
      end)
      eq(state, "ok " .. n, "every kept-alive connection got its 200")
      for i = 1, 5 do
        rerank_ok(post(srv, "/rerank", SEED, { timeout = 10 }), "request " .. i)
      end
      eq(get(srv, "/health/liveliness", { timeout = 10 }).status, 200, "liveliness")
    end)
  end)
end)

test("serve_100000_documents_to_local_bm25", function()
  with_server({}, function(srv)
    local docs = {}
    for i = 1, 100000 do docs[i] = ("doc %d lorem ipsum dolor"):format(i) end
    docs[77777] = "the gpu memory bandwidth of the h100"
    local body = json.encode({ model = "offline", query = "gpu memory bandwidth",
      documents = docs, top_n = 3, return_documents = false })
    ok(#body > 2e6, "a body of " .. #body .. " bytes")
    local r = post(srv, "/rerank", body, { timeout = 30 })
    local res = rerank_ok(r, "100,000 documents")
    eq(#res.results, 3, "top 3")
    eq(res.results[1].index, 77776, "the matching document first")
  end)
end)

-- ---- the end: nothing left running ----------------------------------------------------------
spec.test("serve_spec_leaves_no_process_and_leaks_no_secret", function()
  local left = {}
  for _, srv in ipairs(servers) do
    stop(srv)
    if alive(srv.pid) then left[#left + 1] = srv.pid end
  end
  -- (a bracket in the pattern, so the shell running pgrep does not match itself)
  local out = sh("pgrep -f " .. q(TMP .. "/[s]") .. " 2>/dev/null")
  for p in out:gmatch("%d+") do left[#left + 1] = p end
  eq(table.concat(left, " "), "", "processes left running")
  eq(table.concat(leaks, " "), "", "files holding a secret")
  if not os.getenv("SERVE_SPEC_KEEP") then os.execute("rm -rf " .. q(TMP)) end
end)
