-- What nim.rerank sends: LITELLM_COMPAT.md section 2.
local spec = require "spec"
local h = require "helpers"
local nim = require "nim"
local test, eq, ok, raises = spec.test, spec.eq, spec.ok, spec.raises

local function sent(over, base)
  local res, err = nim.rerank(h.args(over))
  ok(res, "call succeeded: " .. tostring(err))
  local last = h.last(base)
  return h.decode(last.body), last, res
end

test("body_keys_in_documented_order", function()
  local _, last = sent({ top_n = 2, truncate = "END" })
  local b = last.body
  local pos = {}
  for _, k in ipairs({ "model", "query", "passages", "top_k", "truncate" }) do
    pos[#pos + 1] = assert(b:find('"' .. k .. '":', 1, true), k .. " missing")
  end
  for i = 2, #pos do ok(pos[i - 1] < pos[i], "key order") end
end)

test("body_model_uses_dots_url_keeps_underscores", function()
  local body, last = sent({ model = "nvidia_nim/nvidia/llama-3_2-nv-rerankqa-1b-v1" })
  eq(body.model, "nvidia/llama-3.2-nv-rerankqa-1b-v1", "body model")
  eq(last.path, "/v1/retrieval/nvidia/llama-3_2-nv-rerankqa-1b-v1/reranking", "path")
end)

test("catalog_entry_mistral_goes_to_fixed_path", function()
  local body, last = sent({ model = "nvidia_nim/nvidia/rerank-qa-mistral-4b" })
  eq(body.model, "nv-rerank-qa-mistral-4b:1", "body model")
  eq(last.path, "/v1/retrieval/nvidia/reranking", "path")
end)

test("query_is_wrapped_in_text_object", function()
  local body = sent()
  eq(body.query.text, h.QUERY, "query.text")
end)

test("documents_of_every_kind_become_passages", function()
  local body = sent({ documents = {
    "plain", { text = "from table", id = 7, extra = "dropped" }, { title = "no text" }, 42, true,
    { text = 3.5 },
  } })
  local p = body.passages
  eq(#p, 6, "passage count")
  eq(p[1].text, "plain", "string")
  eq(p[2].text, "from table", "table text")
  eq(p[2].id, nil, "other keys dropped")
  eq(p[3].text, '{"title":"no text"}', "table without text is its JSON")
  eq(p[4].text, "42", "number")
  eq(p[5].text, "true", "boolean")
  eq(p[6].text, "3.5", "numeric text")
end)

-- JSON has one number type: a gateway client's 3 reaches nim.rerank as the float 3.0 (cjson)
-- and is sent as "3", as a Lua caller's integer 3 is; a number that is not finite is misuse.
test("a_float_with_an_integer_value_is_sent_as_that_integer", function()
  local body = sent({ documents = { 3.0, { text = -7.0 }, 2 ^ 53, 0.5 } })
  local p = body.passages
  eq(p[1].text, "3", "3.0")
  eq(p[2].text, "-7", "text -7.0")
  eq(p[3].text, "9.007199254741e+15", "2^53 and beyond: as Lua writes it")
  eq(p[4].text, "0.5", "a fraction")
  raises(function() nim.rerank(h.args({ documents = { "a", 1 / 0 } })) end,
    "documents[2]: not a finite number")
  raises(function() nim.rerank(h.args({ documents = { { text = 0 / 0 } } })) end,
    "documents[1].text: not a finite number")
  raises(function() nim.rerank(h.args({ documents = { require("cjson").null } })) end,
    "documents[1]: expected string or table, got null")
end)

test("retrieval_family_drops_image", function()
  local body = sent({ documents = { { text = "t", image = "data:image/png;base64,AAAA" } } })
  eq(body.passages[1].image, nil, "image on retrieval")
end)

test("ranking_family_keeps_image", function()
  local body = sent({ model = "nvidia_nim/ranking/nvidia/llama-nemotron-rerank-vl-1b-v2",
    documents = { { text = "t", image = "data:image/png;base64,AAAA" }, { image = "data:x" } } })
  eq(body.passages[1].image, "data:image/png;base64,AAAA", "image kept")
  eq(body.passages[2].image, "data:x", "image only")
  eq(body.passages[2].text, nil, "no text invented")
end)

test("retrieval_sends_top_n_as_top_k", function()
  local body, _, res = sent({ top_n = 2 })
  eq(body.top_k, 2, "top_k")
  eq(body.top_n, nil, "top_n never sent")
  eq(#res.results, 2, "results")
end)

test("retrieval_top_k_clamped_to_document_count", function()
  local body = sent({ top_n = 50 })
  eq(body.top_k, 3, "top_k")
end)

test("retrieval_without_top_n_sends_no_top_k", function()
  local body = sent()
  eq(body.top_k, nil, "top_k")
end)

test("ranking_family_never_sends_top_k", function()
  local body, last, res = sent({ model = h.RANKING, top_n = 1 })
  eq(last.path, "/v1/ranking", "path")
  eq(body.top_k, nil, "top_k")
  eq(#res.results, 1, "cut to top_n on the client")
  eq(res.results[1].index, 2, "best document kept")
end)

test("top_k_alias_accepted_and_equal_values_allowed", function()
  local body = sent({ top_k = 2 })
  eq(body.top_k, 2, "top_k")
  body = sent({ top_k = 2, top_n = 2 })
  eq(body.top_k, 2, "top_k")
  body = sent({ top_n = 2.0 })
  eq(body.top_k, 2, "integral float")
end)

test("top_n_validation_names_the_field", function()
  for _, bad in ipairs({ true, 1.5, "3", 0, -1, {} }) do
    raises(function() nim.rerank(h.args({ top_n = bad })) end, "top_n")
  end
  raises(function() nim.rerank(h.args({ top_n = 2, top_k = 3 })) end, "top_n", "top_k")
end)

test("truncate_validated_and_sent", function()
  local err = raises(function() nim.rerank(h.args({ truncate = "START" })) end,
    "truncate", "NONE", "END")
  ok(err, "error")
  raises(function() nim.rerank(h.args({ truncate = "end" })) end, "truncate")
  local body = sent({ truncate = "NONE" })
  eq(body.truncate, "NONE", "NONE sent")
  body = sent()
  eq(body.truncate, nil, "not sent when absent")
end)

test("unsupported_params_listed_sorted_without_values", function()
  local err = raises(function()
    nim.rerank(h.args({ rank_fields = { "secret-value" }, max_chunks_per_doc = 9 }))
  end, "max_chunks_per_doc, rank_fields")
  spec.no_match(err, "secret-value", "values never printed")
end)

test("drop_params_drops_and_reports", function()
  local body, _, res = sent({ rank_fields = { "x" }, max_tokens_per_doc = 3, drop_params = true })
  eq(body.rank_fields, nil, "not sent")
  eq(table.concat(res.meta.dropped_params, ","), "max_tokens_per_doc,rank_fields", "reported")
end)

test("drop_params_reports_every_name_however_many", function()
  local a = h.args({ drop_params = true })
  for i = 1, 100 do a[("extra_%03d"):format(i)] = i end
  local res = assert(nim.rerank(a))
  eq(#res.meta.dropped_params, 100, "all 100 reported")
  eq(res.meta.dropped_params[1], "extra_001", "sorted")
  eq(res.meta.dropped_params[100], "extra_100", "sorted")
end)

test("global_drop_params_setting", function()
  nim.settings.drop_params = true
  local okc, res = pcall(nim.rerank, h.args({ rank_fields = { "x" } }))
  nim.settings.drop_params = false
  ok(okc and res, "dropped globally")
  eq(res.meta.dropped_params[1], "rank_fields", "reported")
  raises(function() nim.rerank(h.args({ rank_fields = { "x" }, drop_params = false })) end,
    "rank_fields")
end)

test("transport_options_are_never_unsupported", function()
  local res = nim.rerank(h.args({ timeout = 30, num_retries = 2, headers = {}, connect_timeout = 5,
    max_retries = 1, metadata = { a = 1 }, request_timeout = 10 }))
  ok(res, "accepted")
end)

test("return_documents_never_sent_and_controls_document", function()
  local body, _, res = sent({ return_documents = false })
  eq(body.return_documents, nil, "not sent")
  for _, r in ipairs(res.results) do eq(r.document, nil, "no document") end
  raises(function() nim.rerank(h.args({ return_documents = "yes" })) end, "return_documents")
end)

test("default_headers_sent", function()
  local _, last = sent()
  eq(last.headers["authorization"], "Bearer " .. h.key, "authorization")
  eq(last.headers["accept"], "application/json", "accept")
  eq(last.headers["content-type"], "application/json", "content-type")
  spec.match(last.headers["user-agent"], "^nimrank/" .. nim.version:gsub("%.", "%%."), "user-agent")
end)

test("caller_headers_merged_and_authorization_replaced", function()
  local _, last = sent({ headers = { ["X-Trace"] = "abc", ["authorization"] = "Bearer " .. h.key,
    ["User-Agent"] = "mine/1" } })
  eq(last.headers["x-trace"], "abc", "merged")
  eq(last.headers["user-agent"], "mine/1", "caller wins")
  local res, err = nim.rerank(h.args({ headers = { Authorization = "Bearer wrong" } }))
  eq(res, nil, "caller authorization replaces ours")
  eq(err.type, "auth", "type")
end)

test("header_injection_rejected", function()
  raises(function() nim.rerank(h.args({ headers = { ["X-A"] = "v\r\nX-B: w" } })) end,
    "headers['X-A']")
  raises(function() nim.rerank(h.args({ headers = { ["Bad Name"] = "v" } })) end, "headers")
  raises(function() nim.rerank(h.args({ headers = { ["X-A"] = 5 } })) end, "headers['X-A']")
end)

test("hosted_api_without_key_fails_before_network", function()
  local res, err = nim.rerank({ model = h.RETRIEVAL, query = "q", documents = { "d" } })
  eq(res, nil, "no result")
  eq(err.type, "auth", "type")
  eq(err.status, 0, "no HTTP status: nothing was sent")
  spec.match(err.message, "NVIDIA_NIM_API_KEY", "names the variable")
end)

test("self_hosted_without_key_sends_no_authorization", function()
  local res, err = nim.rerank({ model = h.RANKING, query = "q", documents = { "d" },
    api_base = h.open_url })
  ok(res, "self-hosted call: " .. tostring(err))
  local last = h.last(h.open_url)
  eq(last.headers["authorization"], nil, "no header")
end)

test("misuse_raises_naming_the_field", function()
  raises(function() nim.rerank() end, "table expected")
  raises(function() nim.rerank(h.args({ model = false })) end, "model")
  raises(function() nim.rerank({ query = "q", documents = {} }) end, "model")
  raises(function() nim.rerank(h.args({ query = 5 })) end, "query")
  raises(function() nim.rerank(h.args({ query = "" })) end, "query")
  raises(function() nim.rerank(h.args({ documents = "x" })) end, "documents")
  raises(function() nim.rerank(h.args({ documents = { "a", print } })) end, "documents[2]")
  raises(function() nim.rerank(h.args({ documents = { { text = {} } } })) end, "documents[1].text")
  raises(function() nim.rerank(h.args({ timeout = -1 })) end, "timeout")
  raises(function() nim.rerank(h.args({ api_base = "localhost:8000" })) end, "api_base")
  raises(function() nim.rerank(h.args({ model = "nvidia_nim/a b" })) end, "model")
  raises(function() nim.rerank(h.args({ [1] = "positional" })) end, "keys must be strings")
end)

test("empty_documents_return_empty_results_without_network", function()
  local res = nim.rerank({ model = h.RETRIEVAL, query = "q", documents = {},
    api_base = "http://127.0.0.1:1" })
  eq(#res.results, 0, "no results")
  eq(require("nim.json").encode(res.results), "[]", "encodes as []")
end)

test("document_limit_512_enforced_before_sending", function()
  local docs = h.words(512, 1024)
  local res, err = nim.rerank(h.args({ documents = docs, top_n = 5 }))
  ok(res, "512 documents of 1 KB: " .. tostring(err))
  eq(#res.results, 5, "results")
  docs[513] = "one too many"
  res, err = nim.native.rerank(h.args({ documents = docs }))
  eq(res, nil, "the native call refuses 513 before sending")
  eq(err.type, "bad_request", "type")
  spec.match(err.message, "512", "names the limit")
  res, err = nim.rerank(h.args({ documents = docs, top_n = 3 }))
  ok(res, "nim.rerank splits 513 into batches: " .. tostring(err))
  eq(res.meta.batches, 2, "two batches")
  eq(#res.results, 3, "top_n after the merge")
end)

test("catalog_max_passages_is_extendable", function()
  nim.catalog["nvidia/llama-nemotron-rerank-1b-v2"].max_passages = 2
  local res, err = nim.native.rerank(h.args())
  nim.catalog["nvidia/llama-nemotron-rerank-1b-v2"].max_passages = 512
  eq(res, nil, "refused")
  spec.match(err.message, "limit of 2", "catalog limit used")
end)

test("user_catalog_entry_changes_route", function()
  nim.catalog["acme/alias"] = { endpoint_path = "/v1/retrieval/nvidia/reranking",
    body_model = "nv-rerank-qa-mistral-4b:1" }
  local body, last = sent({ model = "nvidia_nim/acme/alias" })
  nim.catalog["acme/alias"] = nil
  eq(last.path, "/v1/retrieval/nvidia/reranking", "path")
  eq(body.model, "nv-rerank-qa-mistral-4b:1", "body model")
end)

test("malformed_catalog_entry_fails_closed", function()
  nim.catalog["acme/bad"] = { endpoint_path = 42 }
  local okc, err = pcall(nim.rerank, h.args({ model = "nvidia_nim/acme/bad" }))
  nim.catalog["acme/bad"] = "not a table"
  local okc2, err2 = pcall(nim.rerank, h.args({ model = "nvidia_nim/acme/bad" }))
  nim.catalog["acme/bad"] = nil
  ok(not okc and tostring(err):find("endpoint_path", 1, true), "bad field named")
  ok(not okc2 and tostring(err2):find("acme/bad", 1, true), "bad entry named")
end)

-- A catalog entry's path is appended to the base URL: nothing in it may move the request
-- elsewhere on the server, and no NUL byte may cut it short.
test("catalog_paths_and_models_cannot_redirect_a_request", function()
  for _, entry in ipairs({
    { endpoint_path = "/v1/retrieval/acme/../../../admin/delete-everything" },
    { endpoint_path = "/v1/retrieval/acme/reranking\0/../../x" },
    { endpoint_path = "/v1/retrieval/acme/reranking\r\nX-Injected: 1" },
    { endpoint_path = "/v1/x?admin=1" },
    { body_model = "acme/reranker\0-ignored" },
  }) do
    nim.catalog["acme/evil"] = entry
    local valid, bad = nim.check(h.args({ model = "nvidia_nim/acme/evil" }))
    local okc, err = pcall(nim.rerank, h.args({ model = "nvidia_nim/acme/evil" }))
    nim.catalog["acme/evil"] = nil
    local field = entry.endpoint_path and "endpoint_path" or "body_model"
    eq(valid, nil, field .. " refused by nim.check")
    spec.match(bad.message, field, "named")
    ok(not okc and tostring(err):find(field, 1, true), "and by nim.rerank: " .. tostring(err))
  end
  nim.settings.ca_bundle = "/nonexistent/ca.pem\0/etc/ssl/certs/ca-certificates.crt"
  local okc, err = pcall(nim.rerank, h.args())
  nim.settings.ca_bundle = nil
  ok(not okc and tostring(err):find("nim.settings.ca_bundle: contains a NUL byte", 1, true),
    "a NUL in a setting is refused, not cut: " .. tostring(err))
end)

-- Polls go to <status url>/<request id>: a status URL with no host, a bad port, another
-- scheme or a query would let the upstream's request id decide where the key goes.
test("nvcf_status_url_is_checked_before_anything_is_sent", function()
  for _, url in ipairs({ "http://", "http://127.0.0.1:99999/s", "ftp://h/s", "http://h/s#",
    "http://h/s?id=", "http://h/a b" }) do
    local valid, bad = nim.check(h.args({ nvcf_status_url = url }))
    eq(valid, nil, url .. " refused")
    eq(bad.field, "nvcf_status_url", url .. ": field")
  end
  local out = h.sh(("NIMRANK_NVCF_STATUS_URL=http:// %s -e %s 2>&1"):format(h.nimrank, h.q(
    ("print(nim.check{ model = %q, query = 'q', documents = { 'd' }, api_base = %q })")
      :format(h.RETRIEVAL, h.url))))
  spec.match(out, "NIMRANK_NVCF_STATUS_URL", "the variable is named: " .. out)
  local res = nim.rerank({ model = "local/bm25", query = "gpu", documents = h.DOCS,
    nvcf_status_url = "http://" })
  ok(res, "a local model never polls: its calls do not care")
end)

-- The API key travels as a header: held to a header's size, and named as the request's.
test("an_oversized_api_key_is_refused_by_name", function()
  local valid, bad = nim.check(h.args({ api_key = ("k"):rep(200000) }))
  eq(valid, nil, "refused")
  eq(bad.field, "api_key", "named")
  spec.match(bad.message, "too large", "why")
  local out = h.sh(("NVIDIA_NIM_API_KEY=%s %s rerank -m %s --api-base %s -q q d 2>&1"):format(
    ("k"):rep(9000), h.nimrank, h.RETRIEVAL, h.q(h.url)))
  spec.match(out, "NVIDIA_NIM_API_KEY: too large", "the variable is named")
end)

-- libcurl 7.88 runs a 1 ms limit as 200 ms: the engine gives it at least 2 ms.
test("a_tiny_timeout_is_kept_not_rounded_up_to_200_ms", function()
  for _, t in ipairs({ 0.001, 1e-9 }) do
    local _, err = nim.rerank(h.args({ query = "!delay=2000 gpu tiny", timeout = t }))
    eq(err.type, "timeout", t .. ": timeout")
    local ms = tonumber(err.message:match("after (%d+) milli"))
    ok(ms and ms < 200, t .. ": libcurl's own count: " .. err.message)
  end
end)

test("resolve_exposes_route", function()
  local r = nim.resolve("nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2",
    { api_base = "http://localhost:8000" })
  eq(r.family, "ranking", "family")
  eq(r.url, "http://localhost:8000/v1/ranking", "url")
  eq(r.body_model, "nvidia/llama-3.2-nv-rerankqa-1b-v2", "body model")
  eq(r.needs_key, false, "self-hosted")
  r = nim.resolve("nvidia_nim/nvidia/llama-3_2-nv-rerankqa-1b-v2")
  eq(r.url, "https://ai.api.nvidia.com/v1/retrieval/nvidia/llama-3_2-nv-rerankqa-1b-v2/reranking",
    "url")
  eq(r.needs_key, true, "hosted")
  raises(function() nim.resolve("") end, "model")
  eq(nim.native.resolve, nim.resolve, "native resolve")
end)

test("catalog_lookup_accepts_dotted_spelling", function()
  nim.catalog["nvidia/llama-3_2-nv-rerankqa-1b-v2"].max_passages = 1
  local res, err = nim.native.rerank(h.args({ model = h.RANKING }))
  nim.catalog["nvidia/llama-3_2-nv-rerankqa-1b-v2"].max_passages = 512
  eq(res, nil, "entry found through the dotted name")
  spec.match(err.message, "limit of 1", "limit")
end)

test("json_escaping_round_trips_every_byte_value", function()
  local docs = { "", 'q"uote', "back\\slash", "\0\1\31 ctl", "tab\tnl\ncr\r\b\f", "é ü 😀",
    ("x"):rep(7) .. '"', ("y"):rep(8) .. "\\" .. ("z"):rep(9), "/slash", "\127del" }
  for c = 0, 255 do
    docs[#docs + 1] = ("abcdefgh"):rep(2) .. string.char(c) .. ("ijklmnop"):rep(2)
  end
  local query = 'quote " and \\ and \n in the query'
  local res, err = nim.rerank(h.args({ documents = docs, query = query, model = h.RANKING,
    api_base = h.open_url }))
  ok(res, tostring(err))
  local body = h.decode(h.last(h.open_url).body)
  eq(body.query.text, query, "query")
  for i, d in ipairs(docs) do eq(body.passages[i].text, d, "passage " .. i) end
end)

-- Reliability and security of what is sent (the classes of the hostile audit).
test("headers_that_frame_the_message_are_refused_naming_them", function()
  for _, name in ipairs({ "Content-Length", "content-length", "Transfer-Encoding", "Host",
    "Connection", "Expect", "Upgrade", "TE", "Trailer" }) do
    raises(function() nim.rerank(h.args({ headers = { [name] = "0" } })) end,
      "headers['" .. name .. "']", "frames the HTTP message")
  end
  -- the connection stays clean for the next call
  local res = assert(nim.rerank(h.args()))
  eq(res.results[1].index, 2, "the next call gets its own answer")
  raises(function() nim.rerank(h.args({ headers = { ["X-Big"] = ("v"):rep(9000) } })) end,
    "headers['X-Big']", "too large")
  raises(function() nim.rerank(h.args({ headers = { ["X-Nul\0"] = "v" } })) end, "headers")
  raises(function() nim.rerank(h.args({ headers = { ["X-A"] = "v\0w" } })) end, "headers['X-A']")
end)

test("nul_bytes_never_cut_a_field", function()
  for _, field in ipairs({ "model", "api_base", "api_key", "truncate", "ca_bundle",
    "nvcf_status_url" }) do
    local v = ({ model = h.RETRIEVAL .. "\0x", api_base = h.url .. "\0/evil",
      api_key = h.key .. "\0", truncate = "END\0", ca_bundle = "/etc/ssl\0x",
      nvcf_status_url = "http://h/\0" })[field]
    raises(function() nim.rerank(h.args({ [field] = v })) end, field, "NUL")
  end
end)

test("model_strings_and_base_urls_that_would_move_the_request_are_refused", function()
  for _, m in ipairs({ "nvidia_nim/nvidia/.", "nvidia_nim/./nvidia", "nvidia_nim/a/../b",
    "nvidia_nim/ranking/.", "nvidia_nim/a?b", "nvidia_nim/a#b" }) do
    raises(function() nim.rerank(h.args({ model = m })) end, "model")
  end
  for _, b in ipairs({ "http://", "http://h:99999", "http://h\r\nX: y", "http://h/a b",
    "http://h:0", "ftp://h" }) do
    raises(function() nim.rerank(h.args({ api_base = b })) end, "api_base")
  end
end)

test("a_catalog_limit_that_is_not_an_integer_is_named_as_the_catalogs", function()
  local entry = nim.catalog["nvidia/llama-nemotron-rerank-1b-v2"]
  for _, v in ipairs({ 0 / 0, 1.5, -1, "x" }) do
    entry.max_passages = v
    local okc, err = pcall(nim.rerank, h.args())
    entry.max_passages = 512
    eq(okc, false, tostring(v))
    spec.match(tostring(err), "nim%.catalog: nvidia/llama%-nemotron%-rerank%-1b%-v2: max_passages",
      "names the catalog entry, not batch_size")
  end
end)

test("a_fan_out_beyond_the_file_descriptor_limit_waits_for_connections", function()
  local code = ([[
    local spec = { model = %q, api_base = %q, concurrency = 300 }
    for i = 1, 300 do spec[i] = { query = "!delay=50 gpu fd " .. i, documents = { "gpu" } } end
    local results, errors = nim.rerank_many(spec)
    local failed = 0
    for i = 1, 300 do if errors[i] then failed = failed + 1 end end
    io.write(failed, " ", nim.settings.max_connections)
  ]]):format(h.RANKING, h.open_url)
  local out = h.sh(("ulimit -n 256 && %s -e %s 2>&1"):format(h.nimrank, h.q(code)))
  eq(out, "0 128", "300 requests under 256 descriptors: none failed, 128 connections at most")
end)
