-- nim.redis: a Redis client on nimrank's own event loop. A command yields inside nim's tasks
-- exactly as an upstream call does (the worker keeps serving meanwhile) and blocks elsewhere,
-- driving the same epoll set. The client is C (src/redis_binding.c over hiredis); this module
-- is the thin part: connect, and script(), which is policy (EVALSHA first, EVAL on NOSCRIPT).
--
--   local redis = require "nim.redis"
--   local c = redis.connect{ url = "redis://:pw@127.0.0.1:6379/0", timeout = 0.5 }
--   local n, err = c:call("INCR", "k")
--   local replies, err = c:pipeline{ { "INCR", "k" }, { "EXPIRE", "k", 60 } }
--   local fn = c:script("return redis.call('GET', KEYS[1])"); fn({ "k" }, {})
--   c:status(); c:close()
local nim = require "nim"
local native = nim.native

local M = {}

-- A nil inside an array reply (a nil reply on its own is plain nil).
M.null = native.redis_null

-- redis.connect(options) -> client. Never connects: the first command does, so an unreachable
-- server is an error of that command (nil, err), never of connect. A bad option raises,
-- naming it.
function M.connect(options)
  return native.redis_new(options)
end

local methods = native.redis_mt.__index

-- client:script(source) -> fn(keys, args) -> reply, err. The script is named by its SHA-1,
-- computed once here; a call sends EVALSHA, and EVAL (which also loads it) when the server
-- does not have it (a restart, SCRIPT FLUSH).
function methods.script(client, source)
  if type(source) ~= "string" then
    native.misuse("nim.Redis:script", "source", ("expected a string, got %s"):format(type(source)))
  end
  local sha = native.sha1(source)
  return function(keys, args)
    keys, args = keys or {}, args or {}
    for field, t in pairs({ keys = keys, args = args }) do
      if type(t) ~= "table" then
        native.misuse("nim.Redis:script", field, ("expected a table, got %s"):format(type(t)))
      end
      for i = 1, #t do
        local v = type(t[i])
        if v ~= "string" and v ~= "number" then
          native.misuse("nim.Redis:script", ("%s[%d]"):format(field, i),
            ("expected a string or a number, got %s"):format(v))
        end
      end
    end
    local nk, na = #keys, #args
    local argv = table.move(keys, 1, nk, 4, { "EVALSHA", sha, nk })
    table.move(args, 1, na, 4 + nk, argv)
    local reply, err = client:call(table.unpack(argv, 1, 3 + nk + na))
    if err and err.code == "NOSCRIPT" then
      argv[1], argv[2] = "EVAL", source
      return client:call(table.unpack(argv, 1, 3 + nk + na))
    end
    return reply, err
  end
end

return M
