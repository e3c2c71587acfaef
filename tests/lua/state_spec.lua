-- nim.state: the router's state store.
local spec = require "spec"
local state = require "nim.state"
local test, eq, ok = spec.test, spec.eq, spec.ok

test("local_store_counts_usage_in_windows_and_failures_in_a_sliding_minute", function()
  local s = state.new_local({ usage_window = 10 })
  s:register("d")
  ok(s:admit("d", 100, 2, nil), "first")
  ok(s:admit("d", 101, 2, nil), "second")
  local admitted, wait = s:admit("d", 105, 2, nil)
  eq(admitted, false, "third refused")
  eq(wait, 5, "the window (opened at 100) frees at 110")
  s:record("d", 105, 40)
  eq(s.records.d.tokens, 40, "tokens")
  ok(s:admit("d", 110, 2, 50), "a new window")
  eq(s.records.d.tokens, 0, "tokens reset with it")
  eq(s:fail("d", 200, 1, 5), false, "one failure allowed")
  eq(s:fail("d", 261, 1, 5), false, "the first left the minute")
  eq(s:fail("d", 262, 1, 5), true, "two within a minute: cooling")
  eq(s.records.d.cooldown_until, 267, "for the cooldown time")
  eq(s:cooling(263), 1, "counted as cooling")
  eq(s:health().state, "local", "health")
end)
