-- redis_standin.lua: a blocking RESP2 client over LuaSocket (Debian lua-socket) with nim.redis's
-- contract (connect, call, pipeline, status), so the real-Redis cache specs and bench/cache.sh
-- can run before the redis branch lands: NIMRANK_REDIS_STANDIN=1. It is NOT nim.redis: every
-- command blocks its process (a gateway's worker stops serving meanwhile) and never yields; the
-- numbers it gives are not the real client's. install() registers it as
-- package.preload["nim.redis"] unless the real client is there.
--
--   local c = redis.connect{ url = "redis://:pw@127.0.0.1:6379/0" | host =, port =, password =,
--                            db =, timeout = 0.5 }
--   c:call("GET", "k") -> reply, err    c:pipeline({ {...}, ... }) -> replies, err
--   c:status() -> { state, since, error, reconnects }
local socket = require "socket"

local M = {}
local Client = {}
Client.__index = Client

local function parse_url(url)
  local scheme, rest = url:match("^(rediss?)://(.*)$")
  if scheme == "rediss" then error("redis_standin: rediss:// (TLS) is not supported", 2) end
  local userinfo, hostport, db = rest:match("^([^@]*)@([^/]*)/?(%d*)$")
  if not userinfo then hostport, db = rest:match("^([^/]*)/?(%d*)$") end
  local password = userinfo and userinfo:match(":(.*)$")
  local host, port = hostport:match("^(.-):(%d+)$")
  return { host = host or hostport, port = tonumber(port) or 6379, password = password,
    db = tonumber(db) }
end

function M.connect(o)
  local t = o.url and parse_url(o.url) or {}
  return setmetatable({ host = t.host or o.host or "127.0.0.1", port = t.port or o.port or 6379,
    password = t.password or o.password, db = t.db or o.db, timeout = o.timeout or 0.5,
    state = "idle", since = socket.gettime(), reconnects = 0, ever = false }, Client)
end

local function command(args)
  local out = { "*" .. #args .. "\r\n" }
  for _, a in ipairs(args) do
    a = tostring(a)
    out[#out + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
  end
  return table.concat(out)
end

-- One reply: true, value | false, error reply text | nil, transport error.
local function read_reply(s)
  local line, err = s:receive("*l")
  if not line then return nil, err end
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == "+" then return true, rest end
  if kind == "-" then return false, rest end
  if kind == ":" then return true, math.tointeger(tonumber(rest)) end
  if kind == "$" then
    local n = tonumber(rest)
    if n < 0 then return true, nil end
    local data, derr = s:receive(n + 2)
    if not data then return nil, derr end
    return true, data:sub(1, n)
  end
  if kind == "*" then
    local n = tonumber(rest)
    if n < 0 then return true, nil end
    local list = {}
    for i = 1, n do
      local okr, v = read_reply(s)
      if okr == nil then return nil, v end
      list[i] = v
    end
    return true, list
  end
  return nil, "protocol error"
end

function Client:fail(err)
  if self.sock then self.sock:close() end
  self.sock = nil
  if self.state ~= "down" then self.state, self.since = "down", socket.gettime() end
  self.error = tostring(err)
  return nil, { type = err == "timeout" and "timeout" or "connection", message = tostring(err) }
end

function Client:open()
  local s = socket.tcp()
  s:settimeout(self.timeout)
  local okc, err = s:connect(self.host, self.port)
  if not okc then
    s:close()
    return self:fail(err)
  end
  self.sock = s
  local setup = {}
  if self.password then setup[#setup + 1] = { "AUTH", self.password } end
  if self.db then setup[#setup + 1] = { "SELECT", self.db } end
  for _, cmd in ipairs(setup) do
    local sent, serr = s:send(command(cmd))
    if not sent then return self:fail(serr) end
    local okr, v = read_reply(s)
    if okr == nil then return self:fail(v) end
    if okr == false then return self:fail(v) end
  end
  if self.ever then self.reconnects = self.reconnects + 1 end
  self.ever, self.state, self.since, self.error = true, "connected", socket.gettime(), nil
  return s
end

function Client:pipeline(cmds)
  local s = self.sock
  if not s then
    local err
    s, err = self:open()
    if not s then return nil, err end
  end
  local buf = {}
  for i, cmd in ipairs(cmds) do buf[i] = command(cmd) end
  local sent, serr = s:send(table.concat(buf))
  if not sent then return self:fail(serr) end
  local replies = {}
  for i = 1, #cmds do
    local okr, v = read_reply(s)
    if okr == nil then return self:fail(v) end
    if okr == false then
      replies[i] = { type = "provider", reply_error = true, message = v }
    else
      replies[i] = v
    end
  end
  return replies
end

function Client:call(...)
  local replies, err = self:pipeline({ { ... } })
  if not replies then return nil, err end
  local r = replies[1]
  if type(r) == "table" and r.reply_error then return nil, r end
  return r
end

function Client:status()
  return { state = self.state, since = self.since, error = self.error,
    reconnects = self.reconnects }
end

function M.install()
  if not package.preload["nim.redis"] and not package.searchpath("nim.redis", package.path) then
    package.preload["nim.redis"] = function() return M end
  end
  return M
end

return M
