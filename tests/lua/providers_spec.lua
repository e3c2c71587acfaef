-- Providers beyond NIM (lua/nim/providers/): each against its dialect on the fake server
-- (tests/fake/fakenim.lua: the first path segment names the dialect), which validates the
-- request as the real API does and answers in its shape.
local spec = require "spec"
local h = require "helpers"
local nim = require "nim"
local json = require "nim.json"
local config = require "nim.config"
local router = require "nim.router"
local test, eq, ok, match = spec.test, spec.eq, spec.ok, spec.match

-- provider -> what the fake serves it at, and what its API calls things.
local CASES = {
  { name = "cohere", model = "cohere/rerank-v3.5", dialect = "/cohere",
    path = "/cohere/v2/rerank", key_var = "COHERE_API_KEY", docs = "documents",
    top = "top_n", body_model = "rerank-v3.5", unsupported = { truncate = "END" },
    own = { max_tokens_per_doc = 512 } },
  { name = "azure_ai", model = "azure_ai/Cohere-rerank-v3.5", dialect = "/azure",
    path = "/azure/v1/rerank", key_var = "AZURE_AI_API_KEY", docs = "documents",
    top = "top_n", body_model = "Cohere-rerank-v3.5", unsupported = { truncate = "NONE" },
    own = { max_chunks_per_doc = 4 } },
  { name = "jina_ai", model = "jina_ai/jina-reranker-v2-base-multilingual", dialect = "/jina",
    path = "/jina/v1/rerank", key_var = "JINA_AI_API_KEY", docs = "documents", top = "top_n",
    body_model = "jina-reranker-v2-base-multilingual", unsupported = { rank_fields = { "a" } },
    status = 402, status_type = "auth" },
  { name = "voyage", model = "voyage/rerank-2.5", dialect = "/voyage", path = "/voyage/v1/rerank",
    key_var = "VOYAGE_API_KEY", docs = "documents", top = "top_k", body_model = "rerank-2.5",
    unsupported = { rank_fields = { "a" } }, own = { truncate = "NONE" },
    own_body = { truncation = false } },
  { name = "together_ai", model = "together_ai/Salesforce/Llama-Rank-V1", dialect = "/together",
    base_suffix = "/v1", path = "/together/v1/rerank", key_var = "TOGETHER_API_KEY",
    docs = "documents", top = "top_n", body_model = "Salesforce/Llama-Rank-V1",
    unsupported = { max_chunks_per_doc = 2 }, own = { rank_fields = { "text" } } },
  { name = "infinity", model = "infinity/BAAI/bge-reranker-v2-m3", dialect = "/infinity",
    path = "/infinity/rerank", key_var = "INFINITY_API_KEY", optional_key = true,
    docs = "documents", top = "top_n", body_model = "BAAI/bge-reranker-v2-m3",
    unsupported = { truncate = "END" }, own = { raw_scores = true } },
  { name = "hosted_vllm", model = "hosted_vllm/BAAI/bge-reranker-base", dialect = "/vllm",
    path = "/vllm/rerank", key_var = "HOSTED_VLLM_API_KEY", optional_key = true,
    docs = "documents", top = "top_n", body_model = "BAAI/bge-reranker-base",
    unsupported = { truncate = "END" }, own = { max_tokens_per_doc = 100 } },
  { name = "huggingface", model = "huggingface/BAAI/bge-reranker-base", dialect = "/tei",
    path = "/tei/rerank", key_var = "HUGGINGFACE_API_KEY", optional_key = true, docs = "texts",
    unsupported = { rank_fields = { "a" } }, own = { truncate = "END" },
    own_body = { truncate = true }, status = 424, status_type = "provider" },
}

local KEY_VARS = {}
for _, c in ipairs(CASES) do
  for _, v in ipairs(nim.providers.get(c.name).key_env or {}) do KEY_VARS[#KEY_VARS + 1] = v end
end
for _, v in ipairs(KEY_VARS) do
  assert(not os.getenv(v), v .. " is set in the test environment: the key tests need it unset")
end

local seq = 0
local function unique(q)
  seq = seq + 1
  return ("%s providers %d"):format(q, seq)
end

local function call(c, over)
  local a = { model = c.model, query = unique(h.QUERY), documents = h.DOCS, api_key = h.key,
    api_base = h.url .. c.dialect .. (c.base_suffix or "") }
  for k, v in pairs(over or {}) do a[k] = v end
  if a.api_key == false then a.api_key = nil end
  return nim.rerank(a)
end

for _, c in ipairs(CASES) do
  test(c.name .. "_request_matches_the_dialect_and_the_answer_maps", function()
    local res, err = call(c, { top_n = 2 })
    ok(res, tostring(err))
    local last = h.last(h.url)
    eq(last.path, c.path, "URL")
    eq(last.headers.authorization, "Bearer " .. h.key, "the key's header")
    local body = json.decode(last.body)
    eq(body.model, c.body_model, "model in the body (prefix stripped)")
    eq(type(body[c.docs]), "table", "documents as " .. c.docs)
    eq(body[c.docs][1], h.DOCS[1], "documents are strings")
    eq(body.passages, nil, "no NIM field")
    if c.top then eq(body[c.top], 2, "top_n as " .. c.top) end
    eq(#res.results, 2, "top_n applied")
    eq(res.meta.provider, c.name, "provider")
    eq(res.results[1].index, 2, "the H100 passage first (the fake's lexical scorer)")
    eq(res.results[1].document.text, h.DOCS[3], "document attached")
    ok(res.results[1].relevance_score >= res.results[2].relevance_score, "sorted")
    ok(res.meta.billed_units, "billed units")
    match(res.id, "%S", "an id")
  end)

  test(c.name .. "_key_from_its_variable_or_named_when_missing", function()
    if c.optional_key then
      local res, err = call(c, { api_key = false, api_base = h.open_url .. c.dialect
        .. (c.base_suffix or "") })
      ok(res, "a self-hosted server without a key: " .. tostring(err))
      eq(h.last(h.open_url).headers.authorization, nil, "no Authorization sent")
      return
    end
    local res, err = call(c, { api_key = false })
    eq(res, nil, "no key")
    eq(err.type, "auth", "auth error")
    match(err.message, c.key_var, "names the variable")
  end)

  test(c.name .. "_error_status_mapped", function()
    local _, err = call(c, { query = unique("!status=429 !retry-after=3 " .. h.QUERY) })
    eq(err.type, "rate_limit", "429")
    eq(err.status, 429, "status")
    eq(err.provider, c.name, "provider named")
    eq(err.retry_after, 3, "Retry-After read")
    _, err = call(c, { api_key = "wrong-key" })
    eq(err.type, "auth", "the dialect's 401")
    if c.status then
      _, err = call(c, { query = unique(("!status=%d "):format(c.status) .. h.QUERY) })
      eq(err.type, c.status_type, "the descriptor's own mapping of " .. c.status)
    end
  end)

  test(c.name .. "_unsupported_parameters_named_or_dropped", function()
    local name = next(c.unsupported)
    local ok_, e = pcall(call, c, c.unsupported)
    ok(not ok_, "raises")
    match(tostring(e), "unsupported parameters: " .. name, "names it")
    local res, err = call(c, { drop_params = true, [name] = c.unsupported[name] })
    ok(res, tostring(err))
    eq(json.decode(h.last(h.url).body)[name], nil, "dropped, not sent")
    eq(res.meta.dropped_params[1], name, "reported")
  end)

  if c.own then
    test(c.name .. "_own_parameters_pass_through", function()
      local res, err = call(c, c.own)
      ok(res, tostring(err))
      local body = json.decode(h.last(h.url).body)
      for k, v in pairs(c.own_body or c.own) do spec.deep_eq(body[k], v, k) end
    end)
  end
end

test("a_bad_answer_is_bad_response_naming_the_dialects_list", function()
  local _, err = call(CASES[1], { query = unique("!badindex " .. h.QUERY) })
  eq(err.type, "bad_response", "refused")
  match(err.message, "results%[%d+%]%.index is out of range", "the list's own name")
  _, err = call(CASES[4], { query = unique("!nan " .. h.QUERY) })
  eq(err.type, "bad_response", "NaN score refused")
  _, err = call(CASES[8], { query = unique("!dupindex " .. h.QUERY) })
  eq(err.type, "bad_response", "a repeated index in a bare list refused")
end)

test("batches_sum_the_providers_own_billed_units", function()
  local res, err = call(CASES[1], { batch_size = 2 })
  ok(res, tostring(err))
  eq(res.meta.billed_units.search_units, 2, "one search unit per batch, summed")
  eq(res.meta.billed_units.total_tokens, nil, "no made-up tokens")
end)

test("cohere_v1_when_its_v1_parameter_or_url_is_given", function()
  local c = CASES[1]
  assert(call(c, { max_chunks_per_doc = 3 }))
  eq(h.last(h.url).path, "/cohere/v1/rerank", "max_chunks_per_doc is v1's")
  assert(call(c, { api_base = h.url .. "/cohere/v1/rerank" }))
  eq(h.last(h.url).path, "/cohere/v1/rerank", "a full v1 URL is used as it is")
  eq(nim.resolve("cohere/rerank-v3.5").url, "https://api.cohere.com/v2/rerank", "default")
end)

test("parameter_types_checked_naming_the_field", function()
  local ok_, e = pcall(call, CASES[1], { max_tokens_per_doc = "many" })
  ok(not ok_, "raises")
  match(tostring(e), "max_tokens_per_doc: expected an integer", "names it")
  ok_, e = pcall(call, CASES[1], { rank_fields = { 1 } })
  match(tostring(e), "rank_fields: expected a list of strings", "list of strings")
end)

test("empty_string_list_parameter_is_a_json_list", function()
  assert(call(CASES[5], { rank_fields = {} }))
  match(h.last(h.url).body, '"rank_fields":%[%]', "[] on the wire, not {}")
end)

test("required_base_names_its_variable", function()
  local ok_, e = pcall(nim.rerank, { model = "hosted_vllm/m", query = "q", documents = { "a" } })
  ok(not ok_, "raises")
  match(tostring(e), "api_base: required for hosted_vllm models %(pass api_base or set "
    .. "HOSTED_VLLM_API_BASE%)", "names the variable")
end)

test("auto_batching_follows_the_providers_limit", function()
  local docs = {}
  for i = 1, 70 do docs[i] = ("passage %d about gpu memory bandwidth"):format(i) end
  docs[45] = "H100 memory bandwidth is 3 TB/s per GPU"
  local res, err = call(CASES[8], { documents = docs, top_n = 3 })
  ok(res, tostring(err))
  eq(res.results[1].index, 44, "the best passage of all batches first (0-based)")
  eq(#res.results, 3, "top_n over the merged batches")
end)

test("user_descriptor_from_a_script", function()
  nim.providers.add({ name = "acme", path = "/v2/rerank", key_env = { "ACME_KEY" },
    request = { model = "model", query = "query", documents = "documents", top_n = "top_n" },
    response = { list = "results", score = "relevance_score" } })
  local res, err = nim.rerank({ model = "acme/r1", query = unique(h.QUERY), documents = h.DOCS,
    api_key = h.key, api_base = h.url .. "/cohere" })
  ok(res, tostring(err))
  eq(res.meta.provider, "acme", "its name")
  eq(h.last(h.url).path, "/cohere/v2/rerank", "its path")
  local ok_, e = pcall(nim.providers.add, { name = "bad", request = { document = "blob" } })
  ok(not ok_, "a bad descriptor raises")
  match(tostring(e), "descriptor.request.document", "naming the field")
  ok_, e = pcall(nim.providers.add, { name = "x", params = { model = "string" } })
  match(tostring(e), 'descriptor.params %(a key%): "model" is one of nimrank\'s own arguments',
    "reserved")
  ok_, e = pcall(nim.providers.add, { name = "local" })
  match(tostring(e), "reserved", "local/ stays the embedded reranker")
end)

-- Runs a Lua snippet in a fresh nimrank with extra environment; returns its output, status.
local function nimrank_with(env, code)
  return h.sh(("env %s %s -e %s 2>&1"):format(env, h.q(h.nimrank), h.q(code)))
end

test("key_and_base_from_the_providers_variables", function()
  local code = ([[
    local res, err = nim.rerank{ model = "cohere/rerank-v3.5", query = "h100 bandwidth",
      documents = { "a", "h100 memory bandwidth" } }
    print(res and res.results[1].index or tostring(err))]])
  local out, status = nimrank_with(("COHERE_API_KEY=%s COHERE_API_BASE=%s"):format(h.key,
    h.q(h.url .. "/cohere")), code)
  eq(status, 0, "ran: " .. out)
  eq(out, "1\n", "answered with the key and base from the environment")
  eq(h.last(h.url).headers.authorization, "Bearer " .. h.key, "the variable's key sent")
  out = nimrank_with(("CO_API_KEY=%s COHERE_API_BASE=%s"):format(h.key,
    h.q(h.url .. "/cohere")), code)
  eq(out, "1\n", "the second variable of the list")
end)

test("many_key_variables_named_in_the_message", function()
  local vars = {}
  for i = 1, 32 do vars[i] = ("ACME_KEY_VARIABLE_NUMBER_%02d_"):format(i) .. ("X"):rep(30) end
  nim.providers.add({ name = "acme-many", api_base = h.url, path = "/cohere/v2/rerank",
    key_env = vars, key_required = true })
  local _, err = nim.rerank({ model = "acme-many/m", query = "q", documents = { "a" } })
  eq(err.type, "auth", "no key")
  match(err.message, vars[1] .. " or " .. vars[2], "names them")
  match(err.message, vars[32], "all of them (past a Lua buffer's first block)")
end)

test("a_registered_descriptor_is_a_copy_nothing_changes_under_a_call", function()
  local d = { name = "acme-copy", path = "/cohere/v2/rerank", api_base = h.url,
    request = { model = "model" }, response = { list = "results" } }
  nim.providers.add(d)
  d.path = "/elsewhere"
  local got = nim.providers.get("acme-copy")
  eq(got.path, "/cohere/v2/rerank", "registered as given")
  got.response.list = "nothing"
  eq(nim.providers.get("acme-copy").response.list, "results", "get returns a copy")
  eq(nim.native.providers, nil, "the registry is not reachable from Lua")
  local t = nim.native.start({ model = "acme-copy/m", query = unique(h.QUERY),
    documents = h.DOCS, api_key = h.key })
  nim.providers.add({ name = "acme-copy", response = { list = "other" } })
  local res, err = t:wait()
  ok(res, "the call keeps the descriptor it started with: " .. tostring(err))
end)

test("header_and_path_injection_refused_at_registration", function()
  local function refused(d, field)
    local ok_, e = pcall(nim.providers.add, d)
    ok(not ok_, field .. " refused")
    match(tostring(e), field:gsub("%p", "%%%0"), "names " .. field)
  end
  refused({ name = "x1", auth = { header = "Content-Length" } }, "descriptor.auth.header")
  refused({ name = "x2", auth = { header = "Host" } }, "descriptor.auth.header")
  refused({ name = "x3", auth = { prefix = "x\r\nX-Injected: yes\r\nX: " } },
    "descriptor.auth.prefix")
  refused({ name = "x4", path = "@evil.example/x" }, "descriptor.path")
  refused({ name = "x5", short = { ["/v1"] = "/../admin" } }, 'descriptor.short["/v1"]')
  refused({ name = "x6", request = { truncate = { field = "t", NONE = 0 / 0 } } },
    "descriptor.request.truncate.NONE")
  refused({ name = ("p"):rep(70) }, "descriptor.name")
  refused({ name = "nvidia" }, "descriptor.name")
  refused({ name = "ranking" }, "descriptor.name")
end)

test("a_custom_key_header_carries_the_bare_key", function()
  nim.providers.add({ name = "acme-hdr", api_base = h.open_url, path = "/cohere/v2/rerank",
    auth = { header = "X-Api-Key" }, request = { model = "model" },
    response = { list = "results" } })
  assert(nim.rerank({ model = "acme-hdr/m", query = unique(h.QUERY), documents = h.DOCS,
    api_key = "k-123456" }))
  local last = h.last(h.open_url)
  eq(last.headers["x-api-key"], "k-123456", "no Bearer before it")
  eq(last.headers.authorization, nil, "no Authorization")
end)

test("a_builtin_prefix_without_its_descriptor_is_refused_not_sent_to_nvidia", function()
  local dir = os.tmpname()
  os.remove(dir)
  h.sh("mkdir -p " .. h.q(dir .. "/nim"))
  local out = nimrank_with("NIMRANK_LUA_PATH=" .. h.q(dir),
    [[print(pcall(nim.resolve, "cohere/rerank-v3.5"))]])
  h.sh("rm -rf " .. h.q(dir))
  match(out, "no descriptor for provider 'cohere'", "refused: " .. out)
end)

test("descriptor_202_and_410_are_not_nims", function()
  local _, err = call(CASES[1], { query = unique("!status=202 " .. h.QUERY) })
  eq(err.type, "bad_response", "a 202 is not a NIM queue")
  eq(err.retryable, false, "not retried")
  _, err = call(CASES[1], { query = unique("!status=410 " .. h.QUERY) })
  spec.no_match(err.message, "end of life", "no NIM end-of-life note")
end)

test("resolve_knows_the_local_reranker_has_no_route", function()
  local r = nim.resolve("local/bm25")
  eq(r.provider, "local", "provider")
  eq(r.url, nil, "no URL: ranked in this process")
  eq(r.needs_key, false, "no key")
end)

test("nims_descriptor_agrees_with_the_rules_in_c", function()
  local d = nim.providers.get("nvidia_nim")
  eq(d.max_passages, nim.native.default_max_passages, "the default passage limit")
  eq(nim.resolve("nvidia/x").url, d.api_base .. "/v1/retrieval/nvidia/x/reranking",
    "the default base")
  eq(nim.resolve("nvidia/x").max_passages, d.max_passages, "the limit resolve reports")
  eq(select(1, nim.native.provider_of("nvidia_nim/nvidia/x")), d.name, "the name")
end)

test("config_nim_group_falls_back_to_cohere_then_bm25", function()
  local cfg = config.load({
    model_list = {
      { model_name = "nim", litellm_params = { model = h.RETRIEVAL, api_key = h.key,
        api_base = "http://127.0.0.1:1" } },
      { model_name = "cohere-rr", litellm_params = { model = "cohere/rerank-v3.5",
        api_key = "wrong-key", api_base = h.url .. "/cohere" } },
      { model_name = "offline", litellm_params = { model = "local/bm25" } },
    },
    router_settings = { num_retries = 0, fallbacks = { { nim = { "cohere-rr", "offline" } } } },
  })
  local r = router.new(cfg, { sleep = function() end })
  local res, err = r:rerank({ model = "nim", query = unique(h.QUERY), documents = h.DOCS })
  ok(res, tostring(err))
  local path = {}
  for i, a in ipairs(res.meta.attempts) do path[i] = a.model_group .. ":" .. (a.error or "ok") end
  eq(table.concat(path, " "), "nim:connection cohere-rr:auth offline:ok", "the path taken")
  eq(res.meta.provider, "local", "answered offline")
  eq(res.meta.fallback, "offline", "second fallback")
end)

return spec
