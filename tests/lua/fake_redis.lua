-- fake_redis.lua: an in-memory stand-in for nim.redis's client, for tests without a Redis
-- server (the router's state store, state_spec.lua; the response cache, cache_spec.lua). Same
-- contract: c:call(cmd, ...), c:pipeline(cmds), c:script(src) -> fn(keys, args), c:status()
-- ({ state = "idle" | "connected" | "down", since, error, reconnects }); replies as Redis
-- gives them (integers, strings, nil, lists), errors as { type = "connection" | "provider",
-- reply_error = true (provider), message }.
--
-- Scripts run their real source here, in Lua 5.4, with Redis's conversions: redis.call gives
-- false for a nil reply and {ok = "OK"} for a status; a script's numbers come back as integers
-- (truncated), false as nil, a list up to its first nil. Keys expire on the clock given (the
-- test's fake clock), so windows, cooldowns and entries' expiry follow the test's time.
--
--   local fake = require("fake_redis").new{ clock = t.clock }
--   fake.connect(opts)     -- as nim.redis.connect: records opts in fake.connected, returns the
--                          -- fake (every client made from it shares its data)
--   fake:set_down(true)    -- every call fails as an unreachable server's would, until false
--                          -- (or fake.down = true)
--   fake.calls             -- every command seen, as sent ({ "SET", k, v, "PX", ms }; a script
--                          -- run as { "EVALSHA", src, keys..., args... })
-- Commands: GET, SET (EX, PX, NX), DEL, INCR, INCRBY, HINCRBY, HGET, HMGET, PTTL, PEXPIRE,
-- EXPIRE, KEYS, PING, FLUSHALL; others answer an error reply.
local M = {}
local Fake = {}
Fake.__index = Fake

function M.new(opts)
  opts = opts or {}
  local self = setmetatable({ clock = opts.clock or os.time, data = {}, calls = {},
    connected = {}, down = false, state = "idle", reconnects = 0, scripts = {} }, Fake)
  function self.connect(o)
    self.connected[#self.connected + 1] = o
    return self
  end
  return self
end

function Fake:set_down(down) self.down = down end

local function reply_error(msg) error({ redis_error = msg }, 0) end

function Fake:entry(key)
  local e = self.data[key]
  if e and e.exp and e.exp <= self.clock() then
    self.data[key] = nil
    return nil
  end
  return e
end

local function int(s, what)
  local n = math.tointeger(tonumber(s))
  if not n then reply_error("ERR value is not an integer or out of range" .. (what or "")) end
  return n
end

local function of_type(e, t)
  if e and e.t ~= t then
    reply_error("WRONGTYPE Operation against a key holding the wrong kind of value")
  end
end

local COMMANDS = {}

function COMMANDS.GET(self, k)
  local e = self:entry(k)
  of_type(e, "string")
  return e and e.v or nil
end

function COMMANDS.SET(self, k, v, ...)
  local opts = { ... }
  local exp, nx = nil, false
  local i = 1
  while i <= #opts do
    local o = opts[i]:upper()
    if o == "PX" or o == "EX" then
      local n = int(opts[i + 1])
      if n <= 0 then reply_error("ERR invalid expire time in 'set' command") end
      exp = self.clock() + (o == "PX" and n / 1000 or n)
      i = i + 2
    elseif o == "NX" then
      nx, i = true, i + 1
    else
      reply_error("ERR syntax error")
    end
  end
  if nx and self:entry(k) then return nil end
  self.data[k] = { t = "string", v = tostring(v), exp = exp }
  return { ok = "OK" }
end

function COMMANDS.DEL(self, ...)
  local n = 0
  for _, k in ipairs({ ... }) do
    if self:entry(k) then n = n + 1 end
    self.data[k] = nil
  end
  return n
end

function COMMANDS.INCRBY(self, k, by)
  local e = self:entry(k)
  of_type(e, "string")
  local n = (e and int(e.v) or 0) + int(by)
  if e then e.v = tostring(n) else self.data[k] = { t = "string", v = tostring(n) } end
  return n
end

function COMMANDS.INCR(self, k) return COMMANDS.INCRBY(self, k, "1") end

function COMMANDS.HINCRBY(self, k, field, by)
  local e = self:entry(k)
  of_type(e, "hash")
  if not e then
    e = { t = "hash", v = {} }
    self.data[k] = e
  end
  local n = (e.v[field] and int(e.v[field], " (hash value)") or 0) + int(by)
  e.v[field] = tostring(n)
  return n
end

function COMMANDS.HGET(self, k, field)
  local e = self:entry(k)
  of_type(e, "hash")
  return e and e.v[field] or nil
end

function COMMANDS.HMGET(self, k, ...)
  local e = self:entry(k)
  of_type(e, "hash")
  local out = { n = select("#", ...) }
  for i, f in ipairs({ ... }) do out[i] = e and e.v[f] or nil end
  return out
end

function COMMANDS.PTTL(self, k)
  local e = self:entry(k)
  if not e then return -2 end
  if not e.exp then return -1 end
  return math.ceil((e.exp - self.clock()) * 1000)
end

function COMMANDS.PEXPIRE(self, k, ms)
  local e = self:entry(k)
  if not e then return 0 end
  e.exp = self.clock() + int(ms) / 1000
  return 1
end

function COMMANDS.EXPIRE(self, k, s) return COMMANDS.PEXPIRE(self, k, tostring(int(s) * 1000)) end

function COMMANDS.KEYS(self, pattern)
  local lp = "^" .. pattern:gsub("[%^%$%(%)%%%.%[%]%+%-%?]", "%%%0"):gsub("%*", ".*") .. "$"
  local out = {}
  for k in pairs(self.data) do
    if self:entry(k) and k:find(lp) then out[#out + 1] = k end
  end
  table.sort(out)
  return out
end

function COMMANDS.PING() return { ok = "PONG" } end

function COMMANDS.FLUSHALL(self)
  self.data = {}
  return { ok = "OK" }
end

-- Runs one command (strings in, Redis's reply out; raises {redis_error} for an error reply).
function Fake:command(name, ...)
  local fn = COMMANDS[tostring(name):upper()]
  if not fn then reply_error(("ERR unknown command '%s'"):format(tostring(name))) end
  local args = { ... }
  for i = 1, select("#", ...) do args[i] = tostring(args[i]) end
  return fn(self, table.unpack(args, 1, select("#", ...)))
end

-- A reply as the client hands it over: statuses as their text, lists with their holes.
local function client_reply(v)
  if type(v) == "table" and v.ok then return v.ok end
  return v
end

local function failed(msg)
  return nil, { type = "provider", reply_error = true, message = msg }
end

local DOWN = { type = "connection", message = "connection refused (fake Redis is down)" }

-- Records a command (or a script run) as sent; false when the fake is down (the client's
-- state follows: down, then connected again, a reconnect).
function Fake:sent(cmd)
  self.calls[#self.calls + 1] = cmd
  if self.down then
    self.state = "down"
    return false
  end
  if self.state == "down" then self.reconnects = self.reconnects + 1 end
  self.state = "connected"
  return true
end

function Fake:call(name, ...)
  if not self:sent({ name, ... }) then return nil, DOWN end
  local ok, v = pcall(self.command, self, name, ...)
  if not ok then
    if type(v) == "table" and v.redis_error then return failed(v.redis_error) end
    error(v, 0)
  end
  return client_reply(v)
end

function Fake:pipeline(cmds)
  local up = true
  for _, cmd in ipairs(cmds) do up = self:sent(cmd) and up end
  if not up then return nil, DOWN end
  local out = {}
  for i, cmd in ipairs(cmds) do
    local ok, v = pcall(self.command, self, table.unpack(cmd))
    if ok then out[i] = client_reply(v)
    elseif type(v) == "table" and v.redis_error then
      out[i] = { type = "provider", reply_error = true, message = v.redis_error }
    else error(v, 0) end
  end
  return out
end

-- Lua value -> Redis reply, as EVAL converts a script's result.
local function from_lua(v)
  local t = type(v)
  if t == "number" then
    return math.tointeger(v) or math.tointeger(v >= 0 and math.floor(v) or math.ceil(v))
  elseif t == "boolean" then
    return v and 1 or nil
  elseif t == "table" then
    if v.ok then return v end
    if v.err then reply_error(v.err) end
    local out, i = {}, 1
    while v[i] ~= nil do
      out[i] = from_lua(v[i])
      i = i + 1
    end
    return out
  end
  return v
end

-- Redis reply -> Lua value, as redis.call converts a command's reply inside a script.
local function to_lua(v)
  if v == nil then return false end
  if type(v) == "table" and not v.ok then
    local out = {}
    for i = 1, v.n or #v do out[i] = to_lua(v[i]) end
    return out
  end
  return v
end

function Fake:eval(src, keys, args)
  local env
  local redis = {
    call = function(...) return to_lua(self:command(...)) end,
    pcall = function(...)
      local ok, v = pcall(self.command, self, ...)
      if ok then return to_lua(v) end
      return { err = type(v) == "table" and v.redis_error or tostring(v) }
    end,
  }
  local kk, aa = {}, {}
  for i, k in ipairs(keys or {}) do kk[i] = tostring(k) end
  for i, a in ipairs(args or {}) do aa[i] = tostring(a) end
  env = { KEYS = kk, ARGV = aa, redis = redis, tonumber = tonumber, tostring = tostring,
    type = type, pairs = pairs, ipairs = ipairs, table = table, string = string, math = math,
    unpack = table.unpack }
  local chunk = assert(load(src, "=script", "t", env))
  local ok, v = pcall(chunk)
  if not ok then
    if type(v) == "table" and v.redis_error then reply_error(v.redis_error) end
    reply_error("ERR Error running script: " .. tostring(v))
  end
  return from_lua(v)
end

function Fake:script(src)
  self.scripts[#self.scripts + 1] = src
  return function(keys, args)
    local cmd = { "EVALSHA", src }
    table.move(keys or {}, 1, #(keys or {}), 3, cmd)
    table.move(args or {}, 1, #(args or {}), #cmd + 1, cmd)
    if not self:sent(cmd) then return nil, DOWN end
    local ok, v = pcall(self.eval, self, src, keys, args)
    if not ok then
      if type(v) == "table" and v.redis_error then return failed(v.redis_error) end
      error(v, 0)
    end
    return client_reply(v)
  end
end

function Fake:status()
  return { state = self.state, since = 0, error = self.state == "down" and DOWN.message or nil,
    reconnects = self.reconnects }
end

return M
