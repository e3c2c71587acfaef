-- nim.state_redis: the router's state in Redis, shared by every worker and machine that
-- names the same server (nim.state's interface; see there). Built on nim.redis's client: a
-- call yields inside nim's tasks like an upstream transfer and blocks elsewhere.
--
-- Keys, all under one hash tag (a script's keys must share a Redis Cluster slot):
--   nimrank:{router}:cool:<d>    exists while deployment d cools down (SET PX: its TTL is
--                                the time left, so no two clocks ever need to agree)
--   nimrank:{router}:fails:<d>   failures counted for allowed_fails (INCR; expires after
--                                the fail window, started by the first failure)
--   nimrank:{router}:use:<d>     hash {req, tok}: the usage window's requests and tokens
--                                (expires usage_window after its first count)
-- <d> is the deployment's id (bytes other than letters, digits and -_.#@/ escaped as %XX, cut
-- at 64 bytes) and a hash of its group, id, model and api_base as written in the config: the
-- same deployment in another instance's config is the same key; an API key is never part of
-- one (nor hashed into one).
--
-- Every update is one script run inside Redis (or one SET), so concurrent instances cannot
-- both take the last request of a window. The scripts use only GET/SET/INCR/HINCRBY/HMGET/
-- PTTL/PEXPIRE/DEL, so the tests' fake client (tests/lua/fake_redis.lua) runs these very
-- sources.
--
-- Redis failing never fails a request: a call that fails (connection, timeout, an error reply,
-- a reply of the wrong shape) makes the store use this worker's records, which every reply
-- keeps up to date, and carry on with them alone; Redis is tried again RETRY_INTERVAL later.
-- The first failure is logged (nim.state.log), then at most once a minute while it lasts, and
-- the recovery once. health() tells readiness and metrics which state is in use.
local state = require "nim.state"

local M = {}

M.RETRY_INTERVAL = 1 -- seconds without trying Redis after a failed call
M.LOG_INTERVAL = 60  -- seconds between two log lines about the same outage
M.TIMEOUT = 0.5      -- seconds a Redis call may take
local PREFIX = "nimrank:{router}:"
local MAX_ID = 64

M.SCRIPTS = {
  -- KEYS: cool, use for each deployment. Per deployment 4 integers: the cooldown's ms left
  -- (negative: none), the usage window's requests and tokens, and its ms left.
  view = [[
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = redis.call('PTTL', KEYS[i])
  local use = redis.call('HMGET', KEYS[i + 1], 'req', 'tok')
  out[#out + 1] = tonumber(use[1]) or 0
  out[#out + 1] = tonumber(use[2]) or 0
  out[#out + 1] = redis.call('PTTL', KEYS[i + 1])
end
return out
]],
  -- KEYS: fails, cool. ARGV: fail window ms, allowed fails, cooldown ms. 1 when this failure
  -- cooled the deployment down.
  fail = [[
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[3]) end
  return 1
end
return 0
]],
  -- KEYS: cool, use. ARGV: rpm, tpm (negative: no limit), usage window ms. Counts one request
  -- unless the deployment cools down or is at a limit. {admitted, usage ms left, requests,
  -- tokens, cooldown ms left}.
  admit = [[
local cool = redis.call('PTTL', KEYS[1])
local use = redis.call('HMGET', KEYS[2], 'req', 'tok')
local req, tok = tonumber(use[1]) or 0, tonumber(use[2]) or 0
local ttl = redis.call('PTTL', KEYS[2])
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if cool >= 0 or (rpm >= 0 and req >= rpm) or (tpm >= 0 and tok >= tpm) then
  return {0, ttl, req, tok, cool}
end
req = redis.call('HINCRBY', KEYS[2], 'req', 1)
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  ttl = tonumber(ARGV[3])
end
return {1, ttl, req, tok, cool}
]],
  -- KEYS: use. ARGV: tokens, usage window ms. {requests, tokens, usage ms left}.
  tokens = [[
local tok = redis.call('HINCRBY', KEYS[1], 'tok', ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {tonumber(redis.call('HGET', KEYS[1], 'req')) or 0, tok, ttl}
]],
}

-- Times this process's router state fell back to local state (kept across reloads: a
-- counter of /metrics).
local degradations = 0
function M.degradations() return degradations end

local function fnv1a(s)
  local h = 0x811c9dc5
  for i = 1, #s do h = ((h ~ s:byte(i)) * 0x01000193) & 0xffffffff end
  return ("%08x"):format(h)
end
M.hash = fnv1a

-- The <d> of a deployment's keys: its id, escaped and cut, and the hash of what identifies it.
function M.deployment_key(id, ident)
  local shown = tostring(id):gsub("[^%w%-_.#@/]", function(c)
    return ("%%%02X"):format(c:byte())
  end)
  if #shown > MAX_ID then shown = shown:sub(1, MAX_ID) end
  return shown .. ":" .. fnv1a(tostring(id) .. "\0" .. (ident or ""))
end

-- One client per connection setting in a process: a reload keeps its connection.
local clients = {}

local function connect(settings)
  local ok, redis = pcall(require, "nim.redis")
  if not ok then return nil, "nim.redis is not available in this build" end
  local key = table.concat({ settings.url or "", settings.host or "", tostring(settings.port),
    settings.password or "" }, "\0")
  local c = clients[key]
  if not c then
    local opts = { timeout = M.TIMEOUT }
    for k, v in pairs(settings) do opts[k] = v end
    local cok, client = pcall(redis.connect, opts)
    if not cok or not client then return nil, "nim.redis.connect: " .. tostring(client) end
    c = client
    clients[key] = c
  end
  return c
end

local Store = {}
Store.__index = Store

-- new(settings, opts) -> a store. settings: { url = } or { host =, port =, password = }
-- (redis_settings); opts: clock, client (instead of connecting: a test's fake), local_store.
function M.new(settings, opts)
  opts = opts or {}
  local self = setmetatable({}, Store)
  self.clock = opts.clock or require("nim").now
  self.local_ = opts.local_store or state.new_local()
  self.records = self.local_.records
  self.usage_window, self.fail_window = self.local_.usage_window, self.local_.fail_window
  self.window_ms = math.max(1, math.floor(self.local_.usage_window * 1000 + 0.5))
  self.fail_ms = math.max(1, math.floor(self.local_.fail_window * 1000 + 0.5))
  self.keys = {}        -- id -> { cool, fails, use }
  self.view_keys = setmetatable({}, { __mode = "k" }) -- ids list -> KEYS of the view script
  self.fns = {}         -- script name -> fn(keys, args)
  self.secrets = {}     -- strings no log line may show
  if settings then
    self.secrets[1] = settings.password
    self.secrets[2] = settings.url and settings.url:match("^%a+://[^/@]*:([^/@]*)@")
  end
  self.status = "redis" -- until a call says otherwise
  self.retry_at = -math.huge
  self.last_log = -math.huge
  self.skipped = 0
  self.client = opts.client
  if not self.client then
    -- no connection yet (the client connects on first use: never before a fork); a client
    -- that cannot be made is reported by the first operation, in the worker's own log
    self.client, self.missing = connect(settings or {})
  end
  return self
end

function Store:register(id, ident)
  self.local_:register(id)
  if not self.keys[id] then
    local d = M.deployment_key(id, ident)
    self.keys[id] = { cool = PREFIX .. "cool:" .. d, fails = PREFIX .. "fails:" .. d,
      use = PREFIX .. "use:" .. d }
  end
end

-- A message with the connection's password (and anything else secret) replaced.
function Store:scrub(s)
  s = tostring(s)
  for _, secret in pairs(self.secrets) do
    if type(secret) == "string" and #secret > 0 then
      local at, out = 1, {}
      while true do
        local a, b = s:find(secret, at, true)
        if not a then break end
        out[#out + 1] = s:sub(at, a - 1) .. "***"
        at = b + 1
      end
      out[#out + 1] = s:sub(at)
      s = table.concat(out)
    end
  end
  return s
end

-- ---- health and degradation -----------------------------------------------------------------

function Store:degrade(err, now)
  self.retry_at = now + M.RETRY_INTERVAL
  self.error = self:scrub(type(err) == "table" and (err.message or err.type) or err)
  if self.status ~= "degraded" then
    self.status, self.since = "degraded", now
    degradations = degradations + 1
    if now - self.last_log >= M.LOG_INTERVAL then
      self.last_log, self.announced, self.skipped = now, true, 0
      state.log({ level = "warn", event = "router_state_degraded", message = ("Redis cannot be "
        .. "reached (%s): this worker keeps cooldowns, failure counts and rpm/tpm usage "
        .. "on its own until it can"):format(self.error) })
    end
  end
end

-- Is Redis to be tried now? While an outage lasts, once a minute a line says so.
function Store:usable(now)
  if not self.client then
    if self.status ~= "degraded" then
      self:degrade({ message = self.missing }, now)
    elseif now - self.last_log >= M.LOG_INTERVAL then
      self.last_log = now
      state.log({ level = "warn", event = "router_state_degraded", message = ("Redis is "
        .. "configured but %s: router state stays local"):format(self.error) })
    end
    return false
  end
  if now >= self.retry_at then return true end
  self.skipped = self.skipped + 1
  if self.status == "degraded" and now - self.last_log >= M.LOG_INTERVAL then
    state.log({ level = "warn", event = "router_state_degraded", message = ("Redis still "
      .. "cannot be reached (%s) after %.0f s: %d router state operations used local state "
      .. "since the last line"):format(self.error, now - self.since, self.skipped) })
    self.last_log, self.announced, self.skipped = now, true, 0
  end
  return false
end

function Store:up(now)
  if self.status == "degraded" then
    if self.announced then
      state.log({ level = "info", event = "router_state_recovered", message = ("Redis "
        .. "reachable again after %.0f s: router state is shared again"):format(now - self.since) })
      self.announced = false
    end
    self.error = nil
  end
  self.status, self.since = "redis", self.since or now
end

function Store:health()
  local h = { state = self.client and self.status or "degraded",
    error = self.error or self.missing, degradations = degradations }
  if self.client and self.client.status then
    local ok, s = pcall(self.client.status, self.client)
    if ok and type(s) == "table" then
      h.redis = s.state
      if s.error and h.error == nil and s.state == "down" then h.error = self:scrub(s.error) end
    end
  end
  return h
end

-- Runs script name; returns its reply when it is a list of n integers (n = 0: one integer),
-- else degrades and returns nil.
function Store:run(name, keys, args, n, now)
  local fn = self.fns[name]
  if not fn then
    local ok, made = pcall(self.client.script, self.client, M.SCRIPTS[name])
    if not ok or type(made) ~= "function" then
      self:degrade({ message = "script: " .. tostring(made) }, now)
      return nil
    end
    fn, self.fns[name] = made, made
  end
  -- a client that raises (closed by a script, the server out of memory) degrades to local state
  local ok, reply, err = pcall(fn, keys, args)
  if not ok then reply, err = nil, { message = tostring(reply) } end
  if reply == nil or err then
    self:degrade(err or { message = "no reply" }, now)
    return nil
  end
  -- (integers; one that a client hands over as an integral float is taken as well)
  local bad
  if n == 0 then
    reply = type(reply) == "number" and math.tointeger(reply) or reply
    bad = math.type(reply) ~= "integer" and type(reply)
  elseif type(reply) ~= "table" or #reply ~= n then
    bad = type(reply) == "table" and ("a list of %d"):format(#reply) or type(reply)
  else
    for i = 1, n do
      local v = type(reply[i]) == "number" and math.tointeger(reply[i]) or reply[i]
      if math.type(v) ~= "integer" then bad = "a list holding a " .. type(v) end
      reply[i] = v
    end
  end
  if bad then
    self:degrade({ message = ("the %s script answered %s"):format(name, bad) }, now)
    return nil
  end
  self:up(now)
  return reply
end

-- ---- the interface --------------------------------------------------------------------------

-- Takes a shared reading into this worker's record: a cooldown seen in Redis (a local one set
-- while Redis was away stays until it ends), the usage window as Redis counts it.
local function take(st, now, cool_ms, req, tok, use_ms)
  if cool_ms >= 0 then
    local until_ = now + cool_ms / 1000
    if until_ > st.cooldown_until then st.cooldown_until = until_ end
  end
  if use_ms >= 0 then
    st.requests, st.tokens, st.resets_at = req, tok, now + use_ms / 1000
  else
    st.requests, st.tokens, st.resets_at = 0, 0, nil
  end
end

function Store:view(ids, now)
  if self:usable(now) then
    local keys = self.view_keys[ids]
    if not keys then
      keys = {}
      for i, id in ipairs(ids) do
        keys[2 * i - 1], keys[2 * i] = self.keys[id].cool, self.keys[id].use
      end
      self.view_keys[ids] = keys
    end
    local reply = self:run("view", keys, {}, 4 * #ids, now)
    if reply then
      local records = self.records
      for i, id in ipairs(ids) do
        local j = 4 * (i - 1)
        take(records[id], now, reply[j + 1], reply[j + 2], reply[j + 3], reply[j + 4])
      end
      return records
    end
  end
  return self.local_:view(ids, now)
end

local function ms(seconds) return math.max(1, math.ceil(seconds * 1000)) end

function Store:cool(id, seconds, now)
  self.local_:cool(id, seconds, now) -- this worker's copy, and what it keeps if Redis is away
  if seconds <= 0 or not self:usable(now) then return end
  local ok, reply, err = pcall(self.client.call, self.client, "SET", self.keys[id].cool, "1",
    "PX", tostring(ms(seconds)))
  if not ok then reply, err = nil, { message = tostring(reply) } end
  if reply == nil or err then self:degrade(err or { message = "no reply" }, now)
  else self:up(now) end
end

function Store:fail(id, now, allowed, cooldown)
  if self:usable(now) then
    local k = self.keys[id]
    local reply = self:run("fail", { k.fails, k.cool }, { tostring(self.fail_ms),
      tostring(allowed), tostring(cooldown > 0 and ms(cooldown) or 0) }, 0, now)
    if reply == 1 then
      self.local_:cool(id, cooldown, now)
      return true
    elseif reply then
      return false
    end
  end
  return self.local_:fail(id, now, allowed, cooldown)
end

local function limit_arg(v)
  if v == nil then return "-1" end
  if math.type(v) == "float" and v == math.floor(v) then v = math.tointeger(v) end
  return tostring(v)
end

function Store:admit(id, now, rpm, tpm)
  if self:usable(now) then
    local k = self.keys[id]
    local reply = self:run("admit", { k.cool, k.use }, { limit_arg(rpm), limit_arg(tpm),
      tostring(self.window_ms) }, 5, now)
    if reply then
      local st = self.records[id]
      take(st, now, reply[5], reply[3], reply[4], reply[2])
      if reply[1] == 1 then return true end
      if reply[5] >= 0 then return false, reply[5] / 1000 end
      return false, (reply[2] >= 0 and reply[2] or self.window_ms) / 1000
    end
  end
  return self.local_:admit(id, now, rpm, tpm)
end

function Store:record(id, now, tokens)
  tokens = math.tointeger(math.floor(tokens)) or 0
  if tokens <= 0 then return end
  if self:usable(now) then
    local reply = self:run("tokens", { self.keys[id].use }, { tostring(tokens),
      tostring(self.window_ms) }, 3, now)
    if reply then
      take(self.records[id], now, -2, reply[1], reply[2], reply[3])
      return
    end
  end
  self.local_:record(id, now, tokens)
end

function Store:cooling(now) return self.local_:cooling(now) end

return M
