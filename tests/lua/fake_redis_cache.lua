-- fake_redis_cache.lua: an in-memory stand-in for nim.redis's client contract, for the response
-- cache's unit tests (no server, no network). The contract (branch redis):
--   local c = redis.connect{ url = ... | host =, port =, password =, db =, timeout = }
--   c:call("GET", "k") -> reply, err        c:pipeline({ {...}, ... }) -> replies, err
--   c:status() -> { state = "connected" | "connecting" | "down" | "idle", since, error,
--                   reconnects }
-- err.type is "connection" or "timeout" (transport) or "provider" (an error reply, with
-- err.reply_error = true).
--
--   local fake = require("fake_redis_cache").new{ clock = function() return t end }
--   fake.connect(opts)          -- the module's connect: records opts in fake.connected
--   fake.down = true            -- every call fails as an unreachable server's would
--   fake.data, fake.calls       -- what is stored, every command seen ({"SET", k, v, "PX", ms})
-- Commands: GET, SET (EX, PX), DEL, PTTL, PING, FLUSHALL; others answer an error reply.
local M = {}

function M.new(opts)
  opts = opts or {}
  local fake = { data = {}, expires = {}, calls = {}, connected = {}, down = false,
    clock = opts.clock or os.time, reconnects = 0, state = "idle" }

  local function live(k)
    local at = fake.expires[k]
    if at and at <= fake.clock() then
      fake.data[k], fake.expires[k] = nil, nil
    end
    return fake.data[k]
  end

  local commands = {}
  function commands.GET(k) return live(k) end
  function commands.SET(k, v, ...)
    local opt, n = ...
    if type(k) ~= "string" or type(v) ~= "string" then return nil, "ERR wrong arguments" end
    local ttl
    if opt == "EX" then ttl = n elseif opt == "PX" then ttl = n / 1000 end
    if opt ~= nil and (math.type(n) ~= "integer" or n <= 0) then
      return nil, "ERR invalid expire time in 'set' command"
    end
    fake.data[k], fake.expires[k] = v, ttl and fake.clock() + ttl or nil
    return "OK"
  end
  function commands.DEL(k)
    local had = live(k) ~= nil
    fake.data[k], fake.expires[k] = nil, nil
    return had and 1 or 0
  end
  function commands.PTTL(k)
    if live(k) == nil then return -2 end
    local at = fake.expires[k]
    return at and math.floor((at - fake.clock()) * 1000 + 0.5) or -1
  end
  function commands.PING() return "PONG" end
  function commands.FLUSHALL()
    fake.data, fake.expires = {}, {}
    return "OK"
  end

  local function run(cmd)
    fake.calls[#fake.calls + 1] = cmd
    if fake.down then
      fake.state = "down"
      return nil, { type = "connection", message = "connect: Connection refused" }
    end
    if fake.state == "down" then fake.reconnects = fake.reconnects + 1 end
    fake.state = "connected"
    local fn = commands[cmd[1]]
    if not fn then
      return nil, { type = "provider", reply_error = true,
        message = "ERR unknown command '" .. tostring(cmd[1]) .. "'" }
    end
    local reply, e = fn(table.unpack(cmd, 2))
    if e then return nil, { type = "provider", reply_error = true, message = e } end
    return reply
  end

  local Client = {}
  Client.__index = Client
  function Client:call(...) return run({ ... }) end
  function Client:pipeline(cmds)
    local replies = {}
    for i, cmd in ipairs(cmds) do
      local r, e = run(cmd)
      if e and e.type ~= "provider" then return nil, e end
      replies[i] = e or r
    end
    return replies
  end
  function Client:status()
    return { state = fake.state, since = 0, error = fake.down and "connection refused" or nil,
      reconnects = fake.reconnects }
  end

  function fake.connect(o)
    fake.connected[#fake.connected + 1] = o
    return setmetatable({ opts = o }, Client)
  end
  return fake
end

return M
