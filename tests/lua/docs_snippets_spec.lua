-- The documentation cannot drift from the code:
-- * every fenced code block of README.md and docs/*.md marked runnable runs and exits 0: info
--   string `lua runnable` (a script run by the built nimrank) or `sh runnable` (sh -e, with
--   `nimrank` on PATH as the built program); pandoc's attribute form `{.lua .runnable}` and
--   `{.sh .runnable}` too (docs/nimrank.1.md uses it: pandoc takes no second word). A block
--   runs from the repository's root with the suite's fakes in its environment (FAKE_URL,
--   FAKE_OPEN_URL, FAKE_KEY), within BLOCK_SECONDS, and must leave no process behind;
-- * the man page (docs/nimrank.1.md) builds with `make man`, renders with man -l, names
--   exactly the options each --help prints, command by command, and every environment
--   variable the code reads; `make install` installs it and `make uninstall` removes it.
local spec = require "spec"
local h = require "helpers"
local test, eq, ok, match = spec.test, spec.eq, spec.ok, spec.match
local q, sh = h.q, h.sh

-- Runnable blocks there must be at least, once docs/ holds any guide. Raise it as the guides
-- gain runnable examples, so that a block that loses its marker is noticed.
local MIN_BLOCKS = 1
local BLOCK_SECONDS = 60

local ROOT = sh("pwd"):gsub("%s+$", "")
local function abs(p) return p:sub(1, 1) == "/" and p or ROOT .. "/" .. p end
local BIN = abs(h.nimrank)
local BUILD_REL = h.nimrank:match("^(.*)/[^/]*$") or "."
local BUILD = abs(BUILD_REL)
local MAN = BUILD .. "/nimrank.1"

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function tail(s, n)
  if #s <= n then return s end
  return "..." .. s:sub(-n)
end

-- ---- the runnable blocks ------------------------------------------------------------------

-- The documents: README.md, then docs/*.md in name order.
local function doc_files()
  local files = { "README.md" }
  for f in sh("ls docs/*.md 2>/dev/null"):gmatch("[^\n]+") do files[#files + 1] = f end
  return files
end

-- The language of a runnable block's info string ("lua runnable", "{.sh .runnable}"), "" for
-- a runnable one that names none, nil for a block that is not runnable.
local function runnable_language(info)
  local words = {}
  for w in info:gsub("[{}]", " "):gmatch("%S+") do words[#words + 1] = (w:gsub("^%.", "")) end
  for i, w in ipairs(words) do
    if w == "runnable" then return i > 1 and words[1] or "" end
  end
  return nil
end

-- The fenced code blocks of a Markdown file (CommonMark's rules: ``` or ~~~, closed by the
-- same character at least as many times; the opening fence's indentation is taken off every
-- line): { file, line (of the opening fence), info, lang, code }, runnable ones only.
local function runnable_blocks(file)
  local text = read(file)
  if not text then return {} end
  local found, open, n = {}, nil, 0
  for line in (text:gsub("\n?$", "\n")):gmatch("([^\n]*)\n") do
    n = n + 1
    if not open then
      local indent, fence, info = line:match("^(%s*)(```+)%s*([^`]*)$")
      if not fence then indent, fence, info = line:match("^(%s*)(~~~+)%s*(.*)$") end
      if fence then
        open = { file = file, line = n, indent = #indent, fence = fence,
          info = info:gsub("%s+$", ""), lines = {} }
      end
    else
      local close = line:match("^%s*(" .. (open.fence:sub(1, 1) == "`" and "`+" or "~+")
        .. ")%s*$")
      if close and #close >= #open.fence then
        open.lang = runnable_language(open.info)
        if open.lang then
          open.code = table.concat(open.lines, "\n") .. "\n"
          found[#found + 1] = open
        end
        open = nil
      else
        local strip = #line:match("^ *")
        if strip > open.indent then strip = open.indent end
        open.lines[#open.lines + 1] = line:sub(strip + 1)
      end
    end
  end
  return found
end

-- Runs a command in a session of its own (its process group: everything it starts), within
-- BLOCK_SECONDS, the built program's directory first on PATH. Returns its exit code, its
-- output (stdout and stderr), and whether processes of it were still running after it ended
-- (they are then stopped).
local function run_isolated(cmd)
  local base = os.tmpname()
  local out = base .. ".out"
  local script = ([[
PATH=%s:$PATH; export PATH
setsid timeout -k 5 %d %s >%s 2>&1 </dev/null &
p=$!
wait $p; rc=$?
i=0
while kill -0 -$p 2>/dev/null && [ $i -lt 40 ]; do sleep 0.05; i=$((i + 1)); done
left=0
if kill -0 -$p 2>/dev/null; then
  left=1; kill -TERM -$p 2>/dev/null; sleep 0.5; kill -KILL -$p 2>/dev/null
fi
echo "$rc $left"
]]):format(q(BUILD), BLOCK_SECONDS, cmd, q(out))
  local res = sh(script)
  local rc, left = res:match("(%d+) (%d+)")
  local output = read(out) or ""
  os.remove(out)
  os.remove(base)
  return tonumber(rc), output, left == "1"
end

local function run_block(b)
  local base = os.tmpname()
  local src = base .. (b.lang == "lua" and ".lua" or ".sh")
  write(src, b.code)
  local cmd = b.lang == "lua" and (q(BIN) .. " " .. q(src)) or ("sh -e " .. q(src))
  local rc, output, left = run_isolated(cmd)
  os.remove(src)
  os.remove(base)
  return rc, output, left
end

local BLOCKS = {}
for _, file in ipairs(doc_files()) do
  for _, b in ipairs(runnable_blocks(file)) do BLOCKS[#BLOCKS + 1] = b end
end

for _, b in ipairs(BLOCKS) do
  local where = ("%s:%d"):format(b.file, b.line)
  test(("runnable_block_exits_0 %s (%s)"):format(where, b.info), function()
    if b.lang ~= "lua" and b.lang ~= "sh" then
      error(("%s: a runnable block must be `lua runnable` or `sh runnable`, not %q")
        :format(where, b.info), 0)
    end
    local rc, output, left = run_block(b)
    if rc == 124 or rc == 137 then
      error(("%s: the %s block did not end within %d s:\n%s"):format(where, b.lang,
        BLOCK_SECONDS, tail(output, 1500)), 0)
    end
    if rc ~= 0 then
      error(("%s: the %s block exited %s:\n%s"):format(where, b.lang, tostring(rc),
        tail(output, 1500)), 0)
    end
    if left then
      error(("%s: the %s block left processes running (stopped now):\n%s"):format(where,
        b.lang, tail(output, 500)), 0)
    end
  end)
end

test("docs_hold_at_least_MIN_BLOCKS_runnable_blocks", function()
  local guides = sh("ls docs/*.md 2>/dev/null")
  print(("     %d runnable blocks in README.md and docs/*.md (at least %d once docs/ holds a "
    .. "guide)"):format(#BLOCKS, MIN_BLOCKS))
  if guides ~= "" then
    ok(#BLOCKS >= MIN_BLOCKS, ("%d runnable blocks, want at least %d"):format(#BLOCKS,
      MIN_BLOCKS))
  end
end)

-- The runner itself: a failing block is caught, and one that leaves a server behind.
test("a_failing_or_leaking_block_is_reported", function()
  local rc, output = run_block({ lang = "sh", code = "echo before\nfalse\necho after\n" })
  eq(rc, 1, "sh -e: the first failing command ends the block")
  match(output, "before", "its output is kept")
  eq(output:find("after", 1, true), nil, "nothing after the failure ran")
  local left
  rc, _, left = run_block({ lang = "sh", code = "sleep 30 &\necho started\n" })
  eq(rc, 0, "the block itself succeeded")
  ok(left, "the sleep it left behind was noticed")
  rc, output = run_block({ lang = "lua", code = "print(nim.version)\nos.exit(3)\n" })
  eq(rc, 3, "a lua block's exit code")
  match(output, "^%d+%.%d+", "lua blocks run in the nimrank host")
  rc, output = run_block({ lang = "sh", code = "command -v nimrank\n" })
  eq(rc, 0, "nimrank is on PATH")
  eq((output:gsub("%s+$", "")), BIN, "and it is the built program")
  local blocks = runnable_blocks(ROOT .. "/tests/lua/docs_snippets_spec.lua") -- none here
  eq(#blocks, 0, "a file without fences has no blocks")
end)

test("fences_and_info_strings_are_read_as_commonmark_does", function()
  local name = os.tmpname()
  write(name, table.concat({
    "text",
    "```lua runnable",          -- line 2
    "print(1)",
    "```",
    "````sh runnable",          -- line 5: a longer fence holds a shorter one
    "echo '```'",
    "```",
    "````",
    "  ~~~ {.sh .runnable}",    -- line 9: indented, tildes, pandoc attributes
    "  echo indented",
    "  ~~~",
    "```lua",                   -- not runnable
    "print(2)",
    "```",
    "```yaml runnable",         -- runnable, but no language that runs
    "a: 1",
    "```",
  }, "\n") .. "\n")
  local b = runnable_blocks(name)
  os.remove(name)
  eq(#b, 4, "runnable blocks")
  eq(b[1].line, 2, "first at its fence's line")
  eq(b[1].lang, "lua", "lua")
  eq(b[1].code, "print(1)\n", "lua code")
  eq(b[2].line, 5, "second")
  eq(b[2].code, "echo '```'\n```\n", "an inner shorter fence is content")
  eq(b[3].lang, "sh", "pandoc attributes")
  eq(b[3].code, "echo indented\n", "the fence's indentation is taken off")
  eq(b[4].lang, "yaml", "an unknown language is kept, and fails its test")
end)

-- ---- the man page ---------------------------------------------------------------------------

local SECTIONS = { "NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "ENVIRONMENT",
  "FILES", "EXIT STATUS", "EXAMPLES", "SEE ALSO" }

-- The man page as man -l renders it (overstrikes removed, tabs expanded): text, warnings.
local function render(path, width)
  local err = os.tmpname()
  local out, code = sh(("MANWIDTH=%d man --warnings -l %s 2>%s | col -bx"):format(width,
    q(path), q(err)))
  local warnings = read(err) or ""
  os.remove(err)
  return out, warnings, code
end

-- Sections of rendered man text: { [heading] = text }; and the subsections of one.
local function sections(text)
  local out, name, buf = {}, nil, {}
  for line in text:gmatch("([^\n]*)\n") do
    if line:match("^%u[%u ]*%u$") then
      if name then out[name] = table.concat(buf, "\n") end
      name, buf = line, {}
    elseif name then
      buf[#buf + 1] = line
    end
  end
  if name then out[name] = table.concat(buf, "\n") end
  return out
end
local function subsections(text)
  local out, order, name, buf = {}, {}, nil, {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    local title = line:match("^   (%S.-)%s*$")
    if title then
      if name then out[name] = table.concat(buf, "\n") end
      name, buf = title, {}
      order[#order + 1] = title
    elseif name then
      buf[#buf + 1] = line
    end
  end
  if name then out[name] = table.concat(buf, "\n") end
  return out, order
end

-- The options a text names: --long and -s words (not the hyphens inside words).
local function options_in(text)
  local set = {}
  for opt in (" " .. text):gmatch("[%s%[%(,|'\"`=](%-%-?%a[%w%-]*)") do
    set[(opt:gsub("%-+$", ""))] = true
  end
  return set
end

local function sorted_keys(t)
  local k = {}
  for key in pairs(t) do k[#k + 1] = key end
  table.sort(k)
  return k
end

local function missing(want, have)
  local m = {}
  for _, k in ipairs(sorted_keys(want)) do
    if not have[k] then m[#m + 1] = k end
  end
  return m
end

test("man_page_builds_and_renders", function()
  local out, code = sh(("make -s --no-print-directory man BUILD=%s 2>&1"):format(q(BUILD_REL)))
  eq(code, 0, "make man: " .. out)
  local src_time = sh("stat -c %Y docs/nimrank.1.md"):gsub("%s+", "")
  local man_time = sh("stat -c %Y " .. q(MAN) .. " 2>/dev/null"):gsub("%s+", "")
  ok(man_time ~= "" and tonumber(man_time) >= tonumber(src_time), MAN .. " is up to date")
  local text, warnings = render(MAN, 80)
  eq(warnings, "", "man --warnings -l: no warnings")
  local s = sections(text)
  for _, name in ipairs(SECTIONS) do ok(s[name], "section " .. name) end
  match(text, "^NIMRANK%(1%)%s+User Commands%s+NIMRANK%(1%)", "the header line")
  local version = sh(q(BIN) .. " --version"):match("^nimrank (%S+)")
  match(text, "nimrank " .. version:gsub("%p", "%%%0") .. "%s+NIMRANK%(1%)%s*$",
    "the footer names the version")
  local n = 0
  for line in text:gmatch("([^\n]*)\n") do
    n = n + 1
    ok((utf8.len(line) or #line) <= 80, ("line %d fits 80 columns: %s"):format(n, line))
  end
  -- pandoc's smart typography would make "--model" an en dash and "model": never in this page
  eq(text:find("\u{2013}%a") or text:find("\u{2014}%a"), nil, "no dash glued to a word")
end)

test("man_page_options_are_exactly_each_helps", function()
  local text = render(MAN, 1000) -- one paragraph a line: no option broken at its hyphen
  local opts, order = subsections(sections(text).OPTIONS or "")
  eq(table.concat(order, ", "), "nimrank, nimrank rerank, nimrank serve",
    "OPTIONS has a subsection per command")
  for _, c in ipairs({ { "nimrank", "" }, { "nimrank rerank", "rerank " },
    { "nimrank serve", "serve " } }) do
    local help, code = sh(q(BIN) .. " " .. c[2] .. "--help")
    eq(code, 0, c[1] .. " --help")
    local want, have = options_in(help), options_in(opts[c[1]])
    local m = missing(want, have)
    eq(table.concat(m, " "), "", c[1] .. ": options --help prints that the man page lacks")
    m = missing(have, want)
    eq(table.concat(m, " "), "", c[1] .. ": options the man page names that --help does not")
  end
  -- the synopsis names no option that no --help knows
  local all = {}
  for _, c in ipairs({ "", "rerank ", "serve " }) do
    for o in pairs(options_in(sh(q(BIN) .. " " .. c .. "--help"))) do all[o] = true end
  end
  local m = missing(options_in(sections(text).SYNOPSIS or ""), all)
  eq(table.concat(m, " "), "", "SYNOPSIS options no --help prints")
end)

-- The variables the code reads: getenv("X") and env_get(..., "X") in src/, os.getenv("X") in
-- lua/, and the providers' key_env and base_env lists.
local function variables_read()
  local vars = {}
  for file in sh("ls src/*.c lua/nim/*.lua lua/nim/*/*.lua"):gmatch("[^\n]+") do
    local s = read(file) or ""
    for v in s:gmatch("getenv%(%s*\"([%w_]+)\"%s*%)") do vars[v] = file end
    for v in s:gmatch("env_get%([^,]*,[^,]*,%s*\"([%w_]+)\"%)") do vars[v] = file end
    for list in s:gmatch("[%w_]+_env%s*=%s*(%b{})") do
      for v in list:gmatch("\"([%w_]+)\"") do vars[v] = file end
    end
  end
  return vars
end

test("man_page_names_every_environment_variable_the_code_reads", function()
  local vars = variables_read()
  ok(vars.NIMRANK_CONFIG and vars.COHERE_API_KEY and vars.REDIS_URL and vars.NIMRANK_MODEL,
    "the scan finds variables of src/, of lua/ and of the descriptors")
  for v in sh(q(BIN) .. " --help"):gmatch("\n  ([A-Z][A-Z0-9_]+) ") do
    vars[v] = vars[v] or "--help"
  end
  local env = sections(render(MAN, 1000)).ENVIRONMENT or ""
  local named = {}
  for v in env:gmatch("[%w_]+") do named[v] = true end
  local m = {}
  for _, v in ipairs(sorted_keys(vars)) do
    if not named[v] then m[#m + 1] = v .. " (" .. vars[v] .. ")" end
  end
  eq(table.concat(m, ", "), "", "variables read but not in ENVIRONMENT")
  -- and every variable the section lists as an entry is one the code reads
  local stale = {}
  for line in env:gmatch("[^\n]+") do
    local names = line:match("^       ([%u%d_][%u%d_, ]*)$")
    for v in (names or ""):gmatch("[%u%d_]+") do
      if not vars[v] then stale[#stale + 1] = v end
    end
  end
  eq(table.concat(stale, ", "), "", "ENVIRONMENT entries no code reads")
end)

-- ---- the benchmark plots --------------------------------------------------------------------

-- `make bench-plots` (bench/plots.sh) reads each bench's real output format: run quick, every
-- client-side plot is drawn, and no server of the benches is left running; then --saved draws
-- the same from those outputs without running anything.
test("bench_plots_draws_each_plot_from_the_benches_output_and_leaves_no_server", function()
  local dir = sh("mktemp -d"):gsub("%s+$", "")
  local pids = dir .. "/pids"
  write(pids, "")
  local function plots(img, mode)
    return sh(("BENCH_PIDS=%s BENCH_OUT=%s IMG=%s NO_GATEWAY=1 BUILD=%s sh bench/plots.sh %s "
      .. "2>&1"):format(q(pids), q(dir .. "/out"), q(dir .. "/" .. img), q(BUILD_REL), mode))
  end
  local out, code = plots("quick", "--quick")
  local out2, code2 = plots("saved", "--saved")
  local pngs = {}
  for _, img in ipairs({ "quick", "saved" }) do
    for _, name in ipairs({ "overhead", "fanout", "providers", "bm25", "gateway" }) do
      pngs[img .. "/" .. name] = read(dir .. "/" .. img .. "/" .. name .. ".png")
    end
  end
  local running = 0
  for pid in io.lines(pids) do
    if h.alive(tonumber(pid)) then running = running + 1 end
  end
  sh("rm -rf " .. q(dir))
  eq(code, 0, "plots.sh --quick: " .. tail(out, 2000))
  eq(code2, 0, "plots.sh --saved: " .. tail(out2, 2000))
  eq(out2:find("\n== ", 1, true), nil, "--saved runs no bench")
  for _, img in ipairs({ "quick", "saved" }) do
    for _, name in ipairs({ "overhead", "fanout", "providers", "bm25" }) do
      local png = pngs[img .. "/" .. name]
      ok(png and png:sub(1, 8) == "\137PNG\r\n\26\n" and #png > 5000,
        img .. ": " .. name .. ".png drawn")
    end
    eq(pngs[img .. "/gateway"], nil, img .. ": no gateway plot without its data")
  end
  match(out, "no data for gateway", "the missing gateway data is said")
  eq(running, 0, "servers of the benches still running")
end)

test("make_install_installs_the_man_page_and_uninstall_removes_it", function()
  if (os.getenv("NIMRANK_SANITIZE") or "") ~= "" then
    spec.skip("the plain suite installs: a sanitized tree is not what gets installed")
  end
  local dest = sh("mktemp -d"):gsub("%s+$", "")
  local page = dest .. "/usr/local/share/man/man1/nimrank.1"
  local out, code = sh(("make -s --no-print-directory install DESTDIR=%s BUILD=%s 2>&1")
    :format(q(dest), q(BUILD_REL)))
  local ok_install = code == 0 and read(page) ~= nil
  local text, warnings = "", ""
  if ok_install then text, warnings = render(page, 80) end
  local out2, code2 = sh(("make -s --no-print-directory uninstall DESTDIR=%s BUILD=%s 2>&1")
    :format(q(dest), q(BUILD_REL)))
  local left = read(page)
  sh("rm -rf " .. q(dest))
  eq(code, 0, "make install: " .. out)
  ok(ok_install, "installed to PREFIX/share/man/man1/nimrank.1")
  eq(read(MAN) ~= nil, true, "the built page is there")
  eq(warnings, "", "the installed page renders without warnings")
  match(text, "\nSYNOPSIS\n", "the installed page renders")
  eq(code2, 0, "make uninstall: " .. out2)
  eq(left, nil, "make uninstall removed it")
end)
