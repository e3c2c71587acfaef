-- fakenim.lua: the rules of the NIM reranking API (shared/spec/NIM_API.md), for tests.
-- handle(req) -> { status, body, headers = "Name: v\n...", delay_ms, drop }
--
-- Fault injection: directives in the query text, e.g. "!status=503 !retry-after=2 real query".
--   !status=N        answer N (JSON error body)      !retry-after=S  add a Retry-After header
--   !times=K         apply the faults only to the first K requests with this query text
--   !delay=MS        wait before answering           !drop           close without answering
--   !text / !empty   error body as plain text / empty body
--   !malformed       200 with a body that is not JSON
--   !shape           200 with JSON of the wrong shape
--   !badindex        200 with an index out of range  !nan            200 with a NaN logit
--   !dupindex        200 with a repeated index       !huge=N         200 padded to N bytes
--   !id=X            response carries id X           !nousage / !norankings   omit those
--   !usage=N         usage.total_tokens = N          !echo-auth      400 echoing Authorization
--   !echo-escaped=N  400 {"detail": N x's, then Authorization with every byte \u-escaped}
--                    (with !ok: status 200, so the body is shown raw as a bad_response;
--                    with !nul: a \u0000 first, which a C-string search would stop at)
--   !202=N           NVCF: 202 with an NVCF-REQID; GET /v2/nvcf/pexec/status/{id} then
--                    answers 202 N times before the result   !202-noid  202 without an id
--   !202-forever     every status poll answers 202    !202-reqid=X  202 with NVCF-REQID X
--   !202-now         status polls answer 202 at once (no hold)
--   !202-fail=N      status polls answer N (a JSON error body)
-- GET /_fake/last-poll returns the last status poll seen (its headers).
--   !reverse         rankings in reverse order      !ties           every logit equal
--   !body=NAME       200 with one of the hostile or odd bodies in BODIES below
-- A hostile upstream:
--   !trickle=MS      the answer one byte every MS ms  !reset        half the answer, then reset
--   !endless         a chunked body that never ends   !silent       never answers
--   !redirect        302 to another host              !echo         200 whose body echoes the
--   !bigheader=N     a response header of N bytes                    request's headers and body
--   !manyheaders=K   K response headers of 35 000 bytes each
--   !gzip=PATH       the answer is PATH's bytes, sent with Content-Encoding: gzip
-- GET /_fake/last returns the last POST seen (headers and raw body) for assertions;
-- GET /_fake/stats returns {connections = TCP connections accepted so far,
--   nvcf_queued = NVCF jobs queued so far, aborted = answers held by !delay whose client hung
--   up during the delay (the wait then ends at once and nothing is sent)}.
local cjson = require "cjson"

local API_KEY = FAKE.api_key
local MAX_PASSAGES = FAKE.max_passages or 512

-- Hosted retrieval paths: model path -> max tokens, whether images are allowed, end of life.
local RETRIEVAL = {
  ["nvidia/reranking"] = { max_tokens = 512 },
  ["nvidia/nv-rerankqa-mistral-4b-v3"] = { max_tokens = 512 },
  ["nvidia/llama-3_2-nv-rerankqa-1b-v1"] = { max_tokens = 8192 },
  ["nvidia/llama-3_2-nv-rerankqa-1b-v2"] = { eol = true },
  ["nvidia/llama-nemotron-rerank-1b-v2"] = { max_tokens = 8192 },
  ["nvidia/llama-nemotron-rerank-vl-1b-v2"] = { max_tokens = 8192, images = true },
}
-- Models a self-hosted container serves on /v1/ranking (body model names).
local RANKING = {
  ["nvidia/llama-3.2-nv-rerankqa-1b-v2"] = { max_tokens = 8192 },
  ["nvidia/llama-3.2-nv-rerankqa-1b-v1"] = { max_tokens = 8192 },
  ["nvidia/llama-nemotron-rerank-1b-v2"] = { max_tokens = 8192 },
  ["nvidia/llama-nemotron-rerank-vl-1b-v2"] = { max_tokens = 8192, images = true },
  ["nv-rerank-qa-mistral-4b:1"] = { max_tokens = 512 },
  ["nvidia/nv-rerankqa-mistral-4b-v3"] = { max_tokens = 512 },
}
local RANKING_FIELDS = { model = true, query = true, passages = true, truncate = true }
local RETRIEVAL_FIELDS = { model = true, query = true, passages = true, truncate = true,
  top_k = true }

-- 2xx bodies a reader must refuse (or, for empty_list, accept), for !body=NAME.
local BODIES = {
  array = '[{"index":0,"logit":1}]',
  rankings_object = '{"rankings":{"index":0,"logit":1}}',
  empty_object = '{}',
  null_rankings = '{"rankings":null}',
  string_index = '{"rankings":[{"index":"1","logit":1}]}',
  hex_string_index = '{"rankings":[{"index":"0x1","logit":1}]}',
  hex_index = '{"rankings":[{"index":0x1,"logit":1}]}',
  float_index = '{"rankings":[{"index":1.5,"logit":1}]}',
  negative_index = '{"rankings":[{"index":-1,"logit":1}]}',
  leading_zero_index = '{"rankings":[{"index":01,"logit":1}]}',
  hex_logit = '{"rankings":[{"index":0,"logit":0x1}]}',
  string_logit = '{"rankings":[{"index":0,"logit":"1.5"}]}',
  nan_logit = '{"rankings":[{"index":0,"logit":NaN}]}',
  huge_logit = '{"rankings":[{"index":0,"logit":1e999}]}',
  missing_logit = '{"rankings":[{"index":0}]}',
  key_without_value = '{"rankings"}',
  trailing_garbage = '{"rankings":[]} x',
  two_objects = '{"rankings":[]}{"rankings":[]}',
  nul_inside = '{"rankings":[]}\0',
  empty_list = '{"rankings":[],"usage":{"total_tokens":3}}',
  escaped_id = '{"id":"a\\"b\\u00e9","rankings":[{"index":0,"logit":2.5e0}]}',
  -- JSON that a tokenizer alone lets through: separators and literals (all refused)
  missing_comma = '{"rankings":[{"index":0,"logit":1.5}{"index":1,"logit":9}]}',
  double_comma = '{"rankings":[{"index":0,"logit":1.5},,{"index":1,"logit":9}]}',
  leading_comma = '{,"rankings":[{"index":0,"logit":1}]}',
  trailing_comma = '{"rankings":[{"index":0,"logit":1}],}',
  doubled_member_comma = '{"rankings":[{"index":0,"logit":1}],,"id":"a"}',
  bare_word = '{"rankings":[{"index":0,"logit":1}],"x":nonsense}',
  cut_literal = '{"rankings":[{"index":0,"logit":1}],"x":tru}',
  spaced_list = '{"rankings":[{"index":0,"logit":1}],"x":[1 2 3]}',
  spaced_members = '{"rankings":[{"index":0,"logit":1}],"x":{"a":1 "b":2}}',
  trailing_comma_usage = '{"rankings":[{"index":0,"logit":1}],"usage":{"total_tokens":7,}}',
  colon_in_list = '{"rankings":[{"index":0,"logit":1}],"x":[1:2]}',
  raw_control = '{"rankings":[{"index":0,"logit":1}],"id":"a\tb"}',
  -- and what a parser accepts must pass
  literals = '{"rankings":[{"index":0,"logit":-1.5e+2}],"x":[true,false,null,{},[]],"y":"\\n"}',
}

local seen_counts = {}  -- query text -> requests seen (for !times)
local nvcf_jobs, nvcf_next = {}, 0 -- request id -> { polls_left, body }
local last_request = nil
local last_poll = nil

local function json(status, value, extra)
  return { status = status, body = cjson.encode(value),
           headers = "Content-Type: application/json\n" .. (extra or "") }
end

local function text(status, s, extra)
  return { status = status, body = s, headers = "Content-Type: text/plain\n" .. (extra or "") }
end

local function unprocessable(loc, msg)
  return json(422, { detail = { { loc = loc, msg = msg, type = "value_error" } } })
end

local function words(s)
  local out = {}
  for w in s:lower():gmatch("[%w\128-\255]+") do out[#out + 1] = w end
  return out
end

-- Function words carry no relevance in the fake scorer.
local STOP = {}
for w in ("a an and are as at be by for from has have in is it its of on or that the to was "
  .. "what which who with"):gmatch("%a+") do STOP[w] = true end

-- Directives are "!name" or "!name=value" words in the query.
local function directives(q)
  local d = {}
  for name, value in q:gmatch("!([%w%-]+)=?([^%s]*)") do d[name] = value end
  return d, (q:gsub("![%w%-]+=?[^%s]*", " "))
end

-- Deterministic and per-passage (no corpus statistics), so batching never changes a score:
-- log-damped overlap of query terms, less a small length penalty, rounded like fp16 logits.
local function score(qterms, passage_words)
  local tf = {}
  for _, w in ipairs(passage_words) do
    if qterms[w] then tf[w] = (tf[w] or 0) + 1 end
  end
  local s = 0
  for _, n in pairs(tf) do s = s + 1 + math.log(n) end
  s = 2.5 * s - 4 - 0.0005 * #passage_words
  return math.floor(s * 1024 + 0.5) / 1024
end

local function check_auth(req)
  if not API_KEY then return nil end
  local h = req.headers["authorization"]
  if not h then
    return text(401, "Unauthorized", 'WWW-Authenticate: Bearer realm="nvidia"\n')
  end
  if h ~= "Bearer " .. API_KEY then
    return json(401, { status = 401, title = "Unauthorized", detail = "Authentication failed" })
  end
end

local function validate(body, family, model_info)
  if type(body) ~= "table" then return unprocessable({ "body" }, "expected an object") end
  local allowed = family == "ranking" and RANKING_FIELDS or RETRIEVAL_FIELDS
  local extra = {}
  for k in pairs(body) do if not allowed[k] then extra[#extra + 1] = tostring(k) end end
  table.sort(extra)
  if #extra > 0 then
    if family == "ranking" then
      return json(400, { error = extra[1] ..
        ": unknown field, expected one of model, query, passages, truncate" })
    end
    return unprocessable({ "body", extra[1] }, "extra fields not permitted")
  end
  if type(body.model) ~= "string" or body.model == "" then
    return unprocessable({ "body", "model" }, "field required")
  end
  if type(body.query) ~= "table" or type(body.query.text) ~= "string" then
    return unprocessable({ "body", "query", "text" }, "field required")
  end
  local p = body.passages
  if type(p) ~= "table" or #p == 0 or next(p, #p > 0 and #p or nil) ~= nil then
    return unprocessable({ "body", "passages" }, "ensure this value has at least 1 items")
  end
  if #p > MAX_PASSAGES then
    return unprocessable({ "body", "passages" },
      ("ensure this value has at most %d items"):format(MAX_PASSAGES))
  end
  for i, item in ipairs(p) do
    if type(item) ~= "table" then
      return unprocessable({ "body", "passages", i - 1 }, "expected an object")
    end
    for k in pairs(item) do
      if k ~= "text" and not (k == "image" and model_info.images) then
        return unprocessable({ "body", "passages", i - 1, k }, "extra fields not permitted")
      end
    end
    if item.text ~= nil and type(item.text) ~= "string" then
      return unprocessable({ "body", "passages", i - 1, "text" }, "str type expected")
    end
    if item.text == nil and item.image == nil then
      return unprocessable({ "body", "passages", i - 1, "text" }, "field required")
    end
  end
  if body.truncate ~= nil and body.truncate ~= "NONE" and body.truncate ~= "END" then
    return unprocessable({ "body", "truncate" }, "value is not a valid enumeration member; " ..
      "permitted: 'NONE', 'END'")
  end
  if body.top_k ~= nil and (math.type(body.top_k) == nil or body.top_k < 1
      or body.top_k ~= math.floor(body.top_k)) then
    return unprocessable({ "body", "top_k" }, "ensure this value is greater than or equal to 1")
  end
end

local function injected(d, req)
  local status = tonumber(d.status)
  if d["echo-auth"] then
    return text(400, "bad request from " .. (req.headers["authorization"] or "nobody"))
  end
  if d["echo-escaped"] then -- the Authorization header, every byte \u-escaped, after N x's
    local esc = (req.headers["authorization"] or ""):gsub(".", function(c)
      return ("\\u%04x"):format(c:byte())
    end)
    return { status = d.ok and 200 or 400, headers = "Content-Type: application/json\n",
             body = '{"detail":"' .. (d.nul and "x\\u0000" or "")
               .. ("x"):rep(tonumber(d["echo-escaped"]) or 0) .. esc .. '"}' }
  end
  if d["202-noid"] then return { status = 202, body = "", headers = "" } end
  if d["202-reqid"] then
    return { status = 202, body = "", headers = "NVCF-REQID: " .. d["202-reqid"] .. "\n" }
  end
  if not status then return nil end
  local extra = d["retry-after"] and ("Retry-After: " .. d["retry-after"] .. "\n") or ""
  if d.empty then return { status = status, body = "", headers = extra } end
  if d.text then return text(status, "injected failure " .. status, extra) end
  return json(status, { error = { message = "injected failure " .. status } }, extra)
end

-- A hostile upstream's answers (see the list at the top), or nil.
local function hostile(d, req, answer)
  if d.silent then return { status = 200, body = "", headers = "", delay_ms = 600000 } end
  if d.redirect then
    return { status = 302, body = "", headers = "Location: http://192.0.2.1:9/steal\n" }
  end
  if d.echo then
    local hs = {}
    for k, v in pairs(req.headers) do hs[#hs + 1] = k .. ": " .. v end
    table.sort(hs)
    return text(200, table.concat(hs, "\n") .. "\n\n" .. req.body)
  end
  if d.bigheader then
    return json(200, answer, "X-Big: " .. ("b"):rep(tonumber(d.bigheader)) .. "\n")
  end
  if d.manyheaders then
    local hs = {}
    for i = 1, tonumber(d.manyheaders) do
      hs[i] = ("X-Many-%d: %s\n"):format(i, ("m"):rep(35000))
    end
    return json(200, answer, table.concat(hs))
  end
  if d.gzip then
    return { status = 200, body = "", file = d.gzip,
             headers = "Content-Type: application/json\nContent-Encoding: gzip\n" }
  end
  local r = json(200, answer)
  if d.trickle then r.stream, r.trickle_ms = "trickle", tonumber(d.trickle) return r end
  if d.reset then r.stream = "reset" return r end
  if d.endless then r.stream = "endless" return r end
end

local function rerank(req, family, model_info, body)
  local d, qtext = directives(body.query.text)
  local n = (seen_counts[body.query.text] or 0) + 1
  seen_counts[body.query.text] = n
  local active = not d.times or n <= tonumber(d.times)
  local delay = tonumber(d.delay)
  local function with_delay(r) r.delay_ms = delay or r.delay_ms; return r end
  if active then
    if d.drop then return { drop = true, delay_ms = delay } end
    local h = hostile(d, req, { rankings = { { index = 0, logit = 1 } } })
    if h then return with_delay(h) end
    local r = injected(d, req)
    if r then return with_delay(r) end
    if d.malformed then
      return with_delay({ status = 200, body = '{"rankings": [ {"index": 0, "logit": ',
                          headers = "Content-Type: application/json\n" })
    end
    if d.shape then return with_delay(json(200, { rankings = "nope" })) end
    if d.body and BODIES[d.body] then
      return with_delay({ status = 200, body = BODIES[d.body],
                          headers = "Content-Type: application/json\n" })
    end
  end

  local qwords = words(qtext)
  local qterms = {}
  for _, w in ipairs(qwords) do if not STOP[w] then qterms[w] = true end end
  local rankings, tokens = {}, 0
  for i, p in ipairs(body.passages) do
    local pw = words(p.text or "")
    local pair = #qwords + #pw
    if pair > model_info.max_tokens and body.truncate ~= "END" then
      return json(400, { error = ("Input length %d exceeds maximum allowed token size %d")
        :format(pair, model_info.max_tokens) })
    end
    tokens = tokens + math.min(pair, model_info.max_tokens)
    rankings[i] = { index = i - 1, logit = score(qterms, pw) }
  end
  table.sort(rankings, function(a, b)
    if a.logit ~= b.logit then return a.logit > b.logit end
    return a.index < b.index
  end)
  if body.top_k and body.top_k < #rankings then
    for i = #rankings, body.top_k + 1, -1 do rankings[i] = nil end
  end
  if active and d.ties then
    for _, r in ipairs(rankings) do r.logit = 1.5 end
    table.sort(rankings, function(a, b) return a.index > b.index end)
  end
  if active and d.reverse then
    local n = #rankings
    for i = 1, n // 2 do rankings[i], rankings[n + 1 - i] = rankings[n + 1 - i], rankings[i] end
  end
  local out = { rankings = rankings, usage = { prompt_tokens = tokens, total_tokens = tokens } }
  if active then
    if d.badindex then rankings[1].index = #body.passages + 5 end
    if d.dupindex and rankings[2] then rankings[2].index = rankings[1].index end
    if d.nousage then out.usage = nil end
    if d.usage then out.usage.total_tokens = tonumber(d.usage) end
    if d.norankings then out.rankings = nil end
    if d.id then out.id = d.id end
  end
  if active and (d["202"] or d["202-forever"] or d["202-fail"]) then -- queued: wait for a poll
    nvcf_next = nvcf_next + 1
    local id = ("fake-req-%d"):format(nvcf_next)
    nvcf_jobs[id] = { polls_left = d["202-forever"] and math.huge or (tonumber(d["202"]) or 0),
                      body = cjson.encode(out), hold = not d["202-now"],
                      fail = tonumber(d["202-fail"]) }
    return with_delay({ status = 202, body = "", headers = "NVCF-REQID: " .. id .. "\n" })
  end
  local r
  if active and d.nan then
    r = { status = 200, body = cjson.encode(out):gsub('"logit":[^,}]+', '"logit":NaN', 1),
          headers = "Content-Type: application/json\n" }
  else
    r = json(200, out)
  end
  if active and d.huge then
    r.body = r.body:sub(1, -2) .. ',"pad":"' .. ("x"):rep(tonumber(d.huge)) .. '"}'
  end
  return with_delay(r)
end

local function route(req)
  local path = req.path
  if req.method == "GET" then
    if path == "/v1/health/live" or path == "/v1/health/ready" then
      return json(200, { object = "health.response", message = "Service is live." })
    elseif path == "/v1/models" then
      local data = {}
      for id in pairs(RANKING) do data[#data + 1] = { id = id, object = "model" } end
      table.sort(data, function(a, b) return a.id < b.id end)
      return json(200, { object = "list", data = data })
    elseif path == "/_fake/last" then
      return json(200, last_request or {})
    elseif path == "/_fake/last-poll" then
      return json(200, last_poll or {})
    elseif path:match("^/v2/nvcf/pexec/status/") then
      local denied = check_auth(req)
      if denied then return denied end
      local id = path:match("^/v2/nvcf/pexec/status/(.+)$")
      local n = (last_poll and last_poll.path == path) and last_poll.polls + 1 or 1
      last_poll = { path = path, headers = req.headers, polls = n }
      local job = nvcf_jobs[id]
      if not job then return json(404, { error = "unknown request id" }) end
      if job.fail then return json(job.fail, { detail = "status backend unavailable" }) end
      if job.polls_left > 0 then
        job.polls_left = job.polls_left - 1
        -- a real status call holds up to NVCF-POLL-SECONDS; a short hold keeps tests fast
        return { status = 202, body = "", headers = "NVCF-REQID: " .. id .. "\n",
                 delay_ms = job.hold and 20 or 0 }
      end
      nvcf_jobs[id] = nil
      return { status = 200, body = job.body, headers = "Content-Type: application/json\n" }
    elseif path == "/_fake/stats" then
      return json(200, { connections = FAKE.connections(), nvcf_queued = nvcf_next,
                         aborted = FAKE.aborted() })
    end
    return text(404, "404 page not found")
  end
  if req.method ~= "POST" then return text(405, "method not allowed") end

  local family, info
  if path == "/v1/ranking" then
    family = "ranking"
  else
    local model_path = path:match("^/v1/retrieval/(.+)/reranking$")
    if path == "/v1/retrieval/nvidia/reranking" then model_path = "nvidia/reranking" end
    info = model_path and RETRIEVAL[model_path]
    if not info then return text(404, "404 page not found") end
    family = "retrieval"
  end
  last_request = { path = path, headers = req.headers, body = req.body }
  local denied = check_auth(req)
  if denied then return denied end
  if info and info.eol then
    return json(410, { status = 410, title = "Gone",
      detail = "This model has reached its end of life and is no longer available." })
  end
  if req.too_large then return text(413, "request entity too large") end
  local ok, body = pcall(cjson.decode, req.body)
  if not ok then return unprocessable({ "body" }, "JSON decode error") end
  if family == "ranking" then
    info = type(body) == "table" and RANKING[body.model]
  end
  local bad = validate(body, family, info or {})
  if bad then return bad end
  if not info then
    return json(404, { error = ("Model '%s' not found"):format(tostring(body.model)) })
  end
  return rerank(req, family, info, body)
end

function handle(req)
  return route(req)
end
