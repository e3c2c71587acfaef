-- The fake server's other dialects (tests/fake/fakenim.lua): each provider's path, auth, body
-- rules, error shapes and answer shapes, spoken over HTTP with curl, with no nimrank client in
-- between, so that a provider descriptor tested against the fake meets what the real API
-- refuses as well as what it accepts.
local spec = require "spec"
local h = require "helpers"
local json = require "nim.json"
local test, eq, ok, match = spec.test, spec.eq, spec.ok, spec.match

local TMP = h.sh("mktemp -d"):gsub("%s+$", "")
local nreq = 0

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- post(base, path, body, o) -> { status, headers = {lowercase = value}, body, json, exit, time }
-- body: a string (sent as is) or a table (JSON-encoded). o.key: nil = the fake's key, false =
-- no Authorization, a string = that key; o.auth: a whole Authorization value; o.ctype: nil =
-- application/json, false = no Content-Type, a string = that type.
local function post(base, path, body, o)
  o = o or {}
  nreq = nreq + 1
  local stem = ("%s/r%d"):format(TMP, nreq)
  local f = assert(io.open(stem .. ".in", "wb"))
  f:write(type(body) == "table" and json.encode(body) or body)
  f:close()
  local parts = { "curl -s -X POST --max-time", tostring(o.timeout or 20), "-o",
    h.q(stem .. ".body"), "-D", h.q(stem .. ".hdr"), "-w '%{http_code} %{time_total}'",
    "--data-binary @" .. h.q(stem .. ".in") }
  local key = o.key
  if key == nil then key = h.key end
  if o.auth then
    parts[#parts + 1] = "-H " .. h.q("Authorization: " .. o.auth)
  elseif key then
    parts[#parts + 1] = "-H " .. h.q("Authorization: Bearer " .. key)
  end
  if o.ctype == false then
    parts[#parts + 1] = "-H 'Content-Type:'"
  else
    parts[#parts + 1] = "-H " .. h.q("Content-Type: " .. (o.ctype or "application/json"))
  end
  parts[#parts + 1] = h.q(base .. path)
  local out, code = h.sh(table.concat(parts, " ") .. " 2>/dev/null")
  local status, time = out:match("^(%d+) ([%d%.]+)")
  local r = { status = tonumber(status), time = tonumber(time), exit = code,
              body = read(stem .. ".body") or "", headers = {} }
  for line in (read(stem .. ".hdr") or ""):gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then r.headers[k:lower()] = v end
  end
  local okd, v = pcall(json.decode, r.body)
  r.json = okd and v or nil
  return r
end

local function get(base, path)
  return json.decode((h.sh("curl -s --max-time 10 " .. h.q(base .. path))))
end

local n = 0
local function uniq(directives)
  n = n + 1
  return ("%s u%d-%d %s"):format(directives, n, math.random(1, 1e9), h.QUERY)
end

-- Every dialect: its path, a valid body, where its results are and what its errors look like.
-- h.DOCS ranked for h.QUERY by the fake's scorer: 3 (H100, memory bandwidth per GPU), 1, 2.
local BEST = { 2, 0, 1 }

local function docs_body(over)
  return function(query, extra)
    local b = { model = "fake-rerank-model", query = query, documents = h.DOCS }
    for k, v in pairs(over or {}) do b[k] = v end
    for k, v in pairs(extra or {}) do b[k] = v end
    return b
  end
end

local function message_error(j) return type(j) == "table" and type(j.message) == "string" end
local function detail_error(j) return type(j) == "table" and j.detail ~= nil end
local function error_object(j)
  return type(j) == "table" and type(j.error) == "table" and type(j.error.message) == "string"
end
local function tei_error(j)
  return type(j) == "table" and type(j.error) == "string" and type(j.error_type) == "string"
end

local DIALECTS = {
  { name = "cohere_v2", path = "/cohere/v2/rerank", body = docs_body(), list = "results",
    top = "top_n", err = message_error,
    shape = function(j)
      ok(type(j.id) == "string", "id")
      eq(j.meta.billed_units.search_units, 1, "meta.billed_units.search_units")
      eq(j.meta.api_version.version, "2", "api_version")
    end },
  { name = "cohere_v1", path = "/cohere/v1/rerank", body = docs_body(), list = "results",
    top = "top_n", err = message_error,
    shape = function(j)
      ok(type(j.id) == "string", "id")
      eq(j.meta.billed_units.search_units, 1, "search_units")
      eq(j.meta.api_version.version, "1", "api_version")
    end },
  { name = "azure_v1", path = "/azure/v1/rerank", body = docs_body({ model = json.null }),
    list = "results", top = "top_n", err = message_error,
    shape = function(j) eq(j.meta.billed_units.search_units, 1, "search_units") end },
  { name = "azure_v2", path = "/azure/v2/rerank", body = docs_body(), list = "results",
    top = "top_n", err = message_error,
    shape = function(j) eq(j.meta.api_version.version, "2", "api_version") end },
  { name = "jina", path = "/jina/v1/rerank", body = docs_body(), list = "results",
    top = "top_n", err = detail_error,
    shape = function(j, docs)
      eq(j.id, nil, "no id, like Jina's API")
      eq(j.model, "fake-rerank-model", "model")
      ok(j.usage.total_tokens > 0, "usage.total_tokens")
      eq(j.results[1].document.text, docs[j.results[1].index + 1], "documents echoed by default")
    end },
  { name = "voyage", path = "/voyage/v1/rerank", body = docs_body(), list = "data",
    top = "top_k", err = detail_error,
    shape = function(j)
      eq(j.object, "list", "object")
      eq(j.model, "fake-rerank-model", "model")
      ok(j.usage.total_tokens > 0, "usage.total_tokens")
      eq(j.results, nil, "no results key")
      eq(j.data[1].document, nil, "no documents unless asked")
    end },
  { name = "together", path = "/together/v1/rerank", body = docs_body(), list = "results",
    top = "top_n", err = error_object,
    shape = function(j)
      ok(type(j.id) == "string", "id")
      eq(j.object, "rerank", "object")
      ok(j.usage.total_tokens > 0 and j.usage.prompt_tokens == j.usage.total_tokens, "usage")
    end },
  { name = "infinity", path = "/infinity/rerank", body = docs_body(), list = "results",
    top = "top_n", err = detail_error,
    shape = function(j)
      eq(j.object, "rerank", "object")
      ok(type(j.id) == "string", "id")
      ok(j.usage.total_tokens > 0, "usage.total_tokens")
    end },
  { name = "vllm", path = "/vllm/rerank", body = docs_body(), list = "results", top = "top_n",
    err = error_object,
    shape = function(j, docs)
      ok(type(j.id) == "string", "id")
      ok(j.usage.total_tokens > 0, "usage.total_tokens")
      eq(j.results[1].document.text, docs[j.results[1].index + 1], "document.text")
    end },
  { name = "vllm_v1", path = "/vllm/v1/rerank", body = docs_body(), list = "results",
    top = "top_n", err = error_object, shape = function() end },
  { name = "vllm_v2", path = "/vllm/v2/rerank", body = docs_body(), list = "results",
    top = "top_n", err = error_object, shape = function() end },
  { name = "tei", path = "/tei/rerank", list = false, score = "score", top = "top_n",
    err = tei_error,
    body = function(query, extra)
      local b = { query = query, texts = h.DOCS, raw_scores = false, truncate = false,
                  truncation_direction = "Right", return_text = false }
      for k, v in pairs(extra or {}) do b[k] = v end
      return b
    end,
    shape = function(j) eq(j[1].text, nil, "no text unless return_text") end },
}

-- The ranked list of an answer: results, data, or (TEI) the answer itself.
local function ranked(d, j)
  if d.list == false then return j end
  return j[d.list]
end
local function score_of(d, r) return r[d.score or "relevance_score"] end

for _, d in ipairs(DIALECTS) do
  test("accepts_and_answers_" .. d.name, function()
    local r = post(h.url, d.path, d.body(h.QUERY, { [d.top] = 2 }))
    eq(r.status, 200, "status (" .. r.body .. ")")
    match(r.headers["content-type"], "^application/json", "content type")
    local list = ranked(d, r.json)
    ok(type(list) == "table", "a ranked list")
    -- TEI ignores top_n (an unknown field): every text comes back
    eq(#list, d.name == "tei" and 3 or 2, "top honoured")
    for i, item in ipairs(list) do
      eq(item.index, BEST[i], "rank " .. i)
      local s = score_of(d, item)
      ok(type(s) == "number" and s >= 0 and s <= 1, "score in [0, 1]")
      if i > 1 then ok(s <= score_of(d, list[i - 1]), "sorted by score") end
    end
    d.shape(r.json, h.DOCS)
  end)

  test("no_key_needed_on_the_open_fake_" .. d.name, function()
    local r = post(h.open_url, d.path, d.body(h.QUERY), { key = false })
    eq(r.status, 200, "status (" .. r.body .. ")")
    eq(#ranked(d, r.json), 3, "every document")
  end)

  test("rejects_a_missing_or_wrong_key_" .. d.name, function()
    for _, o in ipairs({ { key = false }, { key = h.key .. "x" }, { auth = h.key } }) do
      local r = post(h.url, d.path, d.body(h.QUERY), o)
      eq(r.status, 401, "status")
      if d.name == "tei" then
        eq(r.body, "", "TEI answers 401 with an empty body")
      elseif d.name:match("^vllm") then
        eq(r.json and r.json.error, "Unauthorized", "vLLM's {\"error\": \"Unauthorized\"}")
      else
        ok(d.err(r.json), "the provider's error shape: " .. r.body)
      end
    end
  end)

  test("rejects_a_nim_body_" .. d.name, function()
    local r = post(h.url, d.path, { model = "nvidia/llama-3.2-nv-rerankqa-1b-v2",
      query = { text = h.QUERY }, passages = { { text = "a" }, { text = "b" } } })
    ok(r.status >= 400 and r.status < 500, "a 4xx, got " .. tostring(r.status))
  end)

  test("rejects_a_non_json_content_type_" .. d.name, function()
    local r = post(h.url, d.path, d.body(h.QUERY), { ctype = "text/plain" })
    ok(r.status >= 400 and r.status < 500, "a 4xx, got " .. tostring(r.status))
    local lenient = d.name == "jina" or d.name == "voyage" or d.name == "infinity"
    r = post(h.url, d.path, d.body(h.QUERY), { ctype = false })
    eq(r.status, lenient and 200 or (d.name == "tei" and 415 or 400),
      "no Content-Type (FastAPI servers read JSON anyway)")
  end)

  test("faults_" .. d.name, function()
    local r = post(h.url, d.path, d.body(uniq("!status=503 !retry-after=2")))
    eq(r.status, 503, "!status")
    eq(r.headers["retry-after"], "2", "!retry-after")
    ok(d.err(r.json), "the error in the provider's shape: " .. r.body)

    local q = uniq("!status=429 !times=1")
    eq(post(h.url, d.path, d.body(q)).status, 429, "!times: first")
    eq(post(h.url, d.path, d.body(q)).status, 200, "!times: then the answer")

    r = post(h.url, d.path, d.body(uniq("!malformed")))
    eq(r.status, 200, "!malformed status")
    eq(r.json, nil, "!malformed body is not JSON")

    r = post(h.url, d.path, d.body(uniq("!badindex")))
    ok(ranked(d, r.json)[1].index >= #h.DOCS, "!badindex: index out of range")

    r = post(h.url, d.path, d.body(uniq("!dupindex")))
    eq(ranked(d, r.json)[1].index, ranked(d, r.json)[2].index, "!dupindex")

    r = post(h.url, d.path, d.body(uniq("!nan")))
    match(r.body, '"' .. (d.score or "relevance_score") .. '":NaN', "!nan")

    r = post(h.url, d.path, d.body(uniq("!drop")), { timeout = 5 })
    eq(r.status, 0, "!drop: no answer")
    eq(r.exit, 52, "!drop: curl sees an empty reply")

    r = post(h.url, d.path, d.body(uniq("!delay=300")))
    eq(r.status, 200, "!delay status")
    ok(r.time >= 0.25, "!delay waited, took " .. r.time)

    r = post(h.url, d.path, d.body(uniq("!shape")))
    eq(r.status, 200, "!shape status")
    ok(d.list == false and r.json[1] == nil or type(r.json[d.list]) == "string", "!shape")
  end)
end

-- One schema rejection per dialect, in its words and status.
test("schema_cohere_v2_empty_documents_and_objects", function()
  local r = post(h.url, "/cohere/v2/rerank", '{"model":"m","query":"q","documents":[]}')
  eq(r.status, 400, "status")
  eq(r.json.message, "invalid request: list of documents must not be empty", "message")
  r = post(h.url, "/cohere/v2/rerank", { model = "m", query = "q", documents = { { text = "a" } } })
  eq(r.status, 400, "v2 takes strings only")
  r = post(h.url, "/cohere/v2/rerank", { model = "m", query = "q", documents = { "a" },
    max_chunks_per_doc = 2 })
  eq(r.status, 400, "v2 refuses max_chunks_per_doc")
  match(r.json.message, "max_chunks_per_doc", "names it")
  r = post(h.url, "/cohere/v2/rerank", { query = "q", documents = { "a" } })
  eq(r.status, 400, "model required")
end)

test("schema_cohere_v1_objects_rank_fields_and_chunks", function()
  local r = post(h.url, "/cohere/v1/rerank", { model = "m", query = "memory bandwidth",
    documents = { { text = "cats" }, { title = "memory bandwidth", text = "x" } },
    rank_fields = { "title" }, return_documents = true })
  eq(r.status, 200, "objects and rank_fields (" .. r.body .. ")")
  eq(r.json.results[1].index, 1, "ranked on the title")
  eq(r.json.results[1].document.title, "memory bandwidth", "the whole object echoed")
  r = post(h.url, "/cohere/v1/rerank", { model = "m", query = "q", documents = { "a", "b" },
    max_chunks_per_doc = 5001 })
  eq(r.status, 400, "documents x max_chunks_per_doc > 10000")
  r = post(h.url, "/cohere/v1/rerank", { model = "m", query = "q", documents = { "a" },
    max_tokens_per_doc = 100 })
  eq(r.status, 400, "v1 refuses max_tokens_per_doc")
end)

test("schema_azure_missing_query", function()
  local r = post(h.url, "/azure/v1/rerank", { documents = { "a" } })
  eq(r.status, 400, "status")
  match(r.json.message, "query", "names the field")
end)

test("schema_jina_top_k_is_an_extra_field", function()
  local r = post(h.url, "/jina/v1/rerank", { model = "m", query = "q", documents = { "a" },
    top_k = 1 })
  eq(r.status, 422, "status")
  eq(r.json.detail[1].type, "extra_forbidden", "FastAPI's detail list")
  eq(r.json.detail[1].loc[2], "top_k", "loc")
end)

test("schema_voyage_top_n_and_empty_strings", function()
  local r = post(h.url, "/voyage/v1/rerank", { model = "m", query = "q", documents = { "a" },
    top_n = 1 })
  eq(r.status, 400, "status")
  match(r.json.detail, "Argument 'top_n' is not supported by our API", "Voyage's words")
  r = post(h.url, "/voyage/v1/rerank", { model = "m", query = "q", documents = { "a", "" } })
  eq(r.status, 400, "empty string")
  eq(r.json.detail, "Input cannot contain empty strings or empty lists", "Voyage's words")
  r = post(h.url, "/voyage/v1/rerank", { model = "m", query = "gpu", documents = { "gpu", "b" },
    top_k = 5, return_documents = true })
  eq(r.status, 200, "top_k above the document count is fine")
  eq(#r.json.data, 2, "every document")
  eq(r.json.data[1].document, "gpu", "documents come back as strings")
end)

test("schema_together_max_chunks_per_doc", function()
  local r = post(h.url, "/together/v1/rerank", { model = "m", query = "q", documents = { "a" },
    max_chunks_per_doc = 2 })
  eq(r.status, 400, "status")
  eq(r.json.error.type, "invalid_request_error", "error.type")
  eq(r.json.error.param, "max_chunks_per_doc", "error.param")
end)

test("schema_infinity_objects_and_raw_scores", function()
  local r = post(h.url, "/infinity/rerank", { query = "q", documents = { { text = "a" } } })
  eq(r.status, 422, "strings only")
  eq(r.json.detail[1].type, "string_type", "detail type")
  r = post(h.url, "/infinity/rerank", { query = "gpu", documents = { "x", "gpu" },
    raw_scores = true, return_documents = true })
  eq(r.status, 200, "raw_scores")
  ok(r.json.results[1].relevance_score < 0, "raw scores are logits")
  eq(r.json.results[1].document, "gpu", "a document is a string")
end)

test("schema_vllm_missing_documents_and_top_n_zero", function()
  local r = post(h.url, "/vllm/rerank", { model = "m", query = "q" })
  eq(r.status, 400, "status")
  eq(r.json.error.code, 400, "error.code")
  r = post(h.url, "/vllm/rerank", { query = "q", documents = { "a", "b", "c" }, top_n = 0,
    truncate_prompt_tokens = 10 })
  eq(r.status, 200, "top_n 0 and unknown fields (" .. r.body .. ")")
  eq(#r.json.results, 3, "top_n 0 is every document")
end)

test("schema_tei_texts_required_empty_and_batch", function()
  local r = post(h.url, "/tei/rerank", { query = "q", documents = { "a" } })
  eq(r.status, 422, "no texts")
  match(r.body, "missing field `texts`", "axum's plain-text rejection")
  r = post(h.url, "/tei/rerank", '{"query":"q","texts":[]}')
  eq(r.status, 400, "empty texts")
  eq(r.json.error_type, "empty", "error_type")
  local many = {}
  for i = 1, 33 do many[i] = "doc " .. i end
  r = post(h.url, "/tei/rerank", { query = "q", texts = many })
  eq(r.status, 413, "over --max-client-batch-size")
  eq(r.json.error, "batch size 33 > maximum allowed batch size 32", "message")
  eq(r.json.error_type, "validation", "error_type")
  r = post(h.url, "/tei/rerank", { query = "gpu", texts = { "gpu", "x" }, raw_scores = true,
    return_text = true })
  eq(r.status, 200, "raw_scores")
  eq(r.json[1].text, "gpu", "return_text")
  ok(r.json[1].score < 0, "raw scores are logits")
  r = post(h.url, "/tei/rerank", { query = "q", texts = { "a" }, truncation_direction = "up" })
  eq(r.status, 422, "truncation_direction is Left or Right")
end)

test("too_many_documents", function()
  local many = {}
  for i = 1, 1001 do many[i] = "d" .. i end
  for _, p in ipairs({ "/cohere/v2/rerank", "/voyage/v1/rerank", "/together/v1/rerank" }) do
    local r = post(h.url, p, { model = "m", query = "q", documents = many })
    eq(r.status, 400, p)
  end
  eq(post(h.url, "/jina/v1/rerank", { model = "m", query = "q", documents = many }).status, 422,
    "jina")
end)

test("empty_query_refused_but_by_tei", function()
  eq(post(h.url, "/cohere/v2/rerank", { model = "m", query = "", documents = { "a" } }).status,
    400, "cohere")
  eq(post(h.url, "/jina/v1/rerank", { model = "m", query = "", documents = { "a" } }).status,
    422, "jina")
  eq(post(h.url, "/tei/rerank", { query = "", texts = { "a" } }).status, 200, "tei")
end)

test("last_request_and_stats_per_dialect", function()
  local before = get(h.url, "/_fake/stats").requests or {}
  local body = json.encode({ model = "m", query = uniq(""), documents = { "a", "b" }, top_k = 1 })
  eq(post(h.url, "/voyage/v1/rerank", body).status, 200, "status")
  local last = get(h.url, "/_fake/last/voyage")
  eq(last.path, "/voyage/v1/rerank", "path")
  eq(last.body, body, "raw body")
  eq(last.headers.authorization, "Bearer " .. h.key, "headers")
  eq(get(h.url, "/_fake/last").body, body, "/_fake/last records every POST")
  local after = get(h.url, "/_fake/stats").requests
  eq(after.voyage, (before.voyage or 0) + 1, "stats.requests.voyage")
  eq(after.cohere or 0, before.cohere or 0, "other dialects unchanged")
end)

test("nim_paths_unchanged", function()
  for _, p in ipairs({ "/v1/rerank", "/v2/rerank", "/rerank", "/cohere/v3/rerank",
    "/tei/v1/rerank" }) do
    local r = post(h.url, p, { model = "m", query = "q", documents = { "a" } })
    eq(r.status, 404, p)
    eq(r.body, "404 page not found", p .. " body")
  end
  local before = get(h.url, "/_fake/stats").requests or {}
  local body = json.encode({ model = "nvidia/llama-3.2-nv-rerankqa-1b-v2",
    query = { text = "gpu" }, passages = { { text = "gpu" }, { text = "x" } } })
  local r = post(h.url, "/v1/ranking", body)
  eq(r.status, 200, "NIM ranking")
  eq(r.json.rankings[1].index, 0, "rankings")
  eq(get(h.url, "/_fake/last/nim").body, body, "/_fake/last/nim")
  eq(get(h.url, "/_fake/stats").requests.nim, (before.nim or 0) + 1, "stats.requests.nim")
end)

test("cleanup", function() h.sh("rm -rf " .. h.q(TMP)) end)
