-- The host program: scripts, -e, help, and `nimrank rerank` with its exit codes.
local spec = require "spec"
local h = require "helpers"
local test, eq, ok, match = spec.test, spec.eq, spec.ok, spec.match
local q, sh = h.q, h.sh
local BIN = h.nimrank

local function tmpfile(content)
  local name = os.tmpname()
  local f = assert(io.open(name, "wb"))
  f:write(content)
  f:close()
  return name
end

-- nimrank rerank against the keyed fake, key from the environment.
local function rerank_cmd(args)
  return ("NVIDIA_NIM_API_KEY=%s %s rerank --api-base %s %s"):format(q(h.key), BIN, q(h.url), args)
end

test("no_arguments_prints_usage_and_exits_2", function()
  local out, code = sh(BIN .. " 2>&1")
  eq(code, 2, "exit code")
  match(out, "usage: nimrank", "usage")
end)

test("help_and_version", function()
  local out, code = sh(BIN .. " --help")
  eq(code, 0, "exit")
  match(out, "rerank", "mentions rerank")
  out = sh(BIN .. " --version")
  match(out, "^nimrank %d+%.%d+%.%d+", "version")
  out, code = sh(BIN .. " rerank --help")
  eq(code, 0, "rerank --help exit")
  match(out, "%-%-top%-n", "rerank options")
  out = sh(BIN .. " rerank --version")
  match(out, "^nimrank %d", "rerank --version")
end)

test("e_runs_code_with_nim_preloaded", function()
  local out, code = sh(BIN .. " -e 'print(nim.version, require(\"nim\") == nim)'")
  eq(code, 0, "exit")
  match(out, "^%d+%.%d+%.%d+\ttrue", "nim global is the module")
end)

-- What start-up compiles: the layer, not the modules a first use brings (the config parser,
-- the scheduler, batching, the cache); architecture.md gives the cost of each.
test("start_up_leaves_the_config_parser_scheduler_batching_and_cache_unloaded", function()
  local out = sh(BIN .. [[ -e 'for _, m in ipairs({"nim.config", "nim.async", "nim.batch",
    "nim.cache"}) do io.write(m, "=", tostring(package.loaded[m] ~= nil), " ") end']])
  eq(out, "nim.config=false nim.async=false nim.batch=false nim.cache=false ", "unloaded")
  out = sh(BIN .. [[ -e 'nim.rerank{model = "local/bm25", query = "q", documents = {"q"}}
    io.write(tostring(package.loaded["nim.config"] ~= nil))']])
  eq(out, "false", "a call without a config does not load the parser")
end)

test("script_gets_arg_table", function()
  local script = tmpfile("print(arg[0], arg[1], arg[2], select('#', ...))")
  local out, code = sh(BIN .. " " .. script .. " one two")
  os.remove(script)
  eq(code, 0, "exit")
  eq(out, script .. "\tone\ttwo\t2\n", "arg table and varargs")
end)

test("script_error_gives_traceback_and_exit_1", function()
  local script = tmpfile("local function f() error('boom') end\nf()\n")
  local out, code = sh(BIN .. " " .. script .. " 2>&1")
  os.remove(script)
  eq(code, 1, "exit")
  match(out, "boom", "message")
  match(out, "stack traceback", "traceback")
end)

test("unknown_option_is_usage_error", function()
  local _, code = sh(BIN .. " --bogus 2>/dev/null")
  eq(code, 2, "exit")
end)

test("rerank_arguments_print_json", function()
  local out, code = sh(rerank_cmd(("-m %s -q %s -n 2 %s %s %s"):format(h.RETRIEVAL, q(h.QUERY),
    q(h.DOCS[1]), q(h.DOCS[2]), q(h.DOCS[3]))))
  eq(code, 0, "exit")
  local res = h.decode(out)
  eq(#res.results, 2, "top 2")
  eq(res.results[1].index, 2, "H100 first")
end)

test("rerank_docs_file_lines_and_json_lines", function()
  local f = tmpfile(h.DOCS[1] .. "\n\n" .. '{"text": ' .. ("%q"):format(h.DOCS[3]) .. "}\r\n"
    .. h.DOCS[2] .. "\n")
  local out, code = sh(rerank_cmd(("-m %s -q %s --docs %s"):format(h.RANKING, q(h.QUERY), f)))
  os.remove(f)
  eq(code, 0, "exit")
  local res = h.decode(out)
  eq(#res.results, 3, "blank line skipped")
  eq(res.results[1].index, 1, "JSON line is document 2")
  eq(res.results[1].document.text, h.DOCS[3], "text from JSON")
end)

test("rerank_docs_from_stdin", function()
  local out, code = sh(("printf 'cats\\ngpu memory bandwidth\\n' | %s"):format(
    rerank_cmd(("-m %s -q 'gpu bandwidth' --docs - --no-documents"):format(h.RETRIEVAL))))
  eq(code, 0, "exit")
  local res = h.decode(out)
  eq(res.results[1].index, 1, "best")
  eq(res.results[1].document, nil, "--no-documents")
end)

test("rerank_bad_json_line_is_usage_error", function()
  local f = tmpfile('{"text": oops}\n')
  local out, code = sh(rerank_cmd(("-m %s -q q --docs %s 2>&1"):format(h.RETRIEVAL, f)))
  os.remove(f)
  eq(code, 2, "exit")
  match(out, ":1: not a JSON object", "names the line")
end)

test("rerank_usage_errors_exit_2", function()
  local cases = {
    { "-m x 'doc'", "--query is required" },
    { "-m x -q q", "no documents" },
    { "-m x -q q -n zero d", "--top-n" },
    { "-m x -q q --truncate MIDDLE d", "truncate" },
    { "-m x -q q --frobnicate d", "unknown option --frobnicate" },
    { "-m x -q q --docs /nonexistent/file", "--docs" },
  }
  for _, c in ipairs(cases) do
    local out, code = sh(rerank_cmd(c[1] .. " 2>&1"))
    eq(code, 2, "exit for " .. c[1])
    match(out, c[2]:gsub("%-", "%%-"), "message for " .. c[1])
  end
end)

test("rerank_provider_error_exits_1_without_key_in_output", function()
  local out,
    code = sh(("NVIDIA_NIM_API_KEY=wrong-secret-123 %s rerank --api-base %s -m %s -q q d 2>&1")
    :format(BIN, q(h.url), h.RETRIEVAL))
  eq(code, 1, "exit")
  match(out, "auth", "error type")
  spec.no_match(out, "wrong-secret-123", "key never printed")
end)

test("rerank_key_from_environment", function()
  local out, code = sh(rerank_cmd(("-m %s -q q d"):format(h.RETRIEVAL)))
  eq(code, 0, "env key used: " .. out)
end)

test("rerank_inline_option_values", function()
  local out, code = sh(rerank_cmd(("--model=%s --query=gpu --top-n=1 a gpu"):format(h.RETRIEVAL)))
  eq(code, 0, "exit")
  eq(#h.decode(out).results, 1, "--top-n=1")
end)

test("rerank_extra_header", function()
  local _, code = sh(rerank_cmd(("-m %s -q q -H 'X-Trace: t-1' d"):format(h.RETRIEVAL)))
  eq(code, 0, "exit")
  eq(h.last().headers["x-trace"], "t-1", "header sent")
end)

test("env_base_url_used_by_cli", function()
  local out,
    code = sh(("NVIDIA_NIM_API_KEY=%s NVIDIA_NIM_RERANK_API_BASE=%s %s rerank -m %s -q q d")
    :format(q(h.key), q(h.url), BIN, h.RETRIEVAL))
  eq(code, 0, "exit: " .. out)
  out, code = sh(("NVIDIA_NIM_API_KEY=%s NVIDIA_NIM_API_BASE=%s %s rerank -m %s -q q d")
    :format(q(h.key), q(h.url .. "/v1"), BIN, h.RETRIEVAL))
  eq(code, 0, "NVIDIA_NIM_API_BASE with /v1: " .. out)
end)

test("libcurl_is_loaded_only_by_the_first_network_call", function()
  local code = [[
    local function curl_mapped()
      for line in io.lines("/proc/self/maps") do
        if line:find("libcurl", 1, true) then return true end
      end
      return false
    end
    io.write(tostring(curl_mapped()), " ")
    nim.rerank{ model = "m", query = "q", documents = { "d" }, api_base = "http://127.0.0.1:1" }
    io.write(tostring(curl_mapped()))
  ]]
  local out = sh(BIN .. " -e " .. q(code))
  eq(out, "false true", "libcurl mapped before / after the first call")
end)

test("rerank_without_model_or_key_uses_local_bm25_and_says_so_once", function()
  local f = tmpfile(table.concat(h.DOCS, "\n"))
  local out, code = sh(("%s rerank -q %s --docs %s 2>%s.err"):format(BIN, q(h.QUERY), f, f))
  local errf = io.open(f .. ".err"):read("a")
  os.remove(f); os.remove(f .. ".err")
  eq(code, 0, "exit")
  eq(h.decode(out).results[1].index, 2, "H100 first")
  eq(h.decode(out).meta.model, "local/bm25", "embedded default")
  local _, count = errf:gsub("local/bm25", "")
  eq(count, 1, "said once on stderr")
end)

test("rerank_with_key_and_no_model_uses_nim_default", function()
  local out = sh(("NVIDIA_NIM_API_KEY=%s %s rerank --api-base %s -q q d"):format(q(h.key), BIN,
    q(h.url)))
  eq(h.decode(out).meta.model, "nvidia/llama-nemotron-rerank-1b-v2", "NIM default model")
end)

test("offline_rerank_never_loads_libcurl", function()
  local code = [[
    nim.rerank{ model = "local/bm25", query = "q", documents = { "d" } }
    for line in io.lines("/proc/self/maps") do
      if line:find("libcurl", 1, true) then io.write("loaded") return end
    end
    io.write("not loaded")
  ]]
  eq(sh(BIN .. " -e " .. q(code)), "not loaded", "libcurl")
end)

test("rerank_progress_bar_and_batching_options", function()
  local f = os.tmpname()
  local fh = io.open(f, "wb")
  for i = 1, 1200 do fh:write(("document %d about gpu memory\n"):format(i)) end
  fh:close()
  local out, code = sh(("%s rerank --api-base %s -m %s -q gpu --docs %s -n 3 --batch-size 100 "
    .. "--concurrency 3 --progress 2>%s.err"):format(BIN, q(h.open_url), h.RANKING, f, f))
  local err = io.open(f .. ".err"):read("a")
  os.remove(f); os.remove(f .. ".err")
  eq(code, 0, "exit: " .. out)
  eq(h.decode(out).meta.batches, 12, "--batch-size 100 over 1200 documents")
  spec.match(err, "%] 100%% 1200/1200 documents\n$", "the bar reached 100% and ended its line")
  local _, c2 = sh(BIN .. " rerank -q q --concurrency 0 d 2>/dev/null")
  eq(c2, 2, "bad --concurrency is a usage error")
end)

test("config_option_works_anywhere_on_a_command_line", function()
  local path = tmpfile("model_list:\n  - model_name: offline-group\n    litellm_params:\n"
    .. "      model: local/bm25\n")
  for _, line in ipairs({
    "rerank -m offline-group --config %s -q gpu 'gpu x' cats",
    "rerank -q gpu --config=%s -m offline-group 'gpu x' cats",
    "rerank -m offline-group -q gpu 'gpu x' cats --config %s",
    "--config %s rerank -m offline-group -q gpu 'gpu x' cats",
  }) do
    local out, code = sh(BIN .. " " .. line:format(q(path)) .. " --json 2>&1")
    eq(code, 0, line .. ": " .. out)
    eq(h.decode(out).meta.model_group, "offline-group", line)
  end
  local out = sh(BIN .. " rerank -m local/bm25 -q gpu --json -- --config gpu 2>&1")
  eq(#h.decode(out).results, 2, "after -- it is a document")
  os.remove(path)
end)

test("misuse_in_the_cli_is_a_usage_error_without_a_library_path", function()
  for _, c in ipairs({
    { "--truncate MIDDLE", "^nimrank rerank: truncate: must be" },
    { "-H 'Content-Length: 0'", "^nimrank rerank: headers%['Content%-Length'%]: frames" },
    { "--api-base localhost:1", "^nimrank rerank: api_base: must start with http" },
  }) do
    local out, code = sh(BIN .. " rerank -m " .. h.RETRIEVAL .. " -q q " .. c[1] .. " d 2>&1")
    eq(code, 2, c[1] .. " is a usage error")
    match(out, c[2], c[1])
    spec.no_match(out, "lua/nim", "no library path")
    spec.no_match(out, "nim.rerank:", "said as the command's own")
  end
end)

test("fallback_is_said_on_stderr", function()
  local path = tmpfile(([[
model_list:
  - model_name: primary
    litellm_params: { model: %s, api_base: "http://127.0.0.1:1" }
  - model_name: offline
    litellm_params: { model: local/bm25 }
router_settings:
  num_retries: 0
  fallbacks: [ { primary: [offline] } ]
]]):format(h.RANKING))
  local out = sh(("%s --config %s rerank -m primary -q gpu --json 'gpu a' cats 2>%s.err")
    :format(BIN, q(path), path))
  local err = io.open(path .. ".err"):read("a")
  os.remove(path); os.remove(path .. ".err")
  eq(h.decode(out).meta.provider, "local", "answered offline")
  match(err, "^nimrank rerank: fell back from primary to offline %(connection: ", "one line")
  local _, lines = err:gsub("\n", "")
  eq(lines, 1, "exactly one line")
end)

test("terminal_output_is_a_table_piped_output_is_ordered_json", function()
  local out = sh(BIN .. " rerank -m local/bm25 -q gpu 'gpu memory' 'cats and dogs' 2>/dev/null")
  match(out, '^{"id":"[^"]+","results":%[{"index":0,"relevance_score":[^,]+,"document":',
    "piped: JSON, keys in a stable order")
  match(out, '%],"meta":{', "meta last")
  local tbl = sh(BIN .. " rerank -m local/bm25 -q gpu --table 'gpu memory\nsecond line' cats")
  match(tbl, "^rank +index +score +document\n", "header")
  match(tbl, "\n   1      0 +[%d.]+  gpu memory\n", "first line of the best document")
  spec.no_match(tbl, "second line", "only the first line")
  -- a real terminal (script(1) gives the command a pty), 40 columns wide
  local tty = sh("COLUMNS=40 script -qec " .. q(BIN .. " rerank -m local/bm25 -q gpu 'gpu "
    .. ("memory "):rep(20) .. "' cats") .. " /dev/null")
  match(tty, "rank +index +score +document", "a table on a terminal")
  for line in tty:gmatch("[^\r\n]+") do ok(#line <= 40, "cut to the width: " .. line) end
  local js = sh("script -qec " .. q(BIN .. " rerank -m local/bm25 -q gpu --json gpu cats")
    .. " /dev/null")
  match(js, '^{"id"', "--json on a terminal")
end)

test("nimrank_init_runs_in_the_host_program", function()
  local init = tmpfile("local nim = ...\nnim.init_saw = nim.version\n")
  local out = sh(("NIMRANK_INIT=%s %s -e 'io.write(nim.init_saw)'"):format(q(init), BIN))
  os.remove(init)
  match(out, "^%d+%.%d+%.%d+$", "the init file got nim as its argument")
end)

test("missing_lua_layer_is_one_clear_line", function()
  local out, code = sh(("NIMRANK_LUA_PATH=/nonexistent %s rerank -q q d 2>&1"):format(BIN))
  eq(code, 1, "fails")
  match(out, "^nimrank: nim: the Lua layer %(nim/layer%.lua%) was not found %(looked in "
    .. "/nonexistent", "says where it looked")
  local _, lines = out:gsub("\n", "")
  eq(lines, 1, "one line")
  out = sh(("NIMRANK_LUA_PATH=/nonexistent %s -e " .. q("print(nim.native.rerank{model = "
    .. "'local/bm25', query = 'q', documents = {'q'}}.results[1].index)")):format(BIN))
  eq(out, "0\n", "the native binding still works")
end)

test("unreadable_documents_are_usage_errors_and_unwritable_output_is_a_failure", function()
  for _, c in ipairs({
    { "--docs /tmp", "cannot read" }, { "--docs - <&-", "cannot read" },
    { "--docs - </tmp", "cannot read" }, { "--docs /nonexistent", "No such file" },
  }) do
    local out, code = sh(BIN .. " rerank -m local/bm25 -q q " .. c[1] .. " 2>&1")
    eq(code, 2, c[1] .. " is a usage error: " .. out)
    match(out, "^nimrank rerank: %-%-docs", c[1])
    match(out, c[2], c[1])
    spec.no_match(out, "traceback", c[1] .. ": no traceback")
  end
  for _, redirect in ipairs({ ">/dev/full", ">&-" }) do
    local out, code = sh(BIN .. " rerank -m local/bm25 -q q --json a b 2>&1 " .. redirect)
    eq(code, 1, redirect .. ": a failure, not success")
    match(out, "cannot write the output", redirect)
  end
end)

test("invalid_utf8_in_documents_is_replaced_so_the_output_is_valid_json", function()
  local f = tmpfile("gpu \255\254 bytes\nfine gpu text\n{\"text\": \"gpu \\u00e9\"}\n")
  local out, code = sh(BIN .. " rerank -m local/bm25 -q gpu --json --docs " .. q(f))
  os.remove(f)
  eq(code, 0, "exit")
  ok(utf8.len(out), "the output is valid UTF-8")
  match(out, "gpu \u{FFFD}\u{FFFD} bytes", "each invalid byte became U+FFFD")
  ok(h.decode(out), "and valid JSON")
end)

test("a_flag_given_a_value_is_a_usage_error", function()
  local out, code = sh(BIN .. " rerank -m local/bm25 -q q --json=no d 2>&1")
  eq(code, 2, "usage error")
  match(out, "%-%-json: takes no value", "says so")
end)

test("every_string_of_a_json_lines_document_is_made_valid_utf8_keys_too", function()
  local f = tmpfile('{"title": "\255\254 bad", "body": "gpu"}\n{"\255key": ["x\254", {"y": '
    .. '"\255"}]}\n{"text": "ok gpu doc"}\n')
  local out, code = sh(BIN .. " rerank -m local/bm25 -q 'bad gpu' --json --docs " .. q(f))
  os.remove(f)
  eq(code, 0, "exit")
  ok(utf8.len(out), "the output is valid UTF-8")
  local res = h.decode(out)
  eq(#res.results, 3, "three documents")
  local texts = {}
  for _, r in ipairs(res.results) do texts[r.index] = r.document.text end
  match(texts[0], '"\u{FFFD}\u{FFFD} bad"', "a value without text is cleaned")
  match(texts[1], '"\u{FFFD}key"', "a key is cleaned")
  match(texts[1], '"x\u{FFFD}"', "a nested value is cleaned")
end)

test("help_and_version_into_a_full_disk_are_failures", function()
  for _, flag in ipairs({ "--help", "--version" }) do
    local out, code = sh(BIN .. " rerank " .. flag .. " 2>&1 >/dev/full")
    eq(code, 1, "rerank " .. flag .. " > /dev/full fails")
    match(out, "cannot write the output", flag)
    local _, ok_code = sh(BIN .. " rerank " .. flag .. " >/dev/null")
    eq(ok_code, 0, flag .. " exits 0 when written")
  end
  -- the host's own --help, --version and print() in a script: the same rule
  for _, a in ipairs({ "--help", "--version", "-e 'print(1)'" }) do
    local out, code = sh(BIN .. " " .. a .. " 2>&1 >/dev/full")
    eq(code, 1, a .. " > /dev/full fails")
    match(out, "cannot write standard output", a)
  end
end)
