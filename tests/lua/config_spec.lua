-- nim.config: LiteLLM's config.yaml, os.environ/ values, errors that name the key path.
local spec = require "spec"
local h = require "helpers"
local nim = require "nim"
local config = require "nim.config"
local test, eq, ok, raises = spec.test, spec.eq, spec.ok, spec.raises

local function temp_file(text, ext)
  local name = os.tmpname() .. (ext or ".yaml")
  local f = assert(io.open(name, "wb"))
  f:write(text)
  f:close()
  return name
end

local SEED = [[
model_list:
  - model_name: nvidia-rerank
    litellm_params:
      model: nvidia_nim/nvidia/llama-3_2-nv-rerankqa-1b-v2
      api_key: os.environ/FAKE_KEY
  - model_name: nvidia-ranking
    litellm_params:
      model: nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2
      api_key: os.environ/FAKE_KEY
]]

test("seed_litellm_config_loads_unchanged", function()
  local path = temp_file(SEED)
  local cfg, warnings = config.load(path)
  os.remove(path)
  eq(#cfg.deployments, 2, "deployments")
  eq(cfg.deployments[1].model_name, "nvidia-rerank", "model_name")
  eq(config.env_value(cfg.deployments[1].params.api_key), h.key,
    "os.environ/ read when the deployment is used")
  eq(#warnings, 0, "no warnings")
end)

test("missing_environment_variable_is_reported_by_the_call_that_needs_it", function()
  local cfg = config.load({ model_list = {
    { model_name = "x", litellm_params = { model = h.RETRIEVAL,
      api_key = "os.environ/NIMRANK_SURELY_UNSET_1234" } },
    { model_name = "offline", litellm_params = { model = "local/bm25" } } } })
  local r = require("nim.router").new(cfg)
  ok(r:rerank({ model = "offline", query = "q", documents = { "d" } }),
    "the group that needs no key is served")
  local res, err = r:rerank({ model = "x", query = "q", documents = { "d" } })
  eq(res, nil, "the group that needs the key fails")
  eq(err.type, "auth", "as an auth error")
  spec.match(err.message, "model_list%[1%]%.litellm_params%.api_key", "names the key path")
  spec.match(err.message, "NIMRANK_SURELY_UNSET_1234", "and the variable")
  spec.no_match(err.message, h.key, "no secret")
  raises(function()
    config.load({ general_settings = { master_key = "os.environ/NIMRANK_SURELY_UNSET_1234" } })
  end, "general_settings.master_key", "NIMRANK_SURELY_UNSET_1234", "not set")
end)

test("bad_values_name_the_key_path", function()
  local function bad(cfg, ...) raises(function() config.load(cfg) end, ...) end
  local function dep(params, extra)
    local d = { model_name = "g", litellm_params = params }
    for k, v in pairs(extra or {}) do d[k] = v end
    return { model_list = { d } }
  end
  bad(dep({ model = 5 }), "model_list[1].litellm_params.model: expected string, got integer")
  bad(dep({}), "model_list[1].litellm_params.model: required")
  bad({ model_list = { { litellm_params = { model = "m" } } } }, "model_list[1].model_name")
  bad({ model_list = { { model_name = "g" } } }, "model_list[1].litellm_params: required")
  bad(dep({ model = "m", weight = 0 }), "model_list[1].litellm_params.weight: must be > 0")
  bad(dep({ model = "m", order = 0 }), "litellm_params.order: must be an integer >= 1")
  bad(dep({ model = "m", timeout = "x" }), "litellm_params.timeout: expected number")
  bad(dep({ model = "m", truncate = "MIDDLE" }),
    "litellm_params.truncate: must be one of NONE, END")
  bad({ model_list = "x" }, "model_list: expected list")
  bad({ router_settings = { num_retries = -1 } },
    "router_settings.num_retries: must be an integer >= 0")
  bad({ router_settings = { num_retries = 1.5 } }, "router_settings.num_retries: expected integer")
  bad({ router_settings = { cooldown_time = "soon" } },
    "router_settings.cooldown_time: expected number")
  bad({ router_settings = { fallbacks = { "x" } } }, "router_settings.fallbacks[1]: expected map")
  bad({ router_settings = { fallbacks = { { g = "x" } } } },
    "router_settings.fallbacks[1].g: expected list")
  bad({ litellm_settings = { drop_params = "yes" } },
    "litellm_settings.drop_params: expected boolean")
  bad({ general_settings = { master_key = 42 } }, "general_settings.master_key: expected string")
  bad({ model_list = { { model_name = "g", litellm_params = { model = "m" },
    model_info = { id = {} } } } },
    "model_list[1].model_info.id")
end)

test("unknown_keys_are_warnings", function()
  local cfg, warnings = config.load({ foo = 1, router_settings = { bar = 2,
    routing_strategy = "cost-based-routing" },
    model_list = { { model_name = "g", litellm_params = { model = "m", zap = 1 },
      extra = true } } })
  ok(cfg, "loaded")
  local all = table.concat(warnings, "\n")
  spec.match(all, "foo: unknown key", "top level")
  spec.match(all, "router_settings.bar: unknown key", "section")
  spec.match(all, "model_list%[1%]%.litellm_params%.zap", "params")
  spec.match(all, "model_list%[1%]%.extra", "entry")
  spec.match(all, "cost%-based%-routing\" is not supported", "unsupported strategy named")
end)

test("yaml_syntax_error_is_reported", function()
  local path = temp_file("model_list: [unclosed\n")
  raises(function() config.load(path) end, path, "not valid YAML")
  os.remove(path)
  raises(function() config.load("/nonexistent/config.yaml") end, "cannot open")
end)

test("lua_config_file_and_table", function()
  local name = os.tmpname() .. ".lua"
  local f = assert(io.open(name, "wb"))
  f:write('return { model_list = { { model_name = "g", '
    .. 'litellm_params = { model = "local/bm25" } } } }')
  f:close()
  local cfg = config.load(name)
  os.remove(name)
  eq(cfg.deployments[1].params.model, "local/bm25", "lua file")
  eq(config.load({}).deployments[1], nil, "empty table")
end)

test("fallbacks_and_aliases_normalised", function()
  local groups = {}
  for _, g in ipairs({ "a", "b", "c", "z" }) do
    groups[#groups + 1] = { model_name = g, litellm_params = { model = "local/bm25" } }
  end
  local cfg = config.load({
    model_list = groups,
    router_settings = { fallbacks = { { a = { "b", "c" } } }, model_group_alias = { x = "a",
      y = { model = "b" } },
      default_fallbacks = { "local/bm25" } },
    litellm_settings = { fallbacks = { { z = { "a" } } } },
  })
  eq(table.concat(cfg.router.fallbacks.a, ","), "b,c", "router fallbacks")
  eq(cfg.router.model_group_alias.y, "b", "alias table form")
  eq(cfg.litellm.fallbacks.z[1], "a", "litellm fallbacks")
end)

test("load_config_applies_litellm_settings_and_catalog", function()
  local before = nim.settings.drop_params
  nim.load_config({ litellm_settings = { drop_params = true, request_timeout = 12 },
    nimrank_settings = { catalog = { ["acme/r"] = { body_model = "acme-r", max_passages = 3 } } } })
  eq(nim.settings.drop_params, true, "drop_params")
  eq(nim.settings.timeout, 12, "request_timeout")
  eq(nim.catalog["acme/r"].body_model, "acme-r", "catalog entry added")
  raises(function()
    nim.load_config({ nimrank_settings = { catalog = { ["acme/bad"] = { max_passages = "x" } } } })
  end, "acme/bad", "max_passages")
  nim.settings.drop_params, nim.settings.timeout = before, 60
  nim.catalog["acme/r"] = nil
  nim.load_config({})
end)

test("cli_config_option_routes_group_names", function()
  local path = temp_file([[
model_list:
  - model_name: offline
    litellm_params: { model: local/bm25 }
]])
  local out, code = h.sh(h.nimrank .. " --config " .. path .. " rerank -m offline -q gpu cats gpu")
  local out2, code2 = h.sh(h.nimrank .. " rerank --config " .. path
    .. " -m offline -q gpu cats gpu")
  local out3, code3 = h.sh("NIMRANK_CONFIG=" .. path .. " " .. h.nimrank
    .. " -e 'print(nim.config.deployments[1].model_name)'")
  os.remove(path)
  eq(code, 0, "exit " .. out)
  eq(h.decode(out).meta.model_group, "offline", "group used")
  eq(code2, 0, "after the command " .. out2)
  eq(code3, 0, "NIMRANK_CONFIG")
  eq(out3, "offline\n", "NIMRANK_CONFIG loaded")
  local err, c4 = h.sh(h.nimrank .. " --config /nonexistent.yaml -e 'print(1)' 2>&1")
  eq(c4, 2, "bad config is a usage error")
  spec.match(err, "cannot open", "says why")
end)

-- Config bombs and wrong names: refused at load, in bounded time, naming the key path.
test("config_bombs_are_refused_in_bounded_time", function()
  local function yaml(text)
    local path = temp_file(text)
    local t0 = nim.now()
    local okl, err = pcall(config.load, path)
    os.remove(path)
    ok(nim.now() - t0 < 20, "bounded time") -- unbounded, they took hours or memory
    eq(okl, false, "refused")
    return tostring(err)
  end
  local laughs = { "a: &a [x, x, x, x, x, x, x, x, x, x]" }
  for i = 2, 12 do
    laughs[i] = ("%s: &%s [%s]"):format(string.char(96 + i), string.char(96 + i),
      ("*" .. string.char(95 + i) .. ", "):rep(10):sub(1, -3))
  end
  spec.match(yaml(table.concat(laughs, "\n") .. "\n"), "more than 100000 values",
    "billion laughs")
  spec.match(yaml("a: &a [*a]\n"), "a%[1%]: refers to itself", "a cycle")
  spec.match(yaml("b: &b {c: *b}\n"), "b%.c: refers to itself", "a cycle in a map")
  spec.match(yaml(("["):rep(100000) .. ("]"):rep(100000) .. "\n"), "nested deeper than 64",
    "deep nesting")
  local deep = {}
  local t = deep
  for _ = 1, 100 do t.x = {} t = t.x end
  raises(function() config.load({ nimrank_settings = deep }) end, "nested deeper than 64")
  raises(function() config.load("/tmp") end, "cannot read /tmp")
end)

test("references_to_unknown_names_and_non_finite_numbers_are_refused_at_load", function()
  local function dep(name, extra)
    local p = { model = "local/bm25" }
    for k, v in pairs(extra or {}) do p[k] = v end
    return { model_name = name, litellm_params = p }
  end
  raises(function() config.load({ model_list = { dep("a") },
    router_settings = { fallbacks = { { a = { "nope" } } } } }) end,
    "router_settings.fallbacks.a[1]", '"nope"')
  raises(function() config.load({ model_list = { dep("a") },
    litellm_settings = { default_fallbacks = { "typo" } } }) end,
    "litellm_settings.default_fallbacks[1]")
  raises(function() config.load({ model_list = { dep("a") },
    router_settings = { model_group_alias = { x = "y", y = "x" } } }) end,
    "router_settings.model_group_alias")
  ok(config.load({ model_list = { dep("a") }, router_settings = {
    fallbacks = { { a = { "local/bm25", "nvidia_nim/nvidia/x" } } } } }),
    "provider model strings with their prefix are fine")
  for _, v in ipairs({ math.huge, -math.huge, 0 / 0, 1e300 }) do
    raises(function() config.load({ model_list = { dep("a", { timeout = v }) } }) end,
      "model_list[1].litellm_params.timeout")
    raises(function() config.load({ model_list = { dep("a", { weight = v }) } }) end,
      "model_list[1].litellm_params.weight")
    raises(function() config.load({ litellm_settings = { request_timeout = v } }) end,
      "litellm_settings.request_timeout")
  end
  local path = temp_file("litellm_settings:\n  request_timeout: .inf\n")
  raises(function() config.load(path) end, "request_timeout")
  os.remove(path)
end)

test("values_from_the_environment_are_never_printed", function()
  local okl, err = pcall(config.load, { model_list = { { model_name = "a", litellm_params = {
    model = "local/bm25", truncate = "os.environ/FAKE_KEY" } } } })
  eq(okl, false, "refused")
  spec.match(tostring(err), "truncate: must be one of NONE, END", "says what is wrong")
  spec.no_match(tostring(err), h.key, "but not the value")
end)

-- Runs code in a fresh nimrank with extra environment; returns its output (stdout and
-- stderr) and exit code.
local function nimrank_env(env, code)
  return h.sh(("env %s %s -e %s 2>&1"):format(env, h.nimrank, h.q(code)))
end

-- Every path by which a config value reaches a message: the value read from os.environ/ is
-- never printed (nor an 8-byte piece of it), only the key path or os.environ/NAME.
test("values_from_the_environment_are_never_printed_anywhere", function()
  local secret = h.key -- FAKE_KEY: set in the environment by the test driver
  local function no_secret(s, what)
    for i = 1, #secret - 7 do spec.no_match(s, secret:sub(i, i + 7), what) end
  end
  local function refused(cfg, ...)
    local err = raises(function() config.load(cfg) end, ...)
    no_secret(err, table.concat({ ... }, " "))
  end
  local offline = { model_name = "rr", litellm_params = { model = "local/bm25" } }
  refused({ model_list = { offline },
    router_settings = { model_group_alias = { fast = "os.environ/FAKE_KEY" } } },
    "router_settings.model_group_alias.fast: os.environ/ is not allowed here")
  refused({ model_list = { offline }, router_settings = { model_group_alias = {
    fast = { model = "os.environ/FAKE_KEY" } } } }, "model_group_alias.fast.model",
    "os.environ/ is not allowed here")
  refused({ model_list = { offline },
    router_settings = { fallbacks = { { rr = { "os.environ/FAKE_KEY" } } } } },
    "router_settings.fallbacks[1].rr[1]: os.environ/ is not allowed here")
  refused({ model_list = { offline },
    litellm_settings = { default_fallbacks = { "os.environ/FAKE_KEY" } } },
    "litellm_settings.default_fallbacks[1]: os.environ/ is not allowed here")
  -- a group name or a deployment id is shown everywhere: refused, naming the field
  refused({ model_list = { { model_name = "os.environ/FAKE_KEY",
    litellm_params = { model = "local/bm25" } } } },
    "model_list[1].model_name: os.environ/ is not allowed here")
  refused({ model_list = { { model_name = "rr", litellm_params = { model = "local/bm25" },
    model_info = { id = "os.environ/FAKE_KEY" } } } },
    "model_list[1].model_info.id: os.environ/ is not allowed here")
  -- a routing strategy that is no strategy: refused, naming the field, not the value
  refused({ model_list = { offline },
    router_settings = { routing_strategy = "os.environ/FAKE_KEY" } },
    "router_settings.routing_strategy: unknown strategy a value from the environment")
  -- a filter's name
  local ferr = raises(function()
    nim.load_config({ nimrank_settings = { filters = { rr = { "os.environ/FAKE_KEY" } } } })
  end, "nimrank_settings.filters.rr[1]: unknown filter a value from the environment")
  no_secret(ferr, "the filter's error")
  -- a script path
  local err = raises(function()
    nim.load_config({ nimrank_settings = { scripts = { "os.environ/FAKE_KEY" } } })
  end, "nimrank_settings.scripts[1] (a value from the environment)", "No such file")
  no_secret(err, "the script's error")
  nim.load_config({})
end)

test("a_model_from_the_environment_is_shown_as_its_variable", function()
  local code = ([[
    local json = require "nim.json"
    nim.load_config({ model_list = { { model_name = "rr", litellm_params = {
      model = "os.environ/MY_MODEL", api_base = %q } } } })
    local res, err = nim.rerank({ model = "rr", query = "gpu", documents = { "gpu" } })
    if res then
      print("ok", res.meta.model, res.meta.attempts[1].model, json.encode(res.meta))
    else
      print("err", err.model, err.attempts[1].model, tostring(err), json.encode(err))
    end
    print(pcall(nim.rerank, { model = "rr", query = "gpu", documents = { "gpu" } }))
    print(nim.check({ model = "rr", query = "gpu", documents = { "gpu" } }))
  ]]):format(h.open_url)
  -- answered: meta and attempts show the variable
  local out, rc = nimrank_env("MY_MODEL=" .. h.RETRIEVAL, code)
  eq(rc, 0, out)
  spec.match(out, "^ok\tos%.environ/MY_MODEL\tos%.environ/MY_MODEL\t", "meta and attempts")
  spec.no_match(out, "nemotron", "the value is not printed")
  -- failed (404 unknown model from the fake): err.model, attempts and the message
  local value = "nvidia_nim/nvidia/secret-model-0123456789"
  out, rc = nimrank_env("MY_MODEL=" .. value, code)
  eq(rc, 0, out)
  spec.match(out, "^err\tos%.environ/MY_MODEL\tos%.environ/MY_MODEL\t", "err and attempts")
  spec.no_match(out, "secret-model", "the value is not printed")
  -- a value the binding refuses: misuse naming the variable, never the value
  value = "c2VjcmV0LXRva2VuLXZhbHVl=="
  out = nimrank_env("MY_MODEL=" .. value, code)
  spec.match(out, "os%.environ/MY_MODEL", "names the variable")
  spec.no_match(out, "c2VjcmV0", "the value is not printed")
  out = h.sh(("MY_MODEL=%s %s --config /dev/stdin rerank -m rr -q q d 2>&1 <<'EOF'\n"
    .. "model_list:\n  - model_name: rr\n    litellm_params: { model: os.environ/MY_MODEL }\n"
    .. "EOF"):format(h.q(value), h.nimrank))
  spec.match(out, "os%.environ/MY_MODEL", "the CLI names the variable")
  spec.no_match(out, "c2VjcmV0", "the CLI does not print the value")
end)

-- Config bombs, second round: long keys, Lua configs, pipes, finalizers.
-- Timed against the same config with a one-byte key, so a slow or loaded machine slows both:
-- a path copied per value (the bug) costs 40,000 copies of the 4 MB key: 160 GB, many seconds
-- on any machine.
test("key_paths_are_built_only_for_messages_and_long_keys_are_cut", function()
  local list = {}
  for i = 1, 20000 do list[i] = "x" end
  local function load_with(key)
    local t0 = nim.now()
    local okl, err = pcall(config.load, { nimrank_settings = { [key] = { list } },
      router_settings = { fallbacks = { { [key] = list } } } })
    return okl, err, nim.now() - t0
  end
  local _, _, short = load_with("k")
  local key = ("k"):rep(4000000)
  local okl, err, took = load_with(key)
  eq(okl, false, "refused")
  ok(#tostring(err) < 400, ("a short message (%d bytes)"):format(#tostring(err)))
  spec.match(tostring(err), "^router_settings%.fallbacks%.kkkk+%.%.%.%(4000000 bytes%): ",
    "the key is cut in the path")
  ok(took < 10 * short + 1, ("no copy of the key per value (took %.2f s; %.2f s with a "
    .. "one-byte key)"):format(took, short))
  local _, warnings = config.load({ router_settings = { [key] = 1 } })
  ok(#warnings[1] < 200, "a warning cuts it too")
end)

test("a_lua_config_runs_on_the_instruction_budget_and_a_pipe_is_read_with_a_bound", function()
  local path = os.tmpname() .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write("while true do end\n")
  f:close()
  local out, rc = h.sh(("timeout 20 %s --config %s -e 'print(1)' 2>&1"):format(h.nimrank, path))
  os.remove(path)
  eq(rc, 2, "stopped, not hung: " .. out)
  spec.match(out, "config " .. path:gsub("%p", "%%%0") .. ": stopped after its instruction "
    .. "budget", "named")
  -- a device or a pipe is read up to the 4 MiB bound, never whole (a memory limit keeps a
  -- regression from eating the machine; not under AddressSanitizer, which reserves more)
  local limit = (os.getenv("NIMRANK_SANITIZE") or "") == "" and "ulimit -v 2000000; " or ""
  for _, source in ipairs({ "/dev/zero", "<(yes '# padding')" }) do
    out, rc = h.sh(("bash -c %s 2>&1"):format(h.q(("%stimeout 20 %s --config %s -e "
      .. "'print(1)'"):format(limit, h.nimrank, source))))
    eq(rc, 2, source .. ": refused: " .. out)
    spec.match(out, "is larger than 4194304 bytes", source .. ": at the bound")
  end
end)

test("config_lua_cannot_leave_the_budget_through_a_finalizer", function()
  local function script(text) return temp_file(text, ".lua") end
  local spin = script("setmetatable({}, { __gc = function() while true do end end })\n"
    .. "collectgarbage()\nwhile true do end\n")
  local out, rc = h.sh(("timeout 20 %s -e %s 2>&1"):format(h.nimrank, h.q(
    ("nim.load_config({ nimrank_settings = { scripts = { %q } } })"):format(spin))))
  os.remove(spin)
  ok(rc ~= 124, "not hung: " .. out)
  spec.match(out, "__gc", "the finalizer is refused")
  -- what a config's Lua may still do; what it may not reach
  local probe = script([[
    local nim = ...
    local t = setmetatable({}, { __index = function() return 7 end })
    assert(t.x == 7, "setmetatable without __gc")
    assert(load("return 1 + 1")() == 2, "load")
    assert(collectgarbage == nil and debug == nil and package == nil, "hidden")
    assert(not pcall(require, "debug") and not pcall(require, "_G"), "refused modules")
    assert(not pcall(load("return setmetatable({}, { __gc = print })")), "load's env")
    assert(not pcall(load, "\27Lua", "b", "b"), "no binary chunks")
    require("nim.filters").register("probe_ok", function(r) return r end)
    probed = true
  ]])
  nim.load_config({ nimrank_settings = { scripts = { probe } } })
  os.remove(probe)
  ok(require("nim.filters").names and nim.check({ model = "local/bm25", query = "q",
    documents = { "d" }, filters = { "probe_ok" } }), "its filter is registered")
  eq(rawget(_G, "probed"), nil, "its globals stay its own")
  nim.load_config({})
end)

-- A message the binding cut at its 300 bytes ("...") may end with the first part of a value
-- from the environment: that part is hidden too.
test("a_cut_message_hides_the_first_part_of_an_environment_value", function()
  local code = [[
    local config = require "nim.config"
    local cfg = config.load({ model_list = { { model_name = "rr", litellm_params = {
      model = "os.environ/MY_MODEL" } } } })
    local p = cfg.deployments[1].params
    print(config.hide("x nvidia_nim/acme/secret-model-01234 y", p))
    print(config.hide(("z"):rep(280) .. "nvidia_nim/acme/secret-mo...", p))
    print(config.hide("ends with nvid...", p))
  ]]
  local out = nimrank_env("MY_MODEL=nvidia_nim/acme/secret-model-01234", code)
  eq(out, "x os.environ/MY_MODEL y\n" .. ("z"):rep(280) .. "os.environ/MY_MODEL...\n"
    .. "ends with os.environ/MY_MODEL...\n", "whole values and cut-off first parts")
end)

-- A fallback or an alias's target is shown (meta.fallback, meta.model, attempts, the CLI's
-- "fell back" line): os.environ/ is refused there even when its value names a model.
test("fallbacks_and_alias_targets_may_not_come_from_the_environment", function()
  local code = [[
    local base = { model_list = { { model_name = "rr", litellm_params = {
      model = "nvidia_nim/nvidia/llama-nemotron-rerank-1b-v2", api_base = "http://127.0.0.1:1",
      api_key = "abcdefgh" } } } }
    local function try(section, key, value)
      local cfg = { model_list = base.model_list, [section] = { [key] = value } }
      local ok, err = pcall(nim.load_config, cfg)
      print(ok and "loaded" or tostring(err))
    end
    try("router_settings", "fallbacks", { { rr = { "os.environ/FB" } } })
    try("litellm_settings", "fallbacks", { { rr = { "local/bm25", "os.environ/FB" } } })
    try("router_settings", "default_fallbacks", { "os.environ/FB" })
    try("litellm_settings", "default_fallbacks", { "os.environ/FB" })
    try("router_settings", "model_group_alias", { fast = "os.environ/GROUP" })
    try("router_settings", "model_group_alias", { fast = { model = "os.environ/GROUP" } })
  ]]
  local out = nimrank_env("FB=local/bm25 GROUP=rr", code)
  local lines = {}
  for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
  local want = { "router_settings.fallbacks[1].rr[1]", "litellm_settings.fallbacks[1].rr[2]",
    "router_settings.default_fallbacks[1]", "litellm_settings.default_fallbacks[1]",
    "router_settings.model_group_alias.fast", "router_settings.model_group_alias.fast.model" }
  eq(#lines, #want, "one line each: " .. out)
  for i, path in ipairs(want) do
    eq(lines[i]:sub(1, #path + 2), path .. ": ", "refused, naming the key path: " .. lines[i])
    spec.match(lines[i], "os%.environ/ is not allowed here", "says why: " .. lines[i])
    spec.no_match(lines[i], "bm25", "the value is not printed")
  end
end)

-- Runs code in a fresh nimrank, stopped after 20 s; returns its output and exit code (124:
-- it hung).
local function nimrank_bounded(code)
  return h.sh(("timeout 20 %s -e %s 2>&1"):format(h.nimrank, h.q(code)))
end

-- What a config's Lua could reach to run code later, outside the budget: a userdata's or the
-- strings' metatable, the shared library tables, coroutines (each counted afresh), the
-- metamethods of what a .lua config returns or a script raises.
test("config_lua_cannot_leave_the_budget_through_shared_tables_or_metatables", function()
  local function script(text) return temp_file(text, ".lua") end
  -- a file's finalizer replaced, then garbage: refused, never hung
  local gc = script([[
    getmetatable(io.stdout).__gc = function() while true do end end
  ]])
  local out, rc = nimrank_bounded(([[
    print(pcall(nim.load_config, { nimrank_settings = { scripts = { %q } } }))
    for i = 1, 50 do io.open("/dev/null") end
    local t = {} for i = 1, 200000 do t[i] = { i } end t = nil
    collectgarbage() collectgarbage()
    print("done")
  ]]):format(gc))
  os.remove(gc)
  eq(rc, 0, "not hung: " .. out)
  spec.match(out, "^false\t[^\n]*attempt to index a nil value[^\n]*\ndone\n$", "refused: " .. out)
  -- what the script sees, and that what it changes stays its own
  local probe = script([[
    assert(getmetatable("") == nil, "no string metatable")
    assert(getmetatable(io.stdout) == nil, "no userdata metatable")
    local mt = {}
    assert(getmetatable(setmetatable({}, mt)) == mt, "a table's metatable")
    assert(getmetatable(setmetatable({}, { __metatable = "locked" })) == "locked",
      "__metatable honoured")
    assert(coroutine == nil, "no coroutine library")
    local okc, err = pcall(require, "coroutine")
    assert(not okc and err:find("no coroutine library", 1, true), tostring(err))
    assert(require("string") == string and require("io") == io, "require gives its copies")
    local spin = function() while true do end end
    string.rep, string.format, table.concat, math.floor = spin, spin, spin, spin
    io.write, os.time, utf8.char = spin, spin, spin
    assert(string.rep == spin and require("table").concat == spin, "its own copies changed")
  ]])
  out, rc = nimrank_bounded(([[
    local okl, err = pcall(nim.load_config, { nimrank_settings = { scripts = { %q } } })
    assert(okl, tostring(err))
    print(("ab"):rep(2), string.rep("c", 2), table.concat({ "d", "e" }), math.floor(1.5),
      utf8.char(65), type(os.time()), ("%%d"):format(7))
    io.write("written\n")
  ]]):format(probe))
  os.remove(probe)
  eq(rc, 0, "not hung: " .. out)
  eq(out, "abab\tcc\tde\t1\tA\tnumber\t7\nwritten\n", "the real libraries untouched")
  -- an error object whose __tostring spins: turned into text on the budget
  local raiser = script([[
    error(setmetatable({}, { __tostring = function() while true do end end }))
  ]])
  out, rc = nimrank_bounded(([[
    local okl, err = pcall(nim.load_config, { nimrank_settings = { scripts = { %q } } })
    print(okl, type(err), tostring(err))
  ]]):format(raiser))
  os.remove(raiser)
  eq(rc, 0, "not hung: " .. out)
  spec.match(out, "^false\tstring\tnim: script [^\n]*: stopped after its instruction budget",
    "the budget stops it: " .. out)
end)

test("a_lua_configs_value_is_copied_raw_on_the_budget_and_metatables_are_refused", function()
  local function config_file(text) return temp_file(text, ".lua") end
  local cases = {
    { "return setmetatable({}, { __index = function() while true do end end,\n"
      .. "  __pairs = function() while true do end end })\n", "the returned table" },
    { "return { model_list = { setmetatable({ model_name = 'x' },\n"
      .. "  { __index = function() while true do end end }) } }\n", "model_list[1]" },
    { "return { router_settings = { [setmetatable({}, { __tostring = function()\n"
      .. "  while true do end end })] = 1 } }\n", "router_settings (a key)" },
  }
  for _, c in ipairs(cases) do
    local path = config_file(c[1])
    local out, rc = h.sh(("timeout 20 %s --config %s -e 'print(1)' 2>&1"):format(h.nimrank,
      path))
    os.remove(path)
    eq(rc, 2, "refused, not hung: " .. out)
    spec.match(out, "config " .. path:gsub("%p", "%%%0") .. ": "
      .. c[2]:gsub("%p", "%%%0") .. " has a metatable", "names the key path: " .. out)
  end
  -- plain tables load as before; a cycle is refused naming its path
  local path = config_file("local p = { model = 'local/bm25' }\n"
    .. "return { model_list = { { model_name = 'a', litellm_params = p },\n"
    .. "  { model_name = 'b', litellm_params = p } } }\n")
  local cfg = config.load(path)
  os.remove(path)
  eq(#cfg.deployments, 2, "shared plain tables are fine")
  path = config_file("local t = { a = {} } t.a.b = t return t\n")
  raises(function() config.load(path) end, "a.b: refers to itself")
  os.remove(path)
end)

test("rpm_tpm_without_enforcement_warn_that_they_are_weights_only", function()
  local list = { { model_name = "g", litellm_params = { model = "local/bm25", rpm = 10 } },
    { model_name = "h", litellm_params = { model = "local/bm25", tpm = 1000 } },
    { model_name = "i", litellm_params = { model = "local/bm25" } } }
  local _, warnings = config.load({ model_list = list })
  local all = table.concat(warnings, "\n")
  spec.match(all, "rpm/tpm on model_list%[1%] %(g%), model_list%[2%] %(h%) are weights only: "
    .. "set enable_pre_call_checks: true or routing_strategy: usage%-based%-routing to enforce "
    .. "them", "warned at load")
  for _, rs in ipairs({ { enable_pre_call_checks = true },
    { routing_strategy = "usage-based-routing" },
    { routing_strategy = "usage-based-routing-v2" } }) do
    _, warnings = config.load({ model_list = list, router_settings = rs })
    spec.no_match(table.concat(warnings, "\n"), "weights only", "enforced: no warning")
  end
  _, warnings = config.load({ model_list = { list[3] } })
  eq(#warnings, 0, "no rpm/tpm: no warning")
end)

test("redis_urls_the_client_refuses_are_refused_at_load", function()
  local base = { { model_name = "g", litellm_params = { model = "local/bm25" } } }
  for _, c in ipairs({
    { "rediss://:pw@cache:6380/1", "rediss:// %(TLS%) is not supported" },
    { "redis://cache:6379/0?timeout=1", "query parameters and fragments" },
    { "redis://cache:6379/0#x", "query parameters and fragments" },
    { "http://cache", "must be a redis:// URL" },
    { "redis://", "with a host" },
  }) do
    local e = raises(function()
      config.load({ model_list = base, router_settings = { redis_url = c[1] } })
    end, "router_settings.redis_url: ")
    spec.match(e, c[2], c[1])
    spec.no_match(e, "pw@", "the URL is not shown")
  end
  ok(config.load({ model_list = base, router_settings = { redis_url = "REDIS://:p@c:1/2" } }),
    "the scheme in any case, as the client takes it")
end)
