-- What nim.rerank returns: LITELLM_COMPAT.md section 3, and every error type.
local spec = require "spec"
local h = require "helpers"
local nim = require "nim"
local json = require "nim.json"
local test, eq, ok, match = spec.test, spec.eq, spec.ok, spec.match

local function call(over) return nim.rerank(h.args(over)) end

local function fails(over, want_type, want_status)
  local res, err = call(over)
  eq(res, nil, "no result")
  ok(type(err) == "table", "error table")
  eq(err.type, want_type, "err.type")
  if want_status then eq(err.status, want_status, "err.status") end
  eq(err.provider, "nvidia_nim", "err.provider")
  eq(err.model, (over and over.model) or h.RETRIEVAL, "err.model")
  eq(type(err.message), "string", "err.message")
  eq(type(err.retryable), "boolean", "err.retryable")
  spec.no_match(tostring(err), h.key, "no key in tostring")
  spec.no_match(err.message, h.key, "no key in message")
  return err
end

test("seed_example_shape", function()
  local res = call({ top_n = 3 })
  eq(#res.results, 3, "results")
  local r = res.results[1]
  eq(r.index, 2, "H100 document first, 0-based index")
  eq(math.type(r.index), "integer", "index is an integer")
  eq(r.document.text, h.DOCS[3], "document text")
  eq(type(r.relevance_score), "number", "score")
  ok(res.results[1].relevance_score >= res.results[2].relevance_score, "sorted")
  match(res.id, "^%x+%-%x+%-4%x+%-[89ab]%x+%-%x+$", "uuid4 id")
  eq(res.meta.billed_units.total_tokens > 0, true, "tokens")
end)

test("relevance_score_is_the_raw_logit", function()
  local res = call({ query = "gpu memory bandwidth", documents = { "gpu memory bandwidth" } })
  -- the fake's score for 3 matching terms of a 3-word passage: 2.5*3 - 4 - 0.0015, fp16-rounded
  spec.near(res.results[1].relevance_score, 3.498046875, 1e-9, "logit")
end)

test("retrieval_keeps_provider_order", function()
  local normal = call()
  local rev = call({ query = "!reverse " .. h.QUERY })
  for i = 1, 3 do
    eq(rev.results[i].index, normal.results[4 - i].index, "provider's (reversed) order kept")
  end
end)

test("ranking_sorts_by_score_then_index", function()
  local res = call({ model = h.RANKING, query = "!reverse " .. h.QUERY })
  eq(res.results[1].index, 2, "sorted by score")
  ok(res.results[1].relevance_score > res.results[2].relevance_score, "descending")
  ok(res.results[2].relevance_score >= res.results[3].relevance_score, "descending")
  res = call({ model = h.RANKING, query = "!ties anything" })
  eq(res.results[1].index, 0, "tie broken by index")
  eq(res.results[2].index, 1, "tie broken by index")
  eq(res.results[3].index, 2, "tie broken by index")
end)

test("provider_id_kept_else_fresh_uuid", function()
  eq(call({ query = "!id=req-42 gpu" }).id, "req-42", "provider id")
  ok(call().id ~= call().id, "fresh ids differ")
end)

test("billed_units_from_usage_else_rankings_count", function()
  eq(call({ query = "!usage=77 gpu" }).meta.billed_units.total_tokens, 77, "usage")
  eq(call({ query = "!nousage gpu" }).meta.billed_units.total_tokens, 3, "rankings count")
  eq(call({ query = "!usage=0 gpu" }).meta.billed_units.total_tokens, 3, "zero usage")
end)

test("an_empty_ranking_list_gives_empty_results_encoded_as_list", function()
  local res = call({ query = "!body=empty_list gpu" })
  eq(#res.results, 0, "empty")
  match(json.encode(res), '"results":%[%]', "encodes as []")
  local err = fails({ query = "!norankings gpu" }, "bad_response", 200)
  match(err.message, "no 'rankings' list", "a missing list is not an empty one")
end)

-- A 2xx body without a well-formed ranking list is bad_response, whatever shape it takes.
test("wrong_shaped_answers_are_bad_responses", function()
  for name, why in pairs({
    array = "not a JSON object", rankings_object = "not a list", empty_object = "no 'rankings'",
    null_rankings = "not a list", string_index = "index is not an integer",
    hex_string_index = "index is not an integer", hex_index = "not JSON",
    float_index = "index is not an integer", negative_index = "out of range",
    missing_comma = "not JSON", double_comma = "not JSON", leading_comma = "not JSON",
    trailing_comma = "not JSON", doubled_member_comma = "not JSON", bare_word = "not JSON",
    cut_literal = "not JSON", spaced_list = "not JSON", spaced_members = "not JSON",
    trailing_comma_usage = "not JSON", colon_in_list = "not JSON", raw_control = "not JSON",
    leading_zero_index = "not JSON", hex_logit = "not JSON",
    string_logit = "logit is not a finite number", nan_logit = "not JSON",
    huge_logit = "logit is not a finite number", missing_logit = "logit is missing",
    key_without_value = "not JSON", trailing_garbage = "JSON", two_objects = "JSON",
    nul_inside = "JSON",
  }) do
    local err = fails({ query = "!body=" .. name .. " gpu" }, "bad_response", 200)
    match(err.message, why:gsub("%p", "%%%0"), name)
  end
  local lit = assert(call({ query = "!body=literals gpu" }))
  eq(lit.results[1].relevance_score, -150, "every literal and an exponent sign: accepted")
  local res = call({ query = "!body=escaped_id gpu" })
  eq(res.id, 'a"b\u{e9}', "an escaped id is decoded")
  eq(res.results[1].relevance_score, 2.5, "exponent")
end)

test("image_only_passage_has_no_document", function()
  local res = call({ model = "nvidia_nim/ranking/nvidia/llama-nemotron-rerank-vl-1b-v2",
    documents = { { image = "data:image/png;base64,AA" }, "gpu" }, query = "gpu" })
  for _, r in ipairs(res.results) do
    if r.index == 0 then eq(r.document, nil, "image only") else ok(r.document, "text doc") end
  end
end)

test("meta_names_provider_family_model", function()
  local res = call({ model = h.RANKING })
  eq(res.meta.provider, "nvidia_nim", "provider")
  eq(res.meta.family, "ranking", "family")
  eq(res.meta.model, "nvidia/llama-3.2-nv-rerankqa-1b-v2", "model")
end)

test("bad_response_not_json", function()
  local err = fails({ query = "!malformed gpu" }, "bad_response", 200)
  match(err.message, "not JSON", "says why")
  match(err.message, "rankings", "carries the body's first part")
  eq(err.retryable, false, "not retryable")
end)

test("bad_response_wrong_shape", function()
  fails({ query = "!shape gpu" }, "bad_response", 200)
end)

test("bad_response_index_out_of_range", function()
  local err = fails({ query = "!badindex gpu" }, "bad_response", 200)
  match(err.message, "out of range", "says why")
end)

test("bad_response_repeated_index", function()
  fails({ query = "!dupindex gpu" }, "bad_response", 200)
end)

test("bad_response_non_finite_logit", function()
  fails({ query = "!nan gpu" }, "bad_response", 200)
end)

test("response_size_limit", function()
  local err = fails({ query = "!huge=200000 gpu", max_response_bytes = 100000 }, "bad_response")
  match(err.message, "larger than 100000", "names the limit")
  ok(call({ query = "!huge=200000 gpu" }), "default limit is generous")
end)

test("auth_401_json_and_text", function()
  local err = fails({ api_key = "wrong-key-xyz" }, "auth", 401)
  eq(err.retryable, false, "not retryable")
  spec.no_match(err.message, "wrong-key-xyz", "wrong key not echoed")
  fails({ headers = { Authorization = "" }, api_key = "zzzz" }, "auth", 401)
end)

test("bad_request_400_top_k_on_ranking_path", function()
  -- a full /v1/ranking URL used with the retrieval family sends top_k, which ranking rejects
  local res, err = nim.rerank(h.args({ model = "nvidia_nim/ranking/x", api_base = h.url }))
  eq(res, nil, "unknown ranking model")
  eq(err.type, "not_found", "404 for an unknown model")
  err = fails({ query = "!status=400 gpu" }, "bad_request", 400)
  match(err.message, "injected failure 400", "provider message")
end)

test("bad_request_422_schema", function()
  local err = fails({ query = "!status=422 gpu" }, "bad_request", 422)
  eq(err.retryable, false, "not retryable")
end)

test("bad_request_input_too_long_with_truncate_none", function()
  local long = ("word "):rep(600)
  local err = fails({ model = "nvidia_nim/nvidia/nv-rerankqa-mistral-4b-v3", documents = { long },
    truncate = "NONE" }, "bad_request", 400)
  match(err.message, "exceeds maximum allowed token size 512", "provider message")
  ok(call({ model = "nvidia_nim/nvidia/nv-rerankqa-mistral-4b-v3", documents = { long },
    truncate = "END" }), "END truncates")
end)

test("not_found_404_unknown_model_text_body", function()
  local err = fails({ model = "nvidia_nim/nvidia/no-such-model" }, "not_found", 404)
  match(err.message, "404 page not found", "plain text body")
end)

test("not_found_410_end_of_life_suggests_replacement", function()
  local err = fails({ model = "nvidia_nim/nvidia/llama-3_2-nv-rerankqa-1b-v2" }, "not_found", 410)
  match(err.message, "end of life", "says end of life")
  match(err.message, "llama%-nemotron%-rerank%-1b%-v2", "suggests the replacement")
end)

test("rate_limit_429_with_retry_after", function()
  local err = fails({ query = "!status=429 !retry-after=7 gpu" }, "rate_limit", 429)
  eq(err.retryable, true, "retryable")
  eq(err.retry_after, 7, "retry_after seconds")
  err = fails({ query = "!status=429 gpu" }, "rate_limit", 429)
  eq(err.retry_after, nil, "absent when no header")
end)

test("provider_5xx_retryable", function()
  for _, st in ipairs({ 500, 502, 503, 504 }) do
    local err = fails({ query = ("!status=%d gpu"):format(st) }, "provider", st)
    eq(err.retryable, true, "retryable " .. st)
  end
end)

test("error_bodies_text_and_empty", function()
  local err = fails({ query = "!status=503 !text gpu" }, "provider", 503)
  match(err.message, "injected failure 503", "text body")
  err = fails({ query = "!status=503 !empty gpu" }, "provider", 503)
  match(err.message, "HTTP 503", "empty body still says something")
end)

test("nvcf_202_from_a_server_not_nvidias_is_not_followed_to_nvidias_status_host", function()
  -- without a status URL, polling would carry this call's key to api.nvcf.nvidia.com
  local err = fails({ query = "!202=1 gpu elsewhere" }, "bad_response", 202)
  match(err.message, "not NVIDIA's hosted API", "says why")
  match(err.message, "nvcf_status_url", "and what to set")
end)

test("nvcf_202_is_polled_until_the_result_arrives", function()
  local status_url = h.url .. "/v2/nvcf/pexec/status"
  local res, err = call({ query = "!202=2 " .. h.QUERY, nvcf_status_url = status_url,
    nvcf_poll_interval = 0.05 })
  ok(res, tostring(err))
  eq(res.results[1].index, 2, "the queued job's answer")
  eq(res.meta.nvcf_polls, 3, "two 202 polls, then the result")
  local last = h.last() -- the POST; polls are GETs and carry the key too (or they would 401)
  eq(last.headers["authorization"], "Bearer " .. h.key, "key sent")
end)

test("nvcf_202_without_request_id_is_a_retryable_provider_error", function()
  local err = fails({ query = "!202-noid gpu" }, "provider", 202)
  eq(err.retryable, true, "retryable")
  match(err.message, "not ready", "says why")
end)

test("nvcf_polling_stops_at_the_calls_timeout", function()
  local t0 = nim.now()
  local err = fails({ query = "!202-forever gpu", timeout = 0.5,
    nvcf_status_url = h.url .. "/v2/nvcf/pexec/status" }, "timeout")
  ok(nim.now() - t0 < 5, "gave up at the deadline")
  eq(err.retryable, false, "not retryable: a retry would queue the job again")
  match(err.nvcf_reqid, "^fake%-req%-%d+$", "names the queued request")
end)

-- A poll deferred by nvcf_poll_interval never starts, or lasts, past the call's deadline.
test("nvcf_poll_interval_never_outlasts_the_timeout", function()
  local t0 = nim.now()
  local err = fails({ query = "!202-forever gpu interval", timeout = 1, nvcf_poll_interval = 8,
    nvcf_status_url = h.url .. "/v2/nvcf/pexec/status" }, "timeout")
  ok(nim.now() - t0 < 4, "ended by the 1 s deadline, not after the 8 s interval")
  match(err.message, "next poll %(nvcf_poll_interval 8 s%) would start after the call's "
    .. "timeout of 1 s", "says why")
end)

-- After a 202 the job is queued: a failing status poll is not retried (a retry would POST
-- again and queue a second job), and the message names the poll's URL.
test("a_failed_status_poll_queues_no_second_job", function()
  local stats = function()
    return h.decode((h.sh("curl -s " .. h.q(h.url .. "/_fake/stats")))).nvcf_queued
  end
  local before = stats()
  local status_url = h.url .. "/v2/nvcf/pexec/status"
  local err = fails({ query = "!202-fail=503 gpu requeue", num_retries = 2,
    nvcf_status_url = status_url, nvcf_poll_interval = 0.01 }, "provider", 503)
  eq(stats() - before, 1, "one job queued by one call")
  eq(err.retryable, false, "not retryable")
  match(err.message, status_url:gsub("%p", "%%%0") .. "/fake%-req%-%d+", "names the poll URL")
  match(err.message, "status backend unavailable", "and what the server said")
end)

test("nvcf_status_url_from_the_environment", function()
  local code = ("local r, e = nim.rerank{ model = %q, query = '!202=1 gpu', documents = { 'gpu' }, "
    .. "api_base = %q, api_key = %q, nvcf_poll_interval = 0.05 } "
    .. "print(r and r.meta.nvcf_polls or tostring(e))")
    :format(h.RETRIEVAL, h.url, h.key)
  local status_url = h.url .. "/v2/nvcf/pexec/status/"
  local out = h.sh(("NIMRANK_NVCF_STATUS_URL=%s %s -e %s"):format(h.q(status_url), h.nimrank,
    h.q(code)))
  eq(out, "2\n", "polled through the URL from NIMRANK_NVCF_STATUS_URL (trailing / ok)")
end)

test("timeout", function()
  local t0 = os.clock()
  local err = fails({ query = "!delay=3000 gpu", timeout = 0.3 }, "timeout", 0)
  eq(err.retryable, true, "retryable")
  ok(os.clock() - t0 < 1, "no busy wait while blocked")
end)

test("connection_refused", function()
  local err = fails({ api_base = "http://127.0.0.1:1" }, "connection", 0)
  eq(err.retryable, true, "retryable")
end)

test("connection_dropped", function()
  fails({ query = "!drop gpu" }, "connection", 0)
end)

test("key_never_appears_even_if_provider_echoes_it", function()
  local err = fails({ query = "!echo-auth gpu" }, "bad_request", 400)
  match(err.message, "%[redacted%]", "redacted")
end)

test("tostring_is_readable", function()
  local _, err = call({ query = "!status=429 gpu" })
  match(tostring(err), "^nim: rate_limit %(HTTP 429%): injected failure 429", "tostring")
  local _, err2 = call({ api_base = "http://127.0.0.1:1" })
  match(tostring(err2), "^nim: connection: ", "tostring without status")
end)

test("connections_are_reused_across_calls", function()
  local function opened() return h.decode(h.sh("curl -s " .. h.q(h.url
    .. "/_fake/stats"))).connections end
  assert(call()) -- the connection this state will keep
  local before = opened()
  for _ = 1, 50 do ok(call(), "call") end
  local after = opened()
  eq(after - before, 1, "50 calls opened no connection of their own (1 is the stats request)")
end)

-- Easy handles are reused (engine.c): what one transfer set must not reach the next, and
-- no transfer asks for a compressed answer.
test("a_reused_handle_carries_nothing_over_and_asks_no_compression", function()
  local status_url = h.url .. "/v2/nvcf/pexec/status"
  assert(call({ headers = { ["X-One"] = "1" }, query = "first gpu" }))
  -- a POST answered 202, a GET status poll, then POSTs again on the same handles
  assert(call({ query = "!202=1 !202-now gpu reused", nvcf_status_url = status_url,
    nvcf_poll_interval = 0.05 }))
  local ca = os.tmpname() -- any file: a CA bundle is read for https only
  assert(call({ ca_bundle = ca, query = "with a ca gpu" }))
  os.remove(ca)
  assert(call({ query = "!status=503 gpu" }) == nil)
  assert(call({ query = "second gpu" }))
  local last = h.last()
  eq(last.headers["x-one"], nil, "the first call's header stays with it")
  eq(last.headers["accept-encoding"], "identity", "no compressed answer, said explicitly")
  match(last.body, '"text":"second gpu"', "this call's body")
  eq(last.headers["content-length"], tostring(#last.body), "this call's length")
  local poll = h.decode(h.sh("curl -s " .. h.q(h.url .. "/_fake/last-poll")))
  eq(poll.headers["content-length"], nil, "the status poll is a GET without a body")
end)

-- A keep-alive connection that died while idle: libcurl retries on a new one and counts the
-- retry on the easy handle; before libcurl 8.17 only a reset clears that count, and a handle
-- whose count reaches 5 fails ("Connection died, tried 5 times"). Every call here must pass.
test("connections_that_die_while_idle_never_fail_a_call", function()
  for i = 1, 20 do
    local res, err = call({ query = "!drop-reused gpu idle" })
    ok(res, "call " .. i .. ": " .. tostring(err))
  end
end)

-- NVCF polling, hardened: ids that are not ids never reach a URL; polls are spaced; they carry
-- the call's headers and CA store; their failures name the poll's URL.
test("nvcf_request_ids_that_are_not_ids_are_refused", function()
  for _, id in ipairs({ "../../secret?x#y", "a/b", "a%2Fb", "..", ".", "%00", ("x"):rep(200) }) do
    local err = fails({ query = ("!202-reqid=%s gpu"):format(id), nvcf_status_url =
      h.url .. "/v2/nvcf/pexec/status" }, "bad_response", 202)
    match(err.message, "not a request id", id)
  end
end)

test("nvcf_polls_are_spaced_and_carry_the_calls_headers", function()
  local status_url = h.url .. "/v2/nvcf/pexec/status"
  local t0 = nim.now()
  local err = fails({ query = "!202-forever !202-now gpu spaced", timeout = 1.6,
    nvcf_status_url = status_url, headers = { ["X-Trace"] = "t-42" } }, "timeout")
  local took = nim.now() - t0
  ok(took < 3, "ended at the deadline")
  local last = h.decode(h.sh("curl -s " .. h.q(h.url .. "/_fake/last-poll")))
  ok(last.polls <= 2, "a status server answering at once is polled once a second, not "
    .. "in a tight loop: " .. last.polls .. " polls in " .. took .. " s")
  spec.no_match(err.message, h.key, "no key")
  eq(last.headers["x-trace"], "t-42", "the caller's header went with the poll")
  eq(last.headers["authorization"], "Bearer " .. h.key, "and the key")
  ok(last.headers["nvcf-poll-seconds"], "asking the server to hold")
  local res = call({ query = "!202=3 !202-now gpu counted", nvcf_status_url = status_url,
    nvcf_poll_interval = 0.2 })
  eq(res.meta.nvcf_polls, 4, "three 202s then the answer")
end)

test("nvcf_poll_failures_name_the_poll_url", function()
  local err = fails({ query = "!202=1 gpu deadpoll", nvcf_status_url = "http://127.0.0.1:1/status",
    nvcf_poll_interval = 0.05 }, "connection")
  match(err.message, "127.0.0.1:1/status/fake%-req%-", "the poll's URL, not the POST's")
end)
