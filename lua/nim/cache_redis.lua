-- nim.cache_redis: the response cache's shared backend (litellm_settings.cache_params.type:
-- redis): GET, and SET with PX (the entry's expiry), on one Redis server through nim.redis, the
-- client driven by nim's event loop (a call yields inside nim's tasks and blocks elsewhere).
-- Every instance and worker pointed at the server shares the entries.
--
--   local b = require("nim.cache_redis").new{ target = { url = "redis://..." } }
--   b:get(key) -> value | nil (no such key) | nil, err
--   b:set(key, value, ttl) -> true | nil, err
--   b:status() -> the client's status (state, since, error, reconnects), or { state = "idle" }
--
-- err = { type, message }: the client's own errors (type "connection", "timeout", "provider"),
-- or "unavailable" (a build without nim.redis), "bad_reply", "client" (the client raised). A
-- message never holds the password: the client's text is scrubbed of it here.
--
-- The client is made on first use, in the process that uses it: a gateway's supervisor loads
-- the config and forks its workers, and a connection must not be shared across that fork.
local M = { name = "redis" }
local Redis = {}
Redis.__index = Redis

local DEFAULT_TIMEOUT = 0.5 -- seconds per command when cache_params.socket_timeout is not set

-- new{ target = { url | host, port, password, db, timeout }, client = (made already),
--      redis = (a module with connect(opts), instead of nim.redis) }
function M.new(opts)
  return setmetatable({ target = opts.target or {}, client = opts.client, module = opts.redis },
    Redis)
end

-- The secrets a message must not show: the password, and a URL's user information.
local function scrub(self, msg)
  msg = tostring(msg)
  local t = self.target
  local secrets = { t.password, t.url and t.url:match("^%a+://([^@/]*)@") }
  for _, s in ipairs(secrets) do
    if s and #s > 0 then
      local i = 1
      repeat
        local a, b = msg:find(s, i, true)
        if a then
          msg = msg:sub(1, a - 1) .. "***" .. msg:sub(b + 1)
          i = a + 3
        end
      until not a
    end
  end
  return msg
end

local function failure(self, etype, message)
  return { type = etype, message = scrub(self, message) }
end

function Redis:connection()
  if self.client then return self.client end
  if self.missing then return nil, self.missing end
  local mod = self.module
  if not mod then
    local ok, m = pcall(require, "nim.redis")
    if not ok then
      self.missing = failure(self, "unavailable", "this build has no Redis client (nim.redis)")
      return nil, self.missing
    end
    mod = m
  end
  local t = self.target
  local ok, c = pcall(mod.connect, { url = t.url, host = t.host, port = t.port,
    password = t.password, db = t.db, timeout = t.timeout or DEFAULT_TIMEOUT })
  if not ok or not c then return nil, failure(self, "client", "connect: " .. tostring(c)) end
  self.client = c
  return c
end

-- One command: its reply, or nil and err. The client is not trusted never to raise.
local function call(self, ...)
  local c, err = self:connection()
  if not c then return nil, err end
  local ok, reply, e = pcall(c.call, c, ...)
  if not ok then return nil, failure(self, "client", reply) end
  if e then
    return nil, failure(self, type(e) == "table" and tostring(e.type or "provider") or "provider",
      type(e) == "table" and (e.message or e.type) or e)
  end
  return reply
end

function Redis:get(key)
  local reply, err = call(self, "GET", key)
  if err then return nil, err end
  if reply ~= nil and type(reply) ~= "string" then
    return nil, failure(self, "bad_reply", "GET answered a " .. type(reply))
  end
  return reply
end

function Redis:set(key, value, ttl)
  local _, err = call(self, "SET", key, value, "PX", math.max(1, math.ceil(ttl * 1000)))
  if err then return nil, err end
  return true
end

function Redis:status()
  if not self.client then
    return self.missing and { state = "down", error = self.missing.message } or { state = "idle" }
  end
  local ok, st = pcall(self.client.status, self.client)
  return ok and type(st) == "table" and st or { state = "unknown" }
end

return M
