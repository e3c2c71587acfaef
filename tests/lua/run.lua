-- run.lua: runs spec files (arguments) and ends with "lua: N passed, N failed".
package.path = "tests/lua/?.lua;" .. package.path
local spec = require "spec"
local passed, failed = 0, 0
for _, file in ipairs(arg) do
  local chunk, err = loadfile(file)
  if not chunk then
    print("FAIL loading " .. file .. ": " .. err)
    failed = failed + 1
  else
    local ok, e = pcall(chunk)
    if not ok then
      print("FAIL running " .. file .. ": " .. tostring(e))
      failed = failed + 1
    end
    local p, f = spec.run("  " .. file)
    passed, failed = passed + p, failed + f
  end
end
print(("lua: %d passed, %d failed"):format(passed, failed))
os.exit(failed == 0 and 0 or 1)
