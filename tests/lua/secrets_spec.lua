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
local PORT = h.url:match(":(%d+)$")

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
  run_paths("api_key", function() return h.args({ api_key = SENTINEL }) end)
  -- a caller's Authorization header, and a custom one
  run_paths("headers", function()
    return h.args({ api_key = nil, headers = { Authorization = "Bearer " .. SENTINEL,
      ["X-Api-Key"] = SENTINEL } })
  end)
  -- a password in api_base (connection errors, and what the server echoes)
  run_paths("userinfo", function()
    return h.args({ api_base = ("http://user:%s@127.0.0.1:%s"):format(SENTINEL, PORT) })
  end)
  local _, cerr = nim.rerank(h.args({ api_base = ("http://user:%s@127.0.0.1:1"):format(SENTINEL) }))
  collect("userinfo refused", cerr)
  -- a config: literal and from the environment, through the router's attempts
  local cfg = { model_list = { { model_name = "g", litellm_params = { model = h.RETRIEVAL,
    api_base = h.url, api_key = SENTINEL } } }, router_settings = { num_retries = 1 } }
  nim.load_config(cfg)
  run_paths("config", function() return { model = "g", documents = h.DOCS } end)
  nim.load_config({})
end)

test("sentinel_through_the_command_line_and_the_environment", function()
  local env = ("NVIDIA_NIM_API_KEY=%s SECRET_VAR=%s "):format(q(SENTINEL), q(SENTINEL))
  for _, query in ipairs(PATHS) do
    collect("cli env " .. query, sh(("%s%s rerank -m %s --api-base %s --timeout 0.3 --json -q %s "
      .. "gpu cats 2>&1"):format(env, h.nimrank, h.RETRIEVAL, q(h.url), q(query))))
    collect("cli -H " .. query, sh(("%s rerank -m %s --api-base %s --timeout 0.3 -H %s -q %s "
      .. "gpu 2>&1"):format(h.nimrank, h.RETRIEVAL, q(h.url), q("Authorization: Bearer "
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

test("nothing_that_came_out_holds_the_sentinel_or_a_piece_of_it", function()
  ok(#outputs > 50, "outputs collected: " .. #outputs)
  local leaks = {}
  for _, o in ipairs(outputs) do
    for i = 1, #SENTINEL - 7 do
      if o[2]:find(SENTINEL:sub(i, i + 7), 1, true) then
        leaks[#leaks + 1] = ("%s: %q"):format(o[1], o[2]:sub(1, 300))
        break
      end
    end
  end
  ok(#leaks == 0, "leaks:\n" .. table.concat(leaks, "\n"))
  print(("     %d outputs searched for the sentinel and its %d 8-character pieces: none found")
    :format(#outputs, #SENTINEL - 7))
end)

test("the_environments_key_over_plain_http_to_another_host_is_warned_about", function()
  local out = sh(("NVIDIA_NIM_API_KEY=k-test-only %s rerank -m %s --api-base http://192.0.2.1:9 "
    .. "--timeout 0.2 -q q d 2>&1"):format(h.nimrank, h.RETRIEVAL))
  spec.match(out, "warning: NVIDIA_NIM_API_KEY from the environment was sent over plain http",
    "warned")
  local res = assert(nim.rerank(h.args()))
  ok(not (res.meta.warnings and res.meta.warnings[1]), "loopback and an explicit key: no warning")
end)
