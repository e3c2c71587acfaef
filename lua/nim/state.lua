-- nim.state: where the router keeps what it learns about its deployments. One small
-- interface, two backends: this process's memory (the default, and what the router did before
-- there was a choice), or Redis (lua/nim/state_redis.lua) when router_settings name a server
-- (redis_url, or redis_host / redis_port / redis_password: LiteLLM's keys), so that several
-- workers and machines share cooldowns, failure counts and rpm/tpm usage.
--
-- A store keeps one record per deployment id, store.records[id]:
--   cooldown_until   the router's clock time the deployment is ready again (-inf: ready)
--   requests, tokens this usage window's admitted requests and counted tokens
--   resets_at        when the usage window ends (nil: no window open)
--   fails            (local backend) times of recent failures, for allowed_fails
-- and whatever a routing strategy keeps there of its own (in-flight counts, latencies: never
-- shared). With Redis the records are this worker's copy of the shared state, refreshed by
-- every reply, and what it carries on with while Redis cannot be reached.
--
-- Methods (ids are deployment ids; now is the router's clock, seconds):
--   store:register(id, ident)        once per deployment; ident names it across instances
--   store:view(ids, now) -> records  fresh for these ids (Redis: one round trip)
--   store:cool(id, seconds, now)     cools a deployment down
--   store:fail(id, now, allowed, cooldown) -> cooled   counts a failure (allowed_fails rule)
--   store:admit(id, now, rpm, tpm) -> true | false, wait   atomically: under its limits (nil:
--                                    none) and not cooling, then one request is counted
--   store:record(id, now, tokens)    counts tokens of a finished call
--   store:cooling(now) -> n          deployments cooling down, as last seen (no round trip)
--   store:health() -> { state = "local" | "redis" | "degraded", ... }
-- Usage windows start with their first count and last usage_window seconds (60: per minute),
-- so instances never need to agree on a clock; failures count within fail_window (60 s).
local M = {}

M.USAGE_WINDOW = 60
M.FAIL_WINDOW = 60

-- Is a record at a deployment's limits (rpm, tpm: nil for none)? The one rule for the
-- router's choice and the store's admission.
function M.at_limit(st, rpm, tpm)
  return (rpm ~= nil and st.requests >= rpm) or (tpm ~= nil and st.tokens >= tpm)
end

local function new_record()
  return { cooldown_until = -math.huge, fails = {}, requests = 0, tokens = 0 }
end
M.new_record = new_record

-- A usage window that has ended is empty.
local function refresh(st, now)
  local resets = st.resets_at
  if resets and resets <= now then st.requests, st.tokens, st.resets_at = 0, 0, nil end
end
M.refresh = refresh

-- ---- logging --------------------------------------------------------------------------------
-- log{level =, event =, message =}: nim.settings.logger when it is a function (the gateway
-- sets one that writes its JSON log line), else one line on stderr.
function M.log(event)
  local nim = package.loaded.nim
  local logger = nim and nim.settings and nim.settings.logger
  if type(logger) == "function" then
    local ok = pcall(logger, event)
    if ok then return end
  end
  io.stderr:write(("nimrank: %s: %s\n"):format(event.event, event.message))
end

-- ---- the local backend ----------------------------------------------------------------------
local Local = {}
Local.__index = Local

-- new_local{ usage_window =, fail_window = } -> a store in this process's memory.
function M.new_local(opts)
  opts = opts or {}
  return setmetatable({ records = {}, usage_window = opts.usage_window or M.USAGE_WINDOW,
    fail_window = opts.fail_window or M.FAIL_WINDOW }, Local)
end

function Local:register(id)
  if not self.records[id] then self.records[id] = new_record() end
end

function Local:view(ids, now)
  local records = self.records
  for i = 1, #ids do refresh(records[ids[i]], now) end
  return records
end

function Local:cool(id, seconds, now)
  self.records[id].cooldown_until = now + seconds
end

-- More than `allowed` failures within fail_window seconds (a sliding window) cool it down.
function Local:fail(id, now, allowed, cooldown)
  local st = self.records[id]
  local kept = {}
  for _, t in ipairs(st.fails) do
    if now - t < self.fail_window then kept[#kept + 1] = t end
  end
  kept[#kept + 1] = now
  st.fails = kept
  if #kept > allowed then
    st.cooldown_until = now + cooldown
    st.fails = {}
    return true
  end
  return false
end

function Local:admit(id, now, rpm, tpm)
  local st = self.records[id]
  refresh(st, now)
  if st.cooldown_until > now then return false, st.cooldown_until - now end
  if M.at_limit(st, rpm, tpm) then return false, (st.resets_at or now) - now end
  st.requests = st.requests + 1
  st.resets_at = st.resets_at or now + self.usage_window
  return true
end

function Local:record(id, now, tokens)
  local st = self.records[id]
  refresh(st, now)
  st.tokens = st.tokens + tokens
  st.resets_at = st.resets_at or now + self.usage_window
end

function Local:cooling(now)
  local n = 0
  for _, st in pairs(self.records) do
    if st.cooldown_until > now then n = n + 1 end
  end
  return n
end

function Local:health() return { state = "local" } end

-- ---- choosing a backend ---------------------------------------------------------------------
-- The Redis connection a router_settings section names, or nil: { url = } or { host =,
-- port =, password = } (redis_url wins over redis_host).
function M.redis_settings(rs)
  if rs.redis_url then return { url = rs.redis_url } end
  if rs.redis_host then
    return { host = rs.redis_host, port = rs.redis_port or 6379, password = rs.redis_password }
  end
  return nil
end

-- for_config(router_settings, opts) -> a store: Redis-backed (falling back to local state)
-- when the settings name a server or opts.redis gives a client, else local.
-- opts: clock, redis (a client of nim.redis's contract, e.g. a test's fake).
function M.for_config(rs, opts)
  opts = opts or {}
  local window = { usage_window = rs.usage_window, fail_window = M.FAIL_WINDOW }
  local settings = M.redis_settings(rs)
  if not settings and not opts.redis then return M.new_local(window) end
  return require("nim.state_redis").new(settings, { clock = opts.clock, client = opts.redis,
    local_store = M.new_local(window) })
end

return M
