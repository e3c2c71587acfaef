-- Secrets: a sentinel credential goes in every way a key can (the environment, a config, the
-- api_key argument, a caller's header, a password in api_base) and through every error path;
-- all that comes out (stdout, stderr, tostring(err), err.message, meta, attempts, warnings)
-- is searched for it and for every 8-character piece of it.
local spec = require "spec"
local h = require "helpers"
local nim = require "nim"
local json = require "nim.json"
local test, ok = spec.test, spec.ok
local q, sh = h.q, h.sh

local SENTINEL = ("k%08x%08x%08x%08x"):format(math.random(0, 0x7fffffff),
  math.random(0, 0x7fffffff), math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
-- The open fake answers whatever key comes (a keyed one would stop every path at its 401).
local OPEN = h.open_url
local PORT = OPEN:match(":(%d+)$")

local outputs = {} -- { where, text }
local function collect(where, v)
  if type(v) == "table" then
    outputs[#outputs + 1] = { where, tostring(v) }
    local okj, s = pcall(json.encode, v)
    outputs[#outputs + 1] = { where .. " (json)", okj and s or "" }
  else
    outputs[#outputs + 1] = { where, tostring(v) }
  end
end

-- Every error path a call can take, for one set of arguments.
local PATHS = {
  "!echo-auth gpu",          -- 400 whose body echoes the Authorization header
  "!echo gpu",               -- 200 whose body echoes every header and the body
  "!echo-escaped=270 gpu",   -- the credential JSON-escaped, across the message's 300-byte cut
  "!echo-escaped=150 !ok gpu", -- the same in a 2xx body that is shown raw (bad_response)
  "!echo-escaped=270 !nul gpu", -- the same after a NUL byte (redaction is not a C-string search)
  "!status=500 gpu",         -- 5xx
  "!status=401 !text gpu",   -- 401 as text
  "!malformed gpu",          -- bad_response with the first part of the body
  "!delay=3000 gpu",         -- timeout
}

local function run_paths(where, base)
  for _, query in ipairs(PATHS) do
    local args = base()
    args.query, args.timeout = query .. " " .. where, 0.3
    local res, err = nim.rerank(args)
    collect(where .. " " .. query, res)
    collect(where .. " " .. query, err)
    if err then collect(where .. " message", err.message) end
  end
end

test("sentinel_through_every_entry_and_error_path", function()
  -- api_key argument
  run_paths("api_key", function() return h.args({ api_key = SENTINEL, api_base = OPEN }) end)
  -- a caller's Authorization header, and a custom one
  run_paths("headers", function()
    return h.args({ api_key = nil, api_base = OPEN, headers = {
      Authorization = "Bearer " .. SENTINEL,
      ["X-Api-Key"] = SENTINEL } })
  end)
  -- a password in api_base (connection errors, and what the server echoes)
  run_paths("userinfo", function()
    return h.args({ api_base = ("http://user:%s@127.0.0.1:%s"):format(SENTINEL, PORT) })
  end)
  run_paths("userinfo, no key (Basic)", function() -- libcurl sends Authorization: Basic
    local a = h.args({ api_base = ("http://user:%s@127.0.0.1:%s"):format(SENTINEL, PORT) })
    a.api_key = nil
    return a
  end)
  local _, cerr = nim.rerank(h.args({ api_base = ("http://user:%s@127.0.0.1:1"):format(SENTINEL) }))
  collect("userinfo refused", cerr)
  -- a config: literal and from the environment, through the router's attempts
  local cfg = { model_list = { { model_name = "g", litellm_params = { model = h.RETRIEVAL,
    api_base = OPEN, api_key = SENTINEL } } }, router_settings = { num_retries = 1 } }
  nim.load_config(cfg)
  run_paths("config", function() return { model = "g", documents = h.DOCS } end)
  nim.load_config({})
  -- an answer whose id echoes the key: a result, so nothing else would redact it
  local res = assert(nim.rerank(h.args({ api_key = SENTINEL, api_base = OPEN,
    query = "!id=" .. SENTINEL .. " gpu" })))
  spec.match(res.id, "%[redacted%]", "the id is redacted")
  collect("id echo", res)
end)

test("sentinel_through_the_command_line_and_the_environment", function()
  local env = ("NVIDIA_NIM_API_KEY=%s SECRET_VAR=%s "):format(q(SENTINEL), q(SENTINEL))
  for _, query in ipairs(PATHS) do
    collect("cli env " .. query, sh(("%s%s rerank -m %s --api-base %s --timeout 0.3 --json -q %s "
      .. "gpu cats 2>&1"):format(env, h.nimrank, h.RETRIEVAL, q(OPEN), q(query))))
    collect("cli -H " .. query, sh(("%s rerank -m %s --api-base %s --timeout 0.3 -H %s -q %s "
      .. "gpu 2>&1"):format(h.nimrank, h.RETRIEVAL, q(OPEN), q("Authorization: Bearer "
      .. SENTINEL), q(query))))
  end
  -- over plain http to a host that is not this one: a warning, never the key
  collect("cli http warning", sh(("%s%s rerank -m %s --api-base http://192.0.2.1:9 "
    .. "--timeout 0.2 -q q d 2>&1"):format(env, h.nimrank, h.RETRIEVAL)))
  -- a config that puts the key in a wrong field, from the environment
  local f = os.tmpname()
  local fh = io.open(f, "w")
  fh:write("model_list:\n  - model_name: g\n    litellm_params:\n      model: local/bm25\n"
    .. "      truncate: os.environ/SECRET_VAR\n")
  fh:close()
  collect("config error", sh(("%s%s --config %s -e '' 2>&1"):format(env, h.nimrank, f)))
  os.remove(f)
end)

-- RFC 4648 base64: how a password in api_base travels (Authorization: Basic), and can echo.
local function base64(s)
  local abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  return (s:gsub("..?.?", function(c)
    local a, b, d = c:byte(1, 3)
    local v = a * 65536 + (b or 0) * 256 + (d or 0)
    local out = ""
    for k = 3, 0, -1 do out = out .. abc:sub((v >> (6 * k)) % 64 + 1, (v >> (6 * k)) % 64 + 1) end
    return out:sub(1, #c + 1) .. ("="):rep(3 - #c)
  end))
end

test("nothing_that_came_out_holds_the_sentinel_or_a_piece_of_it", function()
  ok(#outputs > 50, "outputs collected: " .. #outputs)
  -- the key, its Basic form, and the key \u-escaped (pieces of two escaped characters)
  local escaped = SENTINEL:gsub(".", function(c) return ("\\u%04x"):format(c:byte()) end)
  local forms = { { SENTINEL, 8 }, { base64("user:" .. SENTINEL), 8 }, { escaped, 12 } }
  local leaks, pieces = {}, 0
  for _, f in ipairs(forms) do pieces = pieces + #f[1] - f[2] + 1 end
  for _, o in ipairs(outputs) do
    for _, f in ipairs(forms) do
      local form, w = f[1], f[2]
      for i = 1, #form - w + 1 do
        if o[2]:find(form:sub(i, i + w - 1), 1, true) then
          leaks[#leaks + 1] = ("%s: %q"):format(o[1], o[2]:sub(1, 300))
          break
        end
      end
    end
  end
  ok(#leaks == 0, "leaks:\n" .. table.concat(leaks, "\n"))
  local redacted = 0 -- the echo paths did reach the server and come back
  for _, o in ipairs(outputs) do
    if o[2]:find("[redacted]", 1, true) then redacted = redacted + 1 end
  end
  ok(redacted >= 20, "echoed credentials were redacted in " .. redacted .. " outputs")
  print(("     %d outputs searched for the sentinel, its Basic and \\u-escaped forms and "
    .. "their %d pieces: none found"):format(#outputs, pieces))
end)

test("the_environments_key_over_plain_http_to_another_host_is_warned_about", function()
  local out = sh(("NVIDIA_NIM_API_KEY=k-test-only %s rerank -m %s --api-base http://192.0.2.1:9 "
    .. "--timeout 0.2 -q q d 2>&1"):format(h.nimrank, h.RETRIEVAL))
  spec.match(out, "warning: NVIDIA_NIM_API_KEY from the environment was sent over plain http",
    "warned")
  local res = assert(nim.rerank(h.args()))
  ok(not (res.meta.warnings and res.meta.warnings[1]), "loopback and an explicit key: no warning")
end)
