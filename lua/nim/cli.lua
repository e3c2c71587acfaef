-- nim.cli: the subcommands of the nimrank host program. main(command, args) -> exit code.
-- Exit codes: 0 success, 1 provider/runtime failure, 2 usage error.
local nim = require "nim"
local json = require "nim.json"

local M = {}

local EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
M.DEFAULT_NIM_MODEL = "nvidia_nim/nvidia/llama-nemotron-rerank-1b-v2"
M.OFFLINE_MODEL = "local/bm25"

local RERANK_HELP = [[
usage: nimrank rerank [--model M] --query Q [options] [DOC...]

Reranks documents against a query. On a terminal it prints a ranked table; piped, or with
--json, it prints the response JSON (keys in a stable order: id, results, meta).

Documents come from the arguments, or with --docs from a file ('-' for stdin): one document
per line, or JSON lines ({"text": ...}). Blank lines are skipped.

Options:
      --config FILE     LiteLLM-style config.yaml: then --model may name a model_name group
  -m, --model M         model, e.g. nvidia_nim/nvidia/llama-nemotron-rerank-1b-v2,
                        nvidia_nim/ranking/<model>, or another provider's (cohere/...,
                        jina_ai/, voyage/, together_ai/, azure_ai/, infinity/,
                        hosted_vllm/, huggingface/). Default: $NIMRANK_MODEL, else
                        ]] .. M.DEFAULT_NIM_MODEL .. [[ when NVIDIA_NIM_API_KEY
                        is set, else the embedded offline reranker local/bm25
  -q, --query Q         the query (required)
  -n, --top-n N         return the N best results
      --truncate MODE   END or NONE
      --api-base URL    base URL or full endpoint URL of the provider's service
      --docs FILE       read documents from FILE ('-' = stdin)
      --no-documents    leave the document text out of the results
      --json            JSON even on a terminal
      --pretty          indented JSON
      --table           the ranked table even when piped
      --batch-size N    documents per request when a job is split (default: the model's limit)
      --concurrency N   requests in flight at once for a split job (default 4)
      --progress        a progress bar on stderr (default: when stderr is a terminal and
                        the job needs more than one request); --no-progress turns it off
      --timeout SECONDS total time allowed for the request (default 60)
  -H, --header 'K: V'   extra HTTP header (repeatable)
  -h, --help            show this help
  -v, --version         print the version

The API key is read from NVIDIA_NIM_API_KEY, or the provider's own variable (COHERE_API_KEY,
...: man nimrank, ENVIRONMENT; docs/providers.md), never from the command line, where other
users could see it. Exit status: 0 success, 1 provider or network failure, 2 usage error.
]]

-- A one-line progress bar on stderr; finish() clears it (on a terminal) or ends the line.
local function progress_bar(tty)
  local last = -1
  local bar = {}
  function bar.update(done, total)
    local pct = total > 0 and math.floor(done * 100 / total) or 100
    if pct == last then return end
    last = pct
    local width = 30
    local filled = math.floor(width * pct / 100)
    io.stderr:write(("\r[%s%s] %3d%% %d/%d documents"):format(("#"):rep(filled),
      ("."):rep(width - filled), pct, done, total))
    io.stderr:flush()
  end
  function bar.finish()
    if last < 0 then return end
    io.stderr:write(tty and "\r\27[K" or "\n")
  end
  return bar
end

local function usage_error(cmd, msg)
  io.stderr:write(("nimrank %s: %s\n(see 'nimrank %s --help')\n"):format(cmd, msg, cmd))
  return EXIT_USAGE
end

-- Text with every byte that is not part of valid UTF-8 replaced by U+FFFD, so the JSON
-- nimrank prints (and sends) is valid whatever a file holds.
local REPLACEMENT = "\u{FFFD}"
local function valid_utf8(s)
  if utf8.len(s) then return s end
  local out, i = {}, 1
  while i <= #s do
    local ok_len, bad = utf8.len(s, i)
    if ok_len then
      out[#out + 1] = s:sub(i)
      break
    end
    out[#out + 1] = s:sub(i, bad - 1) .. REPLACEMENT
    i = bad + 1
  end
  return table.concat(out)
end
M.valid_utf8 = valid_utf8

-- A decoded JSON-lines document with every string in it, keys included, made valid UTF-8
-- (cjson decodes \u escapes to valid UTF-8, but passes raw bytes through as they are).
local function clean_strings(v)
  if type(v) == "string" then return valid_utf8(v) end
  if type(v) ~= "table" then return v end
  local renamed
  for k, x in pairs(v) do
    if type(x) == "string" or type(x) == "table" then v[k] = clean_strings(x) end
    if type(k) == "string" and not utf8.len(k) then
      renamed = renamed or {}
      renamed[#renamed + 1] = k
    end
  end
  for _, k in ipairs(renamed or {}) do
    local x = v[k]
    v[k] = nil
    v[valid_utf8(k)] = x
  end
  return v
end

-- Parses the documents of a text: one per line; a line starting with '{' is a JSON object
-- ({"text": ...}). Blank lines are skipped. Returns nil, message on a bad JSON line.
function M.parse_docs(text, name, docs)
  local n = 0
  for line in text:gmatch("([^\n]*)\n?") do
    n = n + 1
    line = line:gsub("\r$", "")
    if line:match("^%s*{") then
      local ok, v = pcall(json.decode, line)
      if not ok or type(v) ~= "table" then
        return nil, ("--docs %s:%d: not a JSON object"):format(name, n)
      end
      docs[#docs + 1] = clean_strings(v)
    elseif line:match("%S") then
      docs[#docs + 1] = valid_utf8(line)
    end
  end
  return docs
end

-- Reads the documents of a file ('-': stdin). Every failure to read (a directory, a closed
-- stdin) is the caller's usage error, never a traceback.
local function read_docs(path, docs)
  local f, err
  if path == "-" then f = io.stdin else f, err = io.open(path, "rb") end
  if not f then return nil, ("--docs: %s"):format(err) end
  local text, rerr = f:read("a")
  if f ~= io.stdin then f:close() end
  if not text then
    return nil, ("--docs %s: cannot read: %s"):format(path == "-" and "stdin" or path,
      rerr or "unknown error")
  end
  return M.parse_docs(text, path, docs)
end

-- Options that take no value: --json=no is a mistake, not a document.
local FLAGS = { ["--help"] = true, ["--version"] = true, ["--no-documents"] = true,
  ["--pretty"] = true, ["--json"] = true, ["--table"] = true, ["--progress"] = true,
  ["--no-progress"] = true }

local function parse_rerank_args(args)
  local o = { docs = {}, headers = nil }
  local i = 1
  local function value(name)
    i = i + 1
    if args[i] == nil then error({ usage = name .. ": needs a value" }) end
    return args[i]
  end
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^(%-%-[%w%-]+)=(.*)$")
    if name then
      if FLAGS[name] then error({ usage = name .. ": takes no value" }) end
      a = name
      table.insert(args, i + 1, inline)
    end
    if a == "-h" or a == "--help" then o.help = true
    elseif a == "-v" or a == "--version" then o.version = true
    elseif a == "-m" or a == "--model" then o.model = value(a)
    elseif a == "-q" or a == "--query" then o.query = value(a)
    elseif a == "-n" or a == "--top-n" then
      local v = value(a)
      o.top_n = math.tointeger(tonumber(v))
      if not o.top_n or o.top_n < 1 then
        error({ usage = "--top-n: expected an integer >= 1, got " .. v })
      end
    elseif a == "--truncate" then o.truncate = value(a)
    elseif a == "--api-base" then o.api_base = value(a)
    elseif a == "--docs" then o.docs_file = value(a)
    elseif a == "--no-documents" then o.return_documents = false
    elseif a == "--pretty" then o.pretty, o.format = true, "json"
    elseif a == "--json" then o.format = "json"
    elseif a == "--table" then o.format = "table"
    elseif a == "--progress" then o.progress = true
    elseif a == "--no-progress" then o.progress = false
    elseif a == "--batch-size" or a == "--concurrency" then
      local v = value(a)
      local n = math.tointeger(tonumber(v))
      if not n or n < 1 then error({ usage = a .. ": expected an integer >= 1, got " .. v }) end
      o[a == "--batch-size" and "batch_size" or "concurrency"] = n
    elseif a == "--timeout" then
      local v = value(a)
      o.timeout = tonumber(v)
      if not o.timeout or o.timeout <= 0 then
        error({ usage = "--timeout: expected seconds > 0, got " .. v })
      end
    elseif a == "-H" or a == "--header" then
      local v = value(a)
      local k, hv = v:match("^([^:]+):%s*(.*)$")
      if not k then error({ usage = a .. ": expected 'Name: value'" }) end
      o.headers = o.headers or {}
      o.headers[k] = hv
    elseif a == "--" then
      for j = i + 1, #args do o.docs[#o.docs + 1] = args[j] end
      break
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      error({ usage = "unknown option " .. a })
    else
      o.docs[#o.docs + 1] = a
    end
    i = i + 1
  end
  return o
end

-- The model when none is given: an explicit default, else NIM with a key, else offline.
function M.default_model()
  local env = os.getenv("NIMRANK_MODEL")
  if env and env ~= "" then return env, nil end
  local key = os.getenv("NVIDIA_NIM_API_KEY")
  if key and key ~= "" then return M.DEFAULT_NIM_MODEL, nil end
  return M.OFFLINE_MODEL,
    "no --model and no NVIDIA_NIM_API_KEY: using the embedded offline reranker local/bm25"
end

-- The ranked table for people: rank, index, score and the document's first line, cut to
-- the terminal's width.
local function table_text(res)
  local width = nim.terminal_width(1) or tonumber(os.getenv("COLUMNS") or "") or 80
  local rows = { ("%4s %6s %10s  %s"):format("rank", "index", "score", "document") }
  for i, r in ipairs(res.results) do
    local text = r.document and r.document.text or ""
    text = (text:match("^[^\r\n]*")):gsub("%s+", " ")
    rows[#rows + 1] = ("%4d %6d %10.4f  %s"):format(i, r.index, r.relevance_score, text)
  end
  local out = {}
  for _, row in ipairs(rows) do
    if #row > width then -- cut at a character boundary: never half a UTF-8 sequence
      local cut = width
      while cut > 0 and (row:byte(cut + 1) or 0) & 0xC0 == 0x80 do cut = cut - 1 end
      row = row:sub(1, cut)
    end
    out[#out + 1] = row
  end
  local meta = res.meta or {}
  out[#out + 1] = ("%d of %s, %s%s"):format(#res.results, meta.model or "?",
    meta.provider or "?", meta.latency_ms and (", %.1f ms"):format(meta.latency_ms) or "")
  return table.concat(out, "\n") .. "\n"
end

-- Writes to stdout and flushes: EXIT_OK, or EXIT_FAILURE (said on stderr) when the output
-- cannot be written (a full disk, a closed stdout) -- never a silent success.
local function write_out(...)
  local written, werr = io.stdout:write(...)
  if written then written, werr = io.stdout:flush() end
  if not written then
    io.stderr:write("nimrank rerank: cannot write the output: ", tostring(werr), "\n")
    return EXIT_FAILURE
  end
  return EXIT_OK
end

-- One line on stderr when the answer came from a fallback: a user must never mistake a
-- BM25 answer for a NIM one.
local function report_fallback(model, res)
  local meta = res.meta or {}
  if not meta.fallback then return end
  local why
  for _, a in ipairs(meta.attempts or {}) do
    if a.error and (a.model_group or a.model) ~= meta.fallback then
      why = ("%s: %s"):format(a.error, (a.message or ""):sub(1, 200))
    end
  end
  io.stderr:write(("nimrank rerank: fell back from %s to %s%s\n"):format(model, meta.fallback,
    why and (" (" .. why .. ")") or ""))
end

-- Documents one request takes for a model or group name (nil: no limit), for the progress
-- bar's "will this be split?".
local function request_limit(model)
  local g = nim.router and nim.router:group(model)
  local m = g and g.deployments[1].params.model or model
  if type(m) ~= "string" then return nil end
  local ok, limit = pcall(nim.native.max_passages, m)
  return ok and limit or nil
end

function M.rerank(args)
  local ok, o = pcall(parse_rerank_args, args)
  if not ok then
    if type(o) == "table" and o.usage then return usage_error("rerank", o.usage) end
    error(o, 0)
  end
  if o.help then return write_out(RERANK_HELP) end
  if o.version then return write_out("nimrank ", nim.version, "\n") end
  if not o.query then return usage_error("rerank", "--query is required") end
  if o.docs_file then
    local _, err = read_docs(o.docs_file, o.docs)
    if err then return usage_error("rerank", err) end
  end
  if #o.docs == 0 then return usage_error("rerank",
    "no documents (give DOC arguments or --docs)") end
  local model = o.model
  if not model then
    local note
    model, note = M.default_model()
    if note then io.stderr:write("nimrank rerank: ", note, "\n") end
  end
  local tty = nim.isatty(2)
  local show = o.progress
  if show == nil then
    local limit = request_limit(model)
    show = tty and limit ~= nil and #o.docs > (o.batch_size or limit)
  end
  local bar = show and progress_bar(tty) or nil
  for i, d in ipairs(o.docs) do
    if type(d) == "string" then o.docs[i] = valid_utf8(d) end
  end
  local call = {
    model = model, query = valid_utf8(o.query), documents = o.docs, top_n = o.top_n,
    truncate = o.truncate, api_base = o.api_base, return_documents = o.return_documents,
    timeout = o.timeout, headers = o.headers, batch_size = o.batch_size,
    concurrency = o.concurrency, on_progress = bar and bar.update or nil,
  }
  local valid, bad = nim.check(call)
  if not valid then
    return usage_error("rerank", bad.field and ("%s: %s"):format(bad.field, bad.message)
      or bad.message)
  end
  local res, err = nim.rerank(call)
  if bar then bar.finish() end
  for _, w in ipairs(res and res.meta and res.meta.warnings or err and err.warnings or {}) do
    io.stderr:write("nimrank rerank: warning: ", w, "\n")
  end
  if not res then
    io.stderr:write("nimrank rerank: ", tostring(err), "\n")
    return EXIT_FAILURE
  end
  report_fallback(model, res)
  local format = o.format or (nim.isatty(1) and "table" or "json")
  if format == "table" then return write_out(table_text(res)) end
  return write_out(o.pretty and json.pretty(res) or json.ordered(res), "\n")
end

local COMMANDS = { rerank = M.rerank }

function M.main(command, args)
  local fn = COMMANDS[command]
  if not fn then return usage_error(command, "unknown command") end
  return fn(args)
end

return M
