-- spec.lua: a small test framework for the Lua specs. Each test is a named function; checks
-- raise on failure with the caller's line; the runner counts and reports.
local M = { tests = {} }

function M.test(name, fn) M.tests[#M.tests + 1] = { name = name, fn = fn } end

local function fmt(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

function M.eq(got, want, what)
  if got ~= want then
    error(("%s: got %s, want %s"):format(what or "value", fmt(got), fmt(want)), 2)
  end
end

function M.ok(cond, what)
  if not cond then error((what or "condition") .. ": not true", 2) end
  return cond
end

function M.near(got, want, eps, what)
  if type(got) ~= "number" or math.abs(got - want) > eps then
    error(("%s: got %s, want %s (+-%s)"):format(what or "value", fmt(got), fmt(want), eps), 2)
  end
end

function M.match(s, pattern, what)
  if type(s) ~= "string" or not s:find(pattern) then
    error(("%s: %s does not match %q"):format(what or "string", fmt(s), pattern), 2)
  end
end

function M.no_match(s, pattern, what)
  if type(s) == "string" and s:find(pattern, 1, true) then
    error(("%s: %s contains %q"):format(what or "string", fmt(s), pattern), 2)
  end
end

-- fn must raise; the message must contain every plain substring given.
function M.raises(fn, ...)
  local ok, err = pcall(fn)
  if ok then error("expected an error, got none", 2) end
  err = tostring(err)
  for _, s in ipairs({ ... }) do
    if not err:find(s, 1, true) then
      error(("error %q does not contain %q"):format(err, s), 2)
    end
  end
  return err
end

function M.deep_eq(a, b, what, path)
  path = path or (what or "value")
  if type(a) ~= type(b) then error(("%s: type %s, want %s"):format(path, type(a), type(b)), 2) end
  if type(a) ~= "table" then
    if a ~= b then error(("%s: got %s, want %s"):format(path, fmt(a), fmt(b)), 2) end
    return
  end
  for k, v in pairs(b) do M.deep_eq(a[k], v, nil, path .. "." .. tostring(k)) end
  for k in pairs(a) do
    if b[k] == nil then error(("%s.%s: unexpected"):format(path, tostring(k)), 2) end
  end
end

-- skip(reason): ends the test as skipped (neither passed nor failed), with the reason
-- printed. Only for what the machine cannot offer (a registry that cannot be reached).
local SKIP = {}
function M.skip(reason) error(setmetatable({ reason = reason }, SKIP), 0) end

-- Runs every registered test; prints one line each and a summary; returns passed, failed.
function M.run(suite)
  local passed, failed = 0, 0
  for _, t in ipairs(M.tests) do
    local ok, err = xpcall(t.fn, function(e)
      if getmetatable(e) == SKIP then return e end
      return debug.traceback(tostring(e), 2)
    end)
    if not ok and getmetatable(err) == SKIP then
      print("skip " .. t.name .. ": " .. tostring(err.reason))
    elseif ok then
      passed = passed + 1
      print("ok   " .. t.name)
    else
      failed = failed + 1
      print("FAIL " .. t.name)
      io.stdout:write("     ", (tostring(err):gsub("\n", "\n     ")), "\n")
    end
  end
  print(("%s: %d passed, %d failed"):format(suite, passed, failed))
  M.tests = {}
  return passed, failed
end

return M
