-- The benchmark scripts, run tiny: each runs to its end and leaves no server behind. (Their
-- numbers are reported by `make bench`, never asserted.)
local spec = require "spec"
local h = require "helpers"
local test, eq, match = spec.test, spec.eq, spec.match

local function fakes()
  local out = h.sh("pgrep -c -f 'build[^ ]*/fakenim' || true")
  return tonumber(out) or 0
end

test("bench_scripts_run_to_the_end_and_leave_no_server", function()
  local build = h.nimrank:match("^(.*)/nimrank$")
  local before = fakes()
  for _, c in ipairs({
    { "ROUNDS=1 sh bench/overhead.sh 2", "cpu ovh" },
    { "sh bench/bm25.sh 200 2", "local/bm25: 200 docs" },
    { "sh bench/fanout.sh 1 2", "2 requests, upstream delay 1 ms" },
  }) do
    local out, code = h.sh(("BUILD=%s %s 2>&1"):format(h.q(build), c[1]))
    eq(code, 0, c[1] .. ": " .. out)
    match(out, c[2], c[1] .. " reached its end")
    eq(fakes(), before, c[1] .. " left no fake server running")
  end
end)
