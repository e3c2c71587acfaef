-- nim.redis against real redis-servers (Debian's), which this spec starts on free loopback
-- ports and stops at its end (tests/redis.sh: a watchdog stops them if the spec dies first).
local spec = require "spec"
local h = require "helpers"
local nim = require "nim"
local redis = require "nim.redis"
local test, eq, ok, match, no_match, raises = spec.test, spec.eq, spec.ok, spec.match,
  spec.no_match, spec.raises

local srv = h.redis()
local servers = { srv }
local function server(extra)
  local s = h.redis(extra)
  servers[#servers + 1] = s
  return s
end

local function fresh(opts)
  opts = opts or {}
  if not opts.port and not opts.url then opts.url = srv.url end
  return redis.connect(opts)
end

-- Calls until the reply comes (a server restarting, a backoff running out), for at most 3 s.
local function eventually(c, ...)
  local deadline = nim.now() + 3
  local r, err
  repeat
    r, err = c:call(...)
    if r == nil then nim.sleep(0.05) end
  until r ~= nil or nim.now() > deadline
  return r, err
end

test("replies_become_lua_values_and_error_replies_become_errors", function()
  local c = fresh()
  eq(c:status().state, "idle", "nothing is connected before the first command")
  eq(c:call("FLUSHDB"), "OK", "a status reply is a string")
  eq(c:call("SET", "s", "a\0b"), "OK")
  eq(c:call("GET", "s"), "a\0b", "bulk strings are binary-safe")
  eq(c:call("INCRBY", "n", 41), 41, "an integer reply is an integer")
  eq(math.type(c:call("INCR", "n")), "integer")
  eq(c:call("INCRBY", "neg", -5), -5)
  eq(c:call("SET", "f", 0.1), "OK")
  eq(c:call("GET", "f"), "0.1", "a float argument is written with the digits it needs")
  eq(c:call("INCRBYFLOAT", "g", 0.1 + 0.2), "0.30000000000000004")
  local v, err = c:call("GET", "missing")
  ok(v == nil and err == nil, "a nil reply is nil, nil")
  local arr = c:call("MGET", "n", "missing", "s")
  eq(arr.n, 3)
  eq(arr[1], "42")
  eq(arr[2], redis.null, "a nil inside an array is redis.null")
  eq(arr[3], "a\0b")
  eq(tostring(redis.null), "redis.null")
  raises(function() redis.null.x = 1 end, "cannot be changed")
  local empty = c:call("LRANGE", "nolist", 0, -1)
  ok(empty.n == 0 and #empty == 0, "an empty array")
  local nested = c:call("EVAL", "return {1, {2, 'x'}, false, redis.error_reply('OOPS inner')}", 0)
  eq(nested.n, 4)
  eq(nested[1], 1)
  ok(nested[2].n == 2 and nested[2][1] == 2 and nested[2][2] == "x", "arrays nest")
  eq(nested[3], redis.null)
  eq(nested[4].code, "OOPS", "an error inside an array is an error object")
  local r, e = c:call("LPUSH", "s", "x")
  eq(r, nil)
  eq(e.type, "provider")
  ok(e.redis and e.reply_error, "err.redis and err.reply_error")
  eq(e.code, "WRONGTYPE")
  eq(e.message, "WRONGTYPE Operation against a key holding the wrong kind of value")
  eq(e.retryable, false)
  eq(e.provider, "redis")
  eq(getmetatable(e), nim.error_mt, "an error object like every other")
  match(tostring(e), "WRONGTYPE")
  local _, unknown = c:call("NOSUCHCOMMAND", "x")
  eq(unknown.code, "ERR")
  eq(c:status().state, "connected")
  c:close()
end)

local function stats(c)
  local s = assert(c:call("INFO", "stats"))
  return tonumber(s:match("total_reads_processed:(%d+)")),
    tonumber(s:match("total_commands_processed:(%d+)"))
end

test("a_pipeline_is_one_write_and_one_read_on_the_server_with_a_reply_each", function()
  local a, b = fresh(), fresh()
  eq(a:call("PING"), "PONG")
  eq(b:call("PING"), "PONG")
  a:call("DEL", "p")
  a:call("SET", "str", "x")
  local reads0, cmds0 = stats(b)
  local cmds = {}
  for i = 1, 50 do cmds[i] = { "INCR", "p" } end
  cmds[51] = { "LPUSH", "str", "y" } -- this command's error, not the pipeline's
  cmds[52] = { "GET", "missing" }
  cmds[53] = { "EXPIRE", "p", 60 }
  local replies, err = a:pipeline(cmds)
  eq(err, nil)
  eq(replies.n, 53)
  eq(replies[1], 1)
  eq(replies[50], 50)
  eq(replies[51].code, "WRONGTYPE")
  eq(replies[52], redis.null, "a nil reply in a pipeline is redis.null")
  eq(replies[53], 1)
  local reads1, cmds1 = stats(b)
  eq(cmds1 - cmds0, 54, "53 commands and the second INFO were processed")
  eq(reads1 - reads0, 2, "in two reads: the pipeline's one and INFO's")
  for _ = 1, 50 do a:call("INCR", "p") end
  local reads2 = stats(b)
  eq(reads2 - reads1, 51, "while 50 calls one by one take a read each")
  local none = a:pipeline({})
  eq(none.n, 0, "an empty pipeline sends nothing")
  local tx = a:pipeline({ { "MULTI" }, { "INCR", "p" }, { "INCR", "p" }, { "EXEC" } })
  ok(tx[1] == "OK" and tx[2] == "QUEUED" and tx[4].n == 2 and tx[4][2] == 102,
    "a transaction in one pipeline")
  a:close()
  b:close()
end)

test("calls_in_tasks_are_in_flight_together_and_interleave_with_an_upstream_call", function()
  local c = fresh()
  local slow = fresh({ timeout = 5 })
  srv.cli("DEL", "cc")
  local done, seen, order = 0, {}, {}
  nim.spawn(function() -- a Redis call the server holds for 0.6 s (BLPOP on an empty list)
    local r, err = slow:call("BLPOP", "nothing-here", 0.6)
    ok(r == nil and err == nil, "BLPOP timed out on the server")
    order[#order + 1] = "blpop"
  end)
  nim.spawn(function() -- an upstream call the fake answers after 0.3 s
    local res, err = nim.rerank(h.args({ query = "!delay=300 gpu memory" }))
    ok(res, err)
    order[#order + 1] = ("upstream after %d incr"):format(done)
  end)
  for _ = 1, 50 do
    nim.spawn(function()
      local n = assert(c:call("INCR", "cc"))
      seen[n] = true
      done = done + 1
    end)
  end
  nim.poll() -- every task runs to its first wait
  eq(c:status().pending, 50, "50 commands in flight at once on one pipelined connection")
  eq(c:status().state, "connecting", "sent before the connection was even made")
  local t0 = nim.now()
  ok(nim.run(5), "every task finished")
  local took = nim.now() - t0
  eq(done, 50)
  for i = 1, 50 do ok(seen[i], "INCR answered " .. i) end
  eq(order[1], "upstream after 50 incr", "the Redis calls finished while the upstream waited")
  eq(order[2], "blpop", "and the upstream finished while a Redis call waited")
  ok(took >= 0.55 and took < 2, ("all in parallel (%.2f s)"):format(took))
  eq(c:status().pending, 0)
  c:close()
  slow:close()
end)

test("outside_a_task_a_call_blocks_and_drives_the_same_loop", function()
  local c = fresh({ timeout = 2 })
  local t0 = nim.now()
  local r, err = c:call("BLPOP", "nothing-here", 0.2)
  ok(r == nil and err == nil, "BLPOP timed out on the server")
  ok(nim.now() - t0 >= 0.18, "blocked until the reply")
  -- an upstream transfer started before a blocking Redis call moves while it blocks
  local req = nim.rerank_async(h.args({ query = "!delay=100 gpu memory" }))
  c:call("BLPOP", "nothing-here", 0.3)
  t0 = nim.now()
  local done, res = req:poll()
  ok(done and res, "the transfer finished during the blocking call")
  ok(nim.now() - t0 < 0.05, "nothing was left to wait for")
  c:close()
end)

test("a_frame_loop_that_only_polls_moves_redis_calls", function()
  local c = fresh()
  local got
  nim.spawn(function() got = c:call("ECHO", "frame") end)
  local frames = 0
  while got == nil and frames < 2000 do
    nim.poll() -- never blocks
    frames = frames + 1
    nim.native.sleep(0.001)
  end
  eq(got, "frame")
  ok(frames > 1, "took more than one frame")
  c:close()
end)

test("auth_with_a_password_or_an_acl_user_and_a_wrong_password_is_never_shown", function()
  local s = server("--requirepass s3cret-pw --user app on " .. h.q(">app-pass-1") .. " "
    .. h.q("~*") .. " " .. h.q("&*") .. " " .. h.q("+@all"))
  local c = redis.connect({ url = ("redis://:s3cret-pw@127.0.0.1:%d"):format(s.port) })
  eq(c:call("PING"), "PONG")
  local u = redis.connect({ url = ("redis://app:app-pass-1@127.0.0.1:%d/0"):format(s.port) })
  eq(u:call("ACL", "WHOAMI"), "app", "redis://user:password@ is AUTH user password")
  local o = redis.connect({ port = s.port, username = "app", password = "app-pass-1" })
  eq(o:call("ACL", "WHOAMI"), "app", "and so are the options")
  local w = redis.connect({ port = s.port, password = "wrong-pass-123", backoff = 0.05 })
  local r, err = w:call("PING")
  eq(r, nil)
  eq(err.type, "auth")
  eq(err.retryable, false)
  ok(err.redis, "err.redis")
  match(err.message, "AUTH refused: WRONGPASS")
  no_match(err.message, "wrong-pass-123", "the message")
  no_match(tostring(err), "wrong-pass-123", "tostring(err)")
  local st = w:status()
  eq(st.state, "down")
  no_match(st.error, "wrong-pass-123", "status().error")
  local _, again = w:call("PING")
  eq(again.type, "auth", "still auth while down")
  no_match(again.message, "wrong-pass-123")
  local n = redis.connect({ port = s.port })
  local _, noauth = n:call("PING")
  eq(noauth.code, "NOAUTH", "no password: the server's NOAUTH reply")
  for _, x in ipairs({ c, u, o, w, n }) do x:close() end
end)

test("the_db_of_the_url_or_the_option_is_selected_on_connect", function()
  local d3 = fresh({ url = srv.url .. "/3" })
  local d5 = redis.connect({ url = srv.url .. "/3", db = 5 }) -- an option wins over the url
  local d0 = fresh()
  eq(d3:call("SET", "where", "three"), "OK")
  eq(d5:call("SET", "where", "five"), "OK")
  d0:call("DEL", "where")
  eq(d0:call("GET", "where"), nil)
  eq(srv.cli("-n", "3", "GET", "where"), "three")
  eq(srv.cli("-n", "5", "GET", "where"), "five")
  match(d3:call("CLIENT", "INFO"), " db=3 ")
  raises(function() d3:call("SELECT", 1) end, "nim.Redis:call: command: SELECT", "db")
  local bad = fresh({ db = 100000 })
  local _, err = bad:call("PING")
  eq(err.type, "bad_request", "a database the server does not have")
  match(err.message, "SELECT 100000 refused")
  for _, x in ipairs({ d3, d5, d0, bad }) do x:close() end
end)

test("script_runs_by_its_sha_and_falls_back_to_eval_after_a_flush", function()
  local c = fresh()
  local src = "return {KEYS[1], ARGV[1], redis.call('INCRBY', KEYS[1], ARGV[1])}"
  local sha = c:call("SCRIPT", "LOAD", src)
  eq(nim.native.sha1(src), sha, "the SHA-1 computed here is the server's name for it")
  c:call("SCRIPT", "FLUSH")
  c:call("DEL", "sk")
  local fn = c:script(src)
  local r = fn({ "sk" }, { 5 })
  ok(r and r[1] == "sk" and r[2] == "5" and r[3] == 5, "EVAL after NOSCRIPT")
  eq(c:call("SCRIPT", "EXISTS", sha)[1], 1, "EVAL loaded it")
  local function calls(name)
    return tonumber(c:call("INFO", "commandstats"):match("cmdstat_" .. name .. ":calls=(%d+)"))
      or 0
  end
  local evals, evalshas = calls("eval"), calls("evalsha")
  eq(fn({ "sk" }, { 1 })[3], 6)
  eq(calls("eval"), evals, "loaded: no EVAL")
  eq(calls("evalsha"), evalshas + 1, "one EVALSHA")
  c:call("SCRIPT", "FLUSH")
  eq(fn({ "sk" }, { 1 })[3], 7, "flushed: EVAL again")
  local failing = c:script("return redis.error_reply('MYERR nope')")
  local x, err = failing()
  ok(x == nil and err.code == "MYERR" and err.reply_error, "a script's error reply")
  raises(function() c:script(5) end, "nim.Redis:script: source")
  raises(function() fn({ "k", {} }) end, "nim.Redis:script: keys[2]: expected a string")
  raises(function() fn({}, "x") end, "nim.Redis:script: args: expected a table")
  c:close()
end)

test("a_command_without_a_reply_in_time_is_a_timeout_and_later_calls_recover", function()
  local s = server()
  local c = redis.connect({ port = s.port, timeout = 0.3, backoff = 0.05, backoff_max = 0.1 })
  eq(c:call("PING"), "PONG")
  s.pause() -- the kernel still accepts and takes the bytes; the server answers nothing
  local t0 = nim.now()
  local r, err = c:call("INCR", "t")
  local took = nim.now() - t0
  eq(r, nil)
  eq(err.type, "timeout")
  ok(err.retryable and err.redis, "retryable, redis")
  match(err.message, "no reply within 0.3 s")
  ok(took >= 0.28 and took < 1, ("took %.2f s"):format(took))
  eq(c:status().state, "down", "the connection is dropped: replies are ordered")
  nim.sleep(0.1) -- past the backoff
  -- in tasks: the timeout fails the call while other tasks go on
  local got, ticks = nil, 0
  nim.spawn(function() got = { c:call("GET", "t") } end)
  nim.spawn(function()
    for _ = 1, 5 do
      nim.sleep(0.02)
      ticks = ticks + 1
    end
  end)
  ok(nim.run(3))
  eq(got[2].type, "timeout")
  eq(ticks, 5, "another task ran while the call waited")
  s.resume()
  eq(eventually(c, "PING"), "PONG", "later calls recover")
  local st = c:status()
  eq(st.state, "connected")
  eq(st.error, nil)
  ok(st.reconnects >= 2, "reconnected")
  c:close()
end)

test("a_connection_not_made_within_connect_timeout_is_a_timeout", function()
  -- a stopped server whose accept queue (--tcp-backlog 1) is full: new SYNs go unanswered
  local s = server("--tcp-backlog 1")
  s.pause()
  local fill = {}
  for i = 1, 4 do
    fill[i] = redis.connect({ port = s.port, timeout = 5, connect_timeout = 5 })
    nim.spawn(function() fill[i]:call("PING") end)
  end
  nim.poll()
  nim.native.sleep(0.2)
  nim.poll()
  eq(fill[4]:status().state, "connecting", "the accept queue is full")
  local c = redis.connect({ port = s.port, connect_timeout = 0.3 })
  local t0 = nim.now()
  local r, err = c:call("PING")
  local took = nim.now() - t0
  eq(r, nil)
  eq(err.type, "timeout")
  match(err.message, "no connection within 0.3 s %(connect_timeout%)")
  ok(took >= 0.28 and took < 1, ("took %.2f s"):format(took))
  eq(c:status().state, "down")
  for _, x in ipairs(fill) do x:close() end
  c:close()
  s.stop()
end)

test("a_killed_server_is_a_connection_error_and_a_restarted_one_is_used_again", function()
  local s = server()
  local c = redis.connect({ port = s.port, timeout = 5, backoff = 0.05, backoff_max = 0.2 })
  eq(c:call("PING"), "PONG")
  s.restart() -- while the connection is idle
  eq(c:call("PING"), "PONG", "an idle connection found closed is replaced, not failed")
  eq(c:status().reconnects, 1)
  -- killed with a command in flight: that command fails at once
  local got
  nim.spawn(function() got = { c:call("BLPOP", "nothing-here", 4) } end)
  nim.spawn(function()
    nim.sleep(0.2)
    s.kill()
  end)
  local t0 = nim.now()
  ok(nim.run(3))
  ok(nim.now() - t0 < 1.5, "no hang")
  eq(got[1], nil)
  eq(got[2].type, "connection")
  eq(got[2].retryable, true)
  local st = c:status()
  eq(st.state, "down")
  ok(st.error and st.retry_in > 0, "status says why and when")
  local r, err = c:call("PING") -- within the backoff: no attempt, an answer at once
  eq(r, nil)
  eq(err.type, "connection")
  match(err.message, "next attempt in")
  nim.sleep(0.25)
  r, err = c:call("PING") -- the attempt: refused
  eq(err.type, "connection")
  match(err.message, "refused")
  s.restart()
  eq(eventually(c, "PING"), "PONG", "the restarted server is used again")
  eq(c:status().state, "connected")
  c:close()
end)

test("close_fails_what_is_pending_and_later_calls_raise", function()
  local c = fresh({ timeout = 5 })
  local got
  nim.spawn(function() got = { c:call("BLPOP", "nothing-here", 2) } end)
  nim.poll()
  c:close()
  ok(nim.run(1))
  eq(got[2].type, "connection")
  match(got[2].message, "closed")
  eq(c:status().closed, true)
  match(tostring(c), "closed")
  raises(function() c:call("PING") end, "nim.Redis:call: the client is closed")
  c:close() -- idempotent
  do
    local scoped <close> = fresh()
    eq(scoped:call("PING"), "PONG")
  end
  for _ = 1, 20 do fresh():call("PING") end -- dropped clients are collected
  collectgarbage()
  collectgarbage()
end)

test("bad_options_raise_naming_the_field_and_rediss_is_refused", function()
  local cases = {
    { { url = "rediss://:hunter2-pw@h:6380" }, "url", "rediss:// (TLS) is not supported" },
    { { url = "http://h" }, "url", "redis://" },
    { { url = 5 }, "url", "expected a string" },
    { { url = "redis://:hunter2-pw@h/x" }, "url", "path" },
    { { port = 0 }, "port" },
    { { port = "6379" }, "port" },
    { { port = 1.5 }, "port" },
    { { db = -1 }, "db" },
    { { timeout = 0 }, "timeout" },
    { { connect_timeout = -1 }, "connect_timeout" },
    { { backoff = 1, backoff_max = 0.5 }, "backoff_max" },
    { { host = "a b" }, "host" },
    { { username = "u" }, "username", "needs a password" },
    { { password = {} }, "password" },
    { { bogus = 1 }, "bogus", "unknown option" },
  }
  for _, case in ipairs(cases) do
    local e = raises(function() redis.connect(case[1]) end, "redis.connect: " .. case[2] .. ":",
      case[3])
    match(e, "^tests/lua/redis_spec%.lua:%d+:", "at the caller's line")
    no_match(e, "hunter2-pw", "the message")
  end
  raises(function() redis.connect("redis://h") end, "table of options")
  local c = redis.connect({ port = 1 }) -- an unreachable server never raises
  local _, err = c:call("PING")
  eq(err.type, "connection")
  raises(function() c:call() end, "nim.Redis:call: command:")
  raises(function() c:call("GET", {}) end, "nim.Redis:call: argument #2: expected a string")
  raises(function() c:call("SUBSCRIBE", "ch") end, "SUBSCRIBE", "pub/sub")
  raises(function() c:call("client", "reply", "off") end, "CLIENT REPLY")
  raises(function() c:pipeline("GET") end, "nim.Redis:pipeline: commands:")
  raises(function() c:pipeline({ {} }) end, "[1]")
  raises(function() c:pipeline({ { "GET", true } }) end, "commands[1][2]")
  raises(function() c:pipeline({ { "MONITOR" } }) end, "commands[1]", "MONITOR")
  raises(function() c:call("MULTI") end, "MULTI is a transaction's command", "one pipeline")
  raises(function() c:call("WATCH", "k") end, "WATCH needs the connection to itself")
  raises(function() c:pipeline({ { "MULTI" }, { "INCR", "k" } }) end, "without its EXEC")
  raises(function() c:pipeline({ { "MULTI" }, { "MULTI" } }) end, "commands[2]", "nest")
  c:close()
end)

-- The gateway's own loop (server.c) drives Redis through the engine's one descriptor: a request
-- waiting on Redis leaves the worker free for the others.
test("in_nimrank_serve_a_request_waiting_on_redis_leaves_the_worker_to_others", function()
  local dir = h.sh("mktemp -d"):gsub("%s+$", "")
  local f = assert(io.open(dir .. "/init.lua", "w"))
  f:write([[
local nim = ...
local redis = require "nim.redis"
local c = redis.connect({ url = os.getenv("NIMRANK_TEST_REDIS") })
-- BLPOP holds its connection until it answers: it gets a client of its own
local blocking = redis.connect({ url = os.getenv("NIMRANK_TEST_REDIS"), timeout = 5 })
-- a call in the supervisor: its engine, and this connection, are dropped before the fork
assert(c:call("SET", "boot", "before the fork"))
local rerank = nim.rerank
nim.rerank = function(args)
  assert(c:call("INCR", "served"))
  if args.query:find("!hold", 1, true) then blocking:call("BLPOP", "nothing-here", 0.6) end
  return rerank(args)
end
]])
  f:close()
  srv.cli("DEL", "served")
  local nimrank = h.nimrank
  h.nimrank = ("env NIMRANK_INIT=%s NIMRANK_TEST_REDIS=%s %s"):format(h.q(dir .. "/init.lua"),
    h.q(srv.url), nimrank)
  local okc, gw = pcall(h.serve, "model_list:\n  - model_name: g\n    litellm_params:\n"
    .. "      model: local/bm25\n", "--workers 1")
  h.nimrank = nimrank
  ok(okc, tostring(gw))
  local function post(query, out)
    return ("curl -s -o /dev/null -w '%%{http_code} %%{time_total}' -H 'Content-Type: "
      .. "application/json' -d %s %s/v1/rerank > %s"):format(h.q(('{"model":"g","query":"%s",'
      .. '"documents":["gpu memory","cats"]}'):format(query)), gw.url, h.q(out))
  end
  local okr, err = pcall(function()
    h.sh(post("!hold gpu", dir .. "/slow") .. " & sleep 0.1; " .. post("gpu", dir .. "/fast")
      .. "; wait")
    local code_s, t_slow = io.open(dir .. "/slow"):read("a"):match("(%d+) ([%d.]+)")
    local code_f, t_fast = io.open(dir .. "/fast"):read("a"):match("(%d+) ([%d.]+)")
    eq(code_s, "200", "the request that waited on Redis")
    eq(code_f, "200", "the other")
    ok(tonumber(t_slow) >= 0.55, "the first waited in Redis: " .. t_slow)
    ok(tonumber(t_fast) < 0.3, "the second was served meanwhile: " .. t_fast)
    eq(srv.cli("GET", "served"), "2", "both counted in Redis by the worker")
    eq(srv.cli("GET", "boot"), "before the fork")
  end)
  gw.stop()
  h.sh("rm -rf " .. h.q(dir))
  if not okr then error(err, 0) end
end)

-- A fake Redis server (perl) on a free loopback port: each connection runs `body` (perl, with
-- $c the client's socket). Killed by stop(), or after 20 s whatever happens.
local function fake_server(body)
  local dir = h.sh("mktemp -d"):gsub("%s+$", "")
  local script = [[
use IO::Socket::INET; $SIG{PIPE} = "IGNORE"; $SIG{ALRM} = sub { exit 0 }; alarm 20;
my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0, Listen => 5,
  ReuseAddr => 1) or die "listen: $!";
open(my $f, ">", "$ARGV[0]/port.tmp") or die; print $f $s->sockport; close $f;
rename("$ARGV[0]/port.tmp", "$ARGV[0]/port");
while (my $c = $s->accept) { ]] .. body .. [[; close $c }]]
  h.sh(("perl -e %s %s </dev/null >/dev/null 2>%s & echo $! >%s"):format(h.q(script), h.q(dir),
    h.q(dir .. "/err"), h.q(dir .. "/pid")))
  local f = { pid = tonumber((io.open(dir .. "/pid"):read("a"))) }
  for _ = 1, 200 do
    local pf = io.open(dir .. "/port")
    if pf then f.port = tonumber(pf:read("a")); pf:close(); break end
    h.sh("sleep 0.02")
  end
  function f.stop()
    h.sh(("kill -9 %d 2>/dev/null; rm -rf %s"):format(f.pid, h.q(dir)))
  end
  if not f.port then f.stop(); error("the fake server did not start") end
  return f
end

test("a_command_that_fails_at_once_in_a_task_does_not_wait_for_a_wake_up", function()
  -- a refused port: the command fails before any yield could be woken (no fd, no deadline)
  local c = redis.connect{ host = "127.0.0.1", port = 1, backoff = 5, backoff_max = 5 }
  local errs, finished = {}, 0
  for i = 1, 2 do
    nim.spawn(function() -- the later calls find the client down, with backoff left
      for _ = 1, 3 do
        local _, err = c:call("PING")
        errs[i] = err
      end
      finished = finished + 1
    end)
  end
  local polls = 0
  while finished < 2 and polls < 200 do
    polls = polls + 1
    nim.poll()
    if finished < 2 and nim.next_timeout() == nil then
      -- only the network may wake the tasks: then the client must have something in flight
      ok(c:status().pending > 0,
        ("poll %d: a task waits on a finished operation and nothing would wake it"):format(polls))
      nim.native.step(0.01)
    end
  end
  ok(errs[1] and errs[2], "both tasks got their error")
  eq(errs[1].type, "connection")
  eq(errs[2].type, "connection")
  c:close()
end)

test("a_reply_no_command_asked_for_drops_the_connection_instead_of_aborting", function()
  -- hiredis 0.14 assert()s (SIGABRT) on a reply with no callback waiting for it
  local f = fake_server([[my $b; sysread($c, $b, 65536); syswrite($c, "+OK\r\n+EXTRA\r\n");
    while (sysread($c, $b, 65536)) {}]])
  local okr, err = pcall(function()
    local c = redis.connect{ host = "127.0.0.1", port = f.port, timeout = 2 }
    eq(c:call("PING"), "OK", "the reply of the command")
    local st = c:status()
    ok(st.state ~= "connected", "the connection was dropped: " .. st.state)
    match(st.error or "", "more replies than commands")
    -- unsolicited data while nothing is pending: dropped too
    local g = fake_server([[my $b; sysread($c, $b, 65536); syswrite($c, "+OK\r\n");
      select(undef, undef, undef, 0.2); syswrite($c, "+LATE\r\n");
      while (sysread($c, $b, 65536)) {}]])
    local okg, errg = pcall(function()
      local d = redis.connect{ host = "127.0.0.1", port = g.port, timeout = 2 }
      eq(d:call("PING"), "OK")
      local deadline = nim.now() + 3
      while d:status().state == "connected" and nim.now() < deadline do
        nim.native.step(0.05)
      end
      local st2 = d:status()
      ok(st2.state ~= "connected", "dropped: " .. st2.state)
      match(st2.error or "", "no command asked for")
      d:close()
    end)
    g.stop()
    if not okg then error(errg, 0) end
    c:close()
  end)
  f.stop()
  if not okr then error(err, 0) end
end)

test("a_reply_over_max_reply_bytes_fails_as_bad_response_and_drops_the_connection", function()
  local f = fake_server([[my $b; sysread($c, $b, 65536); syswrite($c, "\$100000000\r\n");
    my $chunk = "x" x 65536; for (1 .. 1600) { last unless defined syswrite($c, $chunk) }]])
  local okr, err = pcall(function()
    local c = redis.connect{ host = "127.0.0.1", port = f.port, timeout = 5,
      max_reply_bytes = 1024 * 1024 }
    local t0 = nim.now()
    local v, e = c:call("GET", "big")
    eq(v, nil)
    ok(e, "an error")
    eq(e.type, "bad_response")
    match(e.message, "reply larger than 1048576 bytes")
    ok(nim.now() - t0 < 3, "failed as soon as the cap was passed")
    ok(c:status().state ~= "connected", "the connection was dropped")
    c:close()
  end)
  f.stop()
  if not okr then error(err, 0) end
  raises(function() redis.connect{ max_reply_bytes = 0 } end, "max_reply_bytes")
  raises(function() redis.connect{ max_reply_bytes = 1.5 } end, "max_reply_bytes")
  raises(function() redis.connect{ max_reply_bytes = "1" } end, "max_reply_bytes")
end)

test("replication_and_connection_state_commands_are_refused", function()
  local c = fresh()
  for _, cmd in ipairs({ { "SYNC" }, { "PSYNC", "?", "-1" }, { "REPLCONF", "listening-port", "1" },
      { "READONLY" }, { "readwrite" }, { "CLIENT", "SETNAME", "x" } }) do
    raises(function() c:call(table.unpack(cmd)) end, cmd[1])
    raises(function() c:pipeline{ cmd } end, "not supported")
  end
  raises(function() c:call("SYNC") end, "replication")
  raises(function() c:call("READONLY") end, "reconnection would silently lose")
  raises(function() c:call("CLIENT", "setname", "x") end, "CLIENT SETNAME")
  eq(c:call("CLIENT", "GETNAME"), nil, "other CLIENT subcommands still go through")
  c:close()
end)

test("zz_the_servers_are_stopped", function()
  for _, s in ipairs(servers) do
    local pid = s.pid
    s.stop()
    if pid then ok(not h.alive(pid), "stopped") end
  end
end)
