-- helpers.lua: what the specs share: the fake servers' URLs and key, and small utilities.
local M = {}

M.url = assert(os.getenv("FAKE_URL"), "FAKE_URL not set: run through tests/run.sh")
M.open_url = assert(os.getenv("FAKE_OPEN_URL"), "FAKE_OPEN_URL not set")
M.key = assert(os.getenv("FAKE_KEY"), "FAKE_KEY not set")
M.nimrank = os.getenv("NIMRANK_BIN") or "build/nimrank"

M.RETRIEVAL = "nvidia_nim/nvidia/llama-nemotron-rerank-1b-v2"
M.RANKING = "nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2"

M.DOCS = {
  "The Hopper GPU is paired with the Grace CPU using NVIDIA's ultra-fast chip-to-chip "
    .. "interconnect, delivering 900GB/s of bandwidth.",
  "A100 provides up to 20X higher performance over the prior generation.",
  "Accelerated servers with H100 deliver 3 terabytes per second (TB/s) of memory bandwidth "
    .. "per GPU.",
}
M.QUERY = "What is the GPU memory bandwidth of H100 SXM?"

-- Arguments for a call against the keyed fake; overrides merged on top.
function M.args(over)
  local a = { model = M.RETRIEVAL, query = M.QUERY, documents = M.DOCS,
              api_key = M.key, api_base = M.url }
  for k, v in pairs(over or {}) do a[k] = v end
  return a
end

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
M.q = shell_quote

-- Runs a shell command; returns stdout, exit code.
function M.sh(cmd)
  local f = assert(io.popen(cmd, "r"))
  local out = f:read("a")
  local _, _, code = f:close()
  return out, code
end

-- The last POST the fake saw: { path, headers = {lowercase = value}, body = raw string }.
function M.last(base)
  local json = require "nim.json"
  local out = M.sh("curl -s " .. shell_quote((base or M.url) .. "/_fake/last"))
  return json.decode(out)
end

-- A fake clock for injected-clock tests: sleeping only advances it.
function M.fake_time()
  local t = { now = 1000, slept = {} }
  t.clock = function() return t.now end
  t.sleep = function(s) t.slept[#t.slept + 1] = s; t.now = t.now + s end
  return t
end

-- A seeded generator (Park-Miller), so "random" choices are the same on every run.
function M.seeded(seed)
  local x = seed
  return function()
    x = (x * 16807) % 2147483647
    return x / 2147483647
  end
end

function M.decode(s) return require("nim.json").decode(s) end

function M.words(n, len)
  local t = {}
  local base = "lorem ipsum dolor sit amet gpu memory bandwidth "
  for i = 1, n do
    local s = ("doc %d "):format(i) .. base:rep(math.ceil(len / #base))
    t[i] = s:sub(1, len)
  end
  return t
end

-- Starts `nimrank serve` with a config (YAML text) on a free port; returns a server table
-- { url, pid, log (the log file), dir, stop() } once it says it is listening, or raises with
-- its stderr. The server runs in the background of a shell that records its PID, never in
-- a command substitution; stop() (SIGTERM, then SIGKILL) is for a `finally`.
function M.serve(config_yaml, extra)
  local dir = M.sh("mktemp -d"):gsub("%s+$", "")
  local cfg = io.open(dir .. "/config.yaml", "w")
  cfg:write(config_yaml)
  cfg:close()
  -- every standard stream redirected: a server holding popen's pipe would block this read
  M.sh(("%s serve --config %s --port 0 --log %s %s </dev/null >/dev/null 2>%s & echo $! >%s")
    :format(
    M.nimrank, shell_quote(dir .. "/config.yaml"), shell_quote(dir .. "/log"), extra or "",
    shell_quote(dir .. "/err"), shell_quote(dir .. "/pid")))
  local srv = { dir = dir, log = dir .. "/log", config = dir .. "/config.yaml" }
  srv.pid = tonumber((io.open(dir .. "/pid"):read("a")))
  function srv.stop()
    if srv.pid then
      M.sh(("kill %d 2>/dev/null; i=0; while kill -0 %d 2>/dev/null && [ $i -lt 100 ]; do "
        .. "sleep 0.05; i=$((i+1)); done; kill -9 %d 2>/dev/null; pkill -9 -P %d 2>/dev/null")
        :format(srv.pid, srv.pid, srv.pid, srv.pid))
      srv.pid = nil
    end
    M.sh("rm -rf " .. shell_quote(dir))
  end
  local deadline = os.time() + 15
  while os.time() <= deadline do
    local f = io.open(dir .. "/err")
    local err = f and f:read("a") or ""
    if f then f:close() end
    local url = err:match("listening on (http://[^%s]+)")
    if url then
      srv.url = url:gsub("0%.0%.0%.0", "127.0.0.1")
      return srv
    end
    if M.sh(("kill -0 %d 2>/dev/null && echo up"):format(srv.pid)) == "" then
      srv.stop()
      error("nimrank serve did not start: " .. err, 2)
    end
    M.sh("sleep 0.05")
  end
  srv.stop()
  error("nimrank serve did not say it was listening within 15 s", 2)
end

-- Whether process pid runs (a zombie does not).
function M.alive(pid)
  return M.sh(("grep -v '^State:.*Z' /proc/%d/status 2>/dev/null | grep -q '^State:' && echo y")
    :format(pid)) ~= ""
end

-- The process id of this test (the shell popen starts is its child).
function M.pid()
  return tonumber((M.sh("echo $PPID")))
end

-- Starts a real redis-server on a free loopback port (tests/redis.sh: in the background, its
-- PID recorded, killed by a watchdog if this test ends without stopping it). Returns
-- { port, pid, url, stop(), kill(), restart(), pause(), resume(), cli(args...) }; extra:
-- redis-server options as one shell-quoted string.
function M.redis(extra)
  local dir = M.sh("mktemp -d"):gsub("%s+$", "")
  local srv = { dir = dir, extra = extra or "" }
  local function start(port)
    local out = M.sh(("sh tests/redis.sh %s %d %d %s 2>&1"):format(shell_quote(dir), M.pid(),
      port, srv.extra))
    local p, pid = out:match("PORT (%d+) PID (%d+)")
    if not p then error("redis-server did not start: " .. out, 3) end
    srv.port, srv.pid = tonumber(p), tonumber(pid)
    srv.url = ("redis://127.0.0.1:%d"):format(srv.port)
  end
  local function wait_gone() -- a zombie counts as gone: nothing may reap it soon
    M.sh(("i=0; while [ $i -lt 200 ] && grep -v '^State:.*Z' /proc/%d/status 2>/dev/null | "
      .. "grep -q '^State:'; do sleep 0.02; i=$((i+1)); done"):format(srv.pid))
  end
  function srv.kill() -- SIGKILL: the server vanishes mid-conversation
    if srv.pid then
      M.sh(("kill -CONT %d 2>/dev/null; kill -9 %d 2>/dev/null"):format(srv.pid, srv.pid))
      wait_gone()
      srv.pid = nil
    end
  end
  function srv.restart() srv.kill(); start(srv.port) end
  function srv.pause() M.sh(("kill -STOP %d"):format(srv.pid)) end -- accepts, never answers
  function srv.resume() M.sh(("kill -CONT %d"):format(srv.pid)) end
  function srv.stop()
    srv.kill()
    M.sh("rm -rf " .. shell_quote(dir))
  end
  -- redis-cli against it (no client of ours involved): its output, trimmed
  function srv.cli(...)
    local args = {}
    for i, a in ipairs({ ... }) do args[i] = shell_quote(a) end
    return (M.sh(("redis-cli -p %d %s 2>&1"):format(srv.port, table.concat(args, " ")))
      :gsub("%s+$", ""))
  end
  start(0)
  return srv
end

return M
