-- The benchmark scripts, run tiny: each runs to its end and leaves no server behind. (Their
-- numbers are reported by `make bench`, never asserted.)
local spec = require "spec"
local h = require "helpers"
local test, eq, match = spec.test, spec.eq, spec.match

-- The fakes a script started (it lists them in $BENCH_PIDS) that are still running.
local function alive(pidfile)
  local n = 0
  for pid in io.lines(pidfile) do
    if select(2, h.sh("kill -0 " .. pid .. " 2>/dev/null")) == 0 then n = n + 1 end
  end
  return n
end

test("bench_scripts_run_to_the_end_and_leave_no_server", function()
  local build = h.nimrank:match("^(.*)/nimrank$")
  for _, c in ipairs({
    { "ROUNDS=1 CALLS=2 sh bench/overhead.sh", "CPU per call" },
    { "sh bench/bm25.sh 200 2", "local/bm25: 200 docs" },
    { "sh bench/fanout.sh 1 '1 4'", "upstream delay 1 ms" },
    { "sh bench/providers.sh 10", "voyage %(descriptor%)%s+1000" },
  }) do
    local pidfile = os.tmpname()
    local out, code = h.sh(("BENCH_PIDS=%s BUILD=%s %s 2>&1"):format(h.q(pidfile), h.q(build),
      c[1]))
    eq(code, 0, c[1] .. ": " .. out)
    match(out, c[2], c[1] .. " reached its end")
    eq(alive(pidfile), 0, c[1] .. " left no fake server running")
    os.remove(pidfile)
  end
end)
