-- fakenim.lua: the rules of the NIM reranking API (shared/spec/NIM_API.md), for tests.
-- handle(req) -> { status, body, headers = "Name: v\n...", delay_ms, drop }
--
-- Fault injection: directives in the query text, e.g. "!status=503 !retry-after=2 real query".
--   !status=N        answer N (JSON error body)      !retry-after=S  add a Retry-After header
--   !times=K         apply the faults only to the first K requests with this query text
--   !delay=MS        wait before answering           !drop           close without answering
--   !drop-reused     close without answering a request that is not its connection's first
--                    (a keep-alive connection that died while idle, as the client sees it)
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
-- GET /_fake/last returns the last POST seen, whatever its path (headers and raw body), for
-- assertions; GET /_fake/last/NAME the last POST routed to dialect NAME (nim, cohere, ...).
-- GET /_fake/stats returns {connections = TCP connections accepted so far,
--   nvcf_queued = NVCF jobs queued so far, aborted = answers held by !delay whose client hung
--   up during the delay (the wait then ends at once and nothing is sent),
--   requests = {dialect = POSTs routed to it}, e.g. {nim = 12, cohere = 3}}.
--
-- Other providers' dialects, on the same server. The first path segment names the dialect and
-- the provider's own path follows, so a test sets api_base = FAKE_URL .. "/cohere" and so on:
--   /cohere/v1/rerank  /cohere/v2/rerank    Cohere v1 / v2        errors {"message"}
--   /azure/v1/rerank   /azure/v2/rerank     Azure AI (Cohere's API; model optional)
--   /jina/v1/rerank                         Jina AI               errors {"detail"}, 422 lists
--   /voyage/v1/rerank                       Voyage AI             errors {"detail": "..."}
--   /together/v1/rerank                     Together AI           errors {"error":{message,type}}
--   /infinity/rerank                        Infinity              errors {"detail"}, 422 lists
--   /vllm/rerank  /vllm/v1/rerank  /vllm/v2/rerank  vLLM          errors {"error":{...,code}}
--   /tei/rerank                             HF Text Embeddings Inference: {"error","error_type"}
--                                           (and axum's plain-text 4xx for unreadable bodies)
-- Rules common to all: with --api-key, "Authorization: Bearer KEY" (the scheme in any case;
-- TEI compares the whole header) else 401 in the provider's shape (TEI: empty body); without
-- it, no auth. A Content-Type other than application/json is refused (a missing one too,
-- except by the FastAPI servers jina, voyage, infinity, which read the body as JSON anyway).
-- query must be a non-empty string (TEI: any string); documents (TEI: texts) a non-empty list
-- of strings, or of {text} objects for cohere v1, azure v1, jina and together (cohere v1,
-- azure v1 and together: any object whose rank_fields are strings). The NIM body's `passages`
-- is refused everywhere but TEI, whose serde ignores unknown fields (a NIM body still fails
-- there: it has no texts). Most documents: 1000 (cohere, voyage; a chosen limit for the
-- rest); TEI 32 (its --max-client-batch-size default), or --max-passages when that is given.
--   cohere: model required; top_n >= 1; return_documents bool; rank_fields (v1, objects);
--           v1 refuses max_tokens_per_doc, and documents x max_chunks_per_doc > 10000;
--           v2 refuses max_chunks_per_doc; documents must be strings in v2; passages, texts,
--           top_k refused. Answer {id, results[{index, relevance_score, document?}],
--           meta{api_version{version}, billed_units{search_units = ceil(docs / 100)}}}.
--   azure:  as cohere, model optional.
--   jina:   model required; top_n; return_documents (default true: documents echoed);
--           passages, texts, top_k refused (422 extra_forbidden). Answer {model,
--           usage{total_tokens}, results[...]}: no id, like the real API.
--   voyage: only model (required), query, documents, top_k, return_documents, truncation:
--           any other field is 400 "Argument 'X' is not supported by our API" (top_n too);
--           "" documents 400 "Input cannot contain empty strings or empty lists"; top_k may
--           exceed the documents. Answer {object:"list", data[{index, relevance_score,
--           document? (a string)}], model, usage{total_tokens}}.
--   together: model required; top_n; rank_fields; max_chunks_per_doc, max_tokens_per_doc,
--           top_k, passages, texts refused. Answer {id, object:"rerank", model, results,
--           usage{prompt_tokens, completion_tokens, total_tokens}}.
--   infinity: model optional; strings only; top_n; raw_scores (relevance_score = the logit);
--           return_documents (document as a string). Answer {object:"rerank", id, created,
--           model, results, usage{prompt_tokens, total_tokens}}.
--   vllm:   model optional; strings only; top_n (0 = all); other fields ignored but passages.
--           Answer {id, model, usage{total_tokens}, results[{index, document{text},
--           relevance_score}]}; 401 is {"error":"Unauthorized"}.
--   tei:    texts, query, raw_scores, return_text, truncate, truncation_direction (Left or
--           Right); model and top_n ignored (every text comes back). Answer: a bare list
--           [{index, score, text?}], score descending. Empty texts 400 error_type "empty";
--           too many 413 "batch size N > maximum allowed batch size M" ("validation").
-- Scores: the NIM scorer's logit through a logistic, in [0, 1] (TEI raw_scores and Infinity
-- raw_scores: the logit); sorted by score, then index; top_n/top_k applied. Faults: !status
-- (in the dialect's error shape; !text, !empty, !retry-after), !times (counted per query text,
-- across dialects), !delay, !drop, !malformed, !shape, !badindex, !nan, !dupindex, !ties,
-- !reverse, !id, !nousage, !usage=N, !norankings (TEI: []), !huge, !echo-auth, !echo-escaped
-- and the hostile ones; the NVCF (!202...) and !body directives are NIM's only.
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
    if d["drop-reused"] and (req.nth or 1) > 1 then return { drop = true } end
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

-- ---- Other providers' dialects --------------------------------------------------------------
-- The first path segment names the dialect; the provider's own path follows (see the top).
-- Each dialect checks auth, Content-Type and the body as that API does, answers errors in its
-- error shape and successes in its answer shape, scored by the same lexical scorer as NIM.

local requests_seen = {} -- dialect (or "nim") -> POSTs routed to it, for /_fake/stats
local last_by = {}       -- dialect (or "nim") -> the last POST routed to it, for /_fake/last/NAME
local answer_ids = 0

local function logistic(x) return 1 / (1 + math.exp(-x)) end

local function is_list(t)
  if type(t) ~= "table" then return false end
  local n = #t
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return true
end

local function is_int(v, min)
  return type(v) == "number" and v == math.floor(v) and v >= min and v < 2^53
end

local function present(v) return v ~= nil and v ~= cjson.null end

-- A problem found in a request: code, field, and what the message needs. Dialects word it.
local function describe(p)
  local f = p.field
  if p.code == "json" then return "body is not valid JSON"
  elseif p.code == "not_object" then return "request body must be a JSON object"
  elseif p.code == "missing" then return f .. " is required"
  elseif p.code == "type" then return f .. " must be " .. p.want
  elseif p.code == "empty_query" then return "query must not be empty"
  elseif p.code == "empty_docs" then return "list of " .. f .. " must not be empty"
  elseif p.code == "empty_string" then return f .. " must not contain empty strings"
  elseif p.code == "doc_type" then return ("%s[%d] must be %s"):format(f, p.index, p.want)
  elseif p.code == "too_many" then
    return ("too many %s: %d, the maximum is %d"):format(f, p.n, p.max)
  elseif p.code == "range" then
    return f .. " must be " .. (p.min == 0 and "a non-negative" or "a positive") .. " integer"
  elseif p.code == "unsupported" then return f .. " is not a supported parameter"
  elseif p.code == "chunks" then
    return ("the number of documents times max_chunks_per_doc (%d) exceeds 10000"):format(p.n)
  elseif p.code == "enum" then return f .. " must be one of " .. p.want
  end
  return "invalid request"
end

-- Checks a decoded body against rules R; returns the normalized request or nil, problem.
--   R.docs: "documents" or "texts"     R.model: "required", "optional" or nil (ignored)
--   R.allowed: the only fields taken (else R.reject: fields refused outright)
--   R.objects: documents may be objects ({text}, or any with rank_fields)
--   R.no_empty: "" documents refused   R.empty_query_ok   R.max: most documents
--   R.top: "top_n"/"top_k"/nil, at least R.top_min (1)   R.bools, R.ints (positive), R.enums
local function check_body(body, R)
  if type(body) ~= "table" or #body > 0 then return nil, { code = "not_object" } end
  local keys = {}
  for k in pairs(body) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if (R.allowed and not R.allowed[k]) or (R.reject and R.reject[k]) then
      return nil, { code = "unsupported", field = k }
    end
  end
  local norm = {}
  if R.model then
    local m = body.model
    if m == nil and R.model == "required" then return nil, { code = "missing", field = "model" } end
    if present(m) or R.model == "required" then
      if type(m) ~= "string" then
        return nil, { code = "type", field = "model", want = "a string" }
      end
      if m == "" and R.model == "required" then
        return nil, { code = "missing", field = "model" }
      end
      norm.model = m
    end
  end
  local q = body.query
  if q == nil then return nil, { code = "missing", field = "query" } end
  if type(q) ~= "string" then return nil, { code = "type", field = "query", want = "a string" } end
  if q == "" and not R.empty_query_ok then return nil, { code = "empty_query", field = "query" } end
  norm.query = q
  local f, docs = R.docs, body[R.docs]
  if docs == nil then return nil, { code = "missing", field = f } end
  if not is_list(docs) then return nil, { code = "type", field = f, want = "a list" } end
  if #docs == 0 then return nil, { code = "empty_docs", field = f } end
  local rank_fields = R.rank_fields and body.rank_fields or nil
  if present(rank_fields) then
    if not is_list(rank_fields) then
      return nil, { code = "type", field = "rank_fields", want = "a list of strings" }
    end
    for _, s in ipairs(rank_fields) do
      if type(s) ~= "string" then
        return nil, { code = "type", field = "rank_fields", want = "a list of strings" }
      end
    end
  else
    rank_fields = nil
  end
  norm.raw, norm.texts = docs, {}
  for i, d in ipairs(docs) do
    local t
    if type(d) == "string" then
      if d == "" and R.no_empty then
        return nil, { code = "empty_string", field = f, index = i - 1 }
      end
      t = d
    elseif R.objects and type(d) == "table" and not is_list(d) then
      if rank_fields and R.rank_fields then
        local parts = {}
        for _, k in ipairs(rank_fields) do
          if type(d[k]) == "string" then parts[#parts + 1] = k .. ": " .. d[k] end
        end
        t = #parts > 0 and table.concat(parts, "\n") or nil
      end
      if not t then t = type(d.text) == "string" and d.text or nil end
      if not t then
        return nil, { code = "doc_type", field = f, index = i - 1,
                      want = "an object with a text field" }
      end
    else
      return nil, { code = "doc_type", field = f, index = i - 1,
                    want = R.objects and "a string or an object with a text field" or "a string" }
    end
    norm.texts[i] = t
  end
  if #docs > R.max then return nil, { code = "too_many", field = f, n = #docs, max = R.max } end
  if R.top and present(body[R.top]) then
    local min = R.top_min or 1
    if not is_int(body[R.top], min) then
      return nil, { code = "range", field = R.top, min = min }
    end
    norm.top = math.tointeger(body[R.top])
  end
  for _, k in ipairs(R.bools or {}) do
    if present(body[k]) and type(body[k]) ~= "boolean" then
      return nil, { code = "type", field = k, want = "a boolean" }
    end
  end
  for _, k in ipairs(R.ints or {}) do
    if present(body[k]) and not is_int(body[k], 1) then
      return nil, { code = "range", field = k, min = 1 }
    end
  end
  for k, values in pairs(R.enums or {}) do
    if present(body[k]) and not values[body[k]] then
      local names = {}
      for v in pairs(values) do names[#names + 1] = v end
      table.sort(names)
      return nil, { code = "enum", field = k, want = table.concat(names, ", ") }
    end
  end
  norm.ret = body.return_documents
  if norm.ret == cjson.null then norm.ret = nil end
  return norm
end

local function cohere_like_docs(norm, r, objects_whole)
  if norm.ret ~= true then return nil end
  local raw = norm.raw[r.doc + 1]
  if type(raw) == "table" and objects_whole then return raw end
  return { text = norm.texts[r.doc + 1] }
end

local function next_id(prefix)
  answer_ids = answer_ids + 1
  return ("%s-%06d"):format(prefix, answer_ids)
end

local function search_units(norm) return math.max(1, (#norm.texts + 99) // 100) end

-- Cohere (and Azure AI, which serves Cohere's API): {"message": ...} errors, v1 and v2.
local function cohere_dialect(name, model_rule)
  local function err(status, msg, extra)
    return json(status, { message = msg }, extra)
  end
  local base_reject = { passages = true, texts = true, top_k = true, return_text = true,
    raw_scores = true }
  local function rules(variant)
    local reject = {}
    for k in pairs(base_reject) do reject[k] = true end
    reject[variant == "v1" and "max_tokens_per_doc" or "max_chunks_per_doc"] = true
    return { docs = "documents", model = model_rule, reject = reject, objects = variant == "v1",
      rank_fields = variant == "v1", max = 1000, top = "top_n", bools = { "return_documents" },
      ints = { variant == "v1" and "max_chunks_per_doc" or "max_tokens_per_doc" } }
  end
  return {
    paths = { ["/v1/rerank"] = "v1", ["/v2/rerank"] = "v2" },
    err = err,
    auth = function(missing)
      return err(401, missing and "no api key supplied" or "invalid api token")
    end,
    ctype = function()
      return err(400, "invalid request: Content-Type must be application/json")
    end,
    problem = function(p)
      if p.code == "unsupported" and (p.field == "max_chunks_per_doc"
          or p.field == "max_tokens_per_doc") then
        return err(400, ("invalid request: %s is not supported by this API version")
          :format(p.field))
      end
      return err(400, "invalid request: " .. describe(p))
    end,
    rules = rules,
    extra_check = function(body, norm, variant)
      local chunks = body.max_chunks_per_doc
      if variant == "v1" and present(chunks) and #norm.texts * chunks > 10000 then
        return { code = "chunks", n = math.tointeger(#norm.texts * chunks) }
      end
    end,
    list_key = "results",
    answer = function(ranked, norm, tokens, variant)
      local results = {}
      for i, r in ipairs(ranked) do
        results[i] = { index = r.index, relevance_score = logistic(r.logit),
                       document = cohere_like_docs(norm, r, variant == "v1") }
      end
      return { id = next_id("fake-" .. name), results = results,
               meta = { api_version = { version = variant == "v1" and "1" or "2",
                                        is_experimental = false },
                        billed_units = { search_units = search_units(norm) } } }
    end,
  }
end

-- FastAPI's 422: {"detail": [{type, loc, msg, input}]} (Jina, Infinity)
local PYDANTIC = {
  json = { "json_invalid", "JSON decode error" },
  not_object = { "model_attributes_type",
                 "Input should be a valid dictionary or object to extract fields from" },
  missing = { "missing", "Field required" },
  empty_query = { "string_too_short", "String should have at least 1 character" },
  range = { "greater_than", "Input should be greater than 0" },
  unsupported = { "extra_forbidden", "Extra inputs are not permitted" },
}
local function pydantic(p, body)
  local kind = PYDANTIC[p.code]
  local loc = { "body" }
  if p.field then loc[2] = p.field end
  if p.index then loc[3] = p.index end
  local t, msg
  if kind then
    t, msg = kind[1], kind[2]
  elseif p.code == "type" or p.code == "doc_type" then
    local list = p.want == "a list" or p.want:find("^a list")
    t = list and "list_type" or (p.want == "a boolean" and "bool_type" or "string_type")
    msg = list and "Input should be a valid list" or (p.want == "a boolean"
      and "Input should be a valid boolean" or "Input should be a valid string")
  elseif p.code == "empty_docs" then
    t, msg = "too_short", "List should have at least 1 item after validation, not 0"
  elseif p.code == "too_many" then
    t, msg = "too_long", ("List should have at most %d items after validation, not %d")
      :format(p.max, p.n)
  else
    t, msg = "value_error", "Value error, " .. describe(p)
  end
  local input = type(body) == "table" and p.field and body[p.field]
  if p.index and type(input) == "table" then input = input[p.index + 1] end
  local detail = { type = t, loc = loc, msg = msg }
  if input ~= nil and input ~= false then detail.input = input end
  return json(422, { detail = { detail } })
end

local function fastapi_dialect(name, opts)
  local function err(status, msg, extra) return json(status, { detail = msg }, extra) end
  return {
    paths = opts.paths,
    fastapi = true, -- a missing Content-Type is read as JSON all the same
    err = err,
    auth = function(missing)
      return err(401, missing and "Not authenticated: no API key supplied"
        or "Unauthorized: invalid API key")
    end,
    ctype = function() return pydantic({ code = "not_object" }) end,
    problem = pydantic,
    rules = function() return opts.rules end,
    list_key = "results",
    answer = opts.answer,
  }
end

local DIALECTS = {
  cohere = cohere_dialect("cohere", "required"),
  azure = cohere_dialect("azure", "optional"), -- a serverless endpoint serves one model

  jina = fastapi_dialect("jina", {
    paths = { ["/v1/rerank"] = "v1" },
    rules = { docs = "documents", model = "required", objects = true, max = 1000,
              top = "top_n", bools = { "return_documents" },
              reject = { passages = true, texts = true, top_k = true } },
    answer = function(ranked, norm, tokens)
      local results = {}
      for i, r in ipairs(ranked) do
        local raw = norm.raw[r.doc + 1]
        results[i] = { index = r.index, relevance_score = logistic(r.logit),
                       document = norm.ret ~= false and (type(raw) == "table" and raw
                         or { text = raw }) or nil }
      end
      return { model = norm.model, usage = { total_tokens = tokens }, results = results }
    end,
  }),

  infinity = fastapi_dialect("infinity", {
    paths = { ["/rerank"] = "v1" },
    rules = { docs = "documents", model = "optional", max = 1000, top = "top_n",
              bools = { "return_documents", "raw_scores" },
              reject = { passages = true, texts = true, top_k = true } },
    answer = function(ranked, norm, tokens)
      local results = {}
      for i, r in ipairs(ranked) do
        results[i] = { index = r.index,
                       relevance_score = norm.raw_scores and r.logit or logistic(r.logit),
                       document = norm.ret == true and norm.texts[r.doc + 1] or nil }
      end
      return { object = "rerank", id = next_id("infinity"), created = os.time(),
               model = norm.model or "default/not-specified", results = results,
               usage = { prompt_tokens = tokens, total_tokens = tokens } }
    end,
  }),

  voyage = {
    paths = { ["/v1/rerank"] = "v1" },
    fastapi = true,
    err = function(status, msg, extra) return json(status, { detail = msg }, extra) end,
    auth = function(missing)
      return json(401, { detail = missing and "No API key provided."
        or "Provided API key is invalid." })
    end,
    ctype = function() return json(400, { detail = "Request body must be JSON." }) end,
    problem = function(p)
      local msg
      if p.code == "unsupported" then
        msg = ("Argument '%s' is not supported by our API"):format(p.field)
      elseif p.code == "empty_string" or p.code == "empty_docs" then
        msg = "Input cannot contain empty strings or empty lists"
      elseif p.code == "too_many" then
        msg = ("The number of documents (%d) exceeds the limit of %d."):format(p.n, p.max)
      else
        msg = "Request is invalid: " .. describe(p)
      end
      return json(400, { detail = msg })
    end,
    rules = function()
      return { docs = "documents", model = "required", no_empty = true, max = 1000,
               top = "top_k", bools = { "return_documents", "truncation" },
               allowed = { model = true, query = true, documents = true, top_k = true,
                           return_documents = true, truncation = true } }
    end,
    list_key = "data",
    answer = function(ranked, norm, tokens)
      local data = {}
      for i, r in ipairs(ranked) do
        data[i] = { index = r.index, relevance_score = logistic(r.logit),
                    document = norm.ret == true and norm.texts[r.doc + 1] or nil }
      end
      return { object = "list", data = data, model = norm.model,
               usage = { total_tokens = tokens } }
    end,
  },

  together = {
    paths = { ["/v1/rerank"] = "v1" },
    err = function(status, msg, extra)
      local kind = status == 429 and "rate_limit_exceeded" or status >= 500 and "server_error"
        or "invalid_request_error"
      return json(status, { error = { message = msg, type = kind,
        param = cjson.null, code = cjson.null } }, extra)
    end,
    auth = function()
      return json(401, { error = { message = "Invalid API key provided. You can find your " ..
        "API key at https://api.together.xyz/settings/api-keys.",
        type = "invalid_request_error", param = cjson.null, code = "invalid_api_key" } })
    end,
    ctype = function()
      return json(400, { error = { message = "Content-Type must be application/json",
        type = "invalid_request_error", param = cjson.null, code = cjson.null } })
    end,
    problem = function(p)
      return json(400, { error = { message = describe(p), type = "invalid_request_error",
        param = p.field or cjson.null, code = cjson.null } })
    end,
    rules = function()
      return { docs = "documents", model = "required", objects = true, rank_fields = true,
               max = 1000, top = "top_n", bools = { "return_documents" },
               reject = { passages = true, texts = true, top_k = true,
                          max_chunks_per_doc = true, max_tokens_per_doc = true } }
    end,
    list_key = "results",
    answer = function(ranked, norm, tokens)
      local results = {}
      for i, r in ipairs(ranked) do
        results[i] = { index = r.index, relevance_score = logistic(r.logit),
                       document = cohere_like_docs(norm, r, false) }
      end
      return { id = next_id("together"), object = "rerank", model = norm.model,
               results = results,
               usage = { prompt_tokens = tokens, completion_tokens = 0, total_tokens = tokens } }
    end,
  },

  vllm = {
    paths = { ["/rerank"] = "rerank", ["/v1/rerank"] = "v1", ["/v2/rerank"] = "v2" },
    err = function(status, msg, extra)
      local kind = status == 404 and "NotFoundError" or status == 429 and "TooManyRequestsError"
        or status >= 500 and "InternalServerError" or "BadRequestError"
      return json(status, { error = { message = msg, type = kind,
        param = cjson.null, code = status } }, extra)
    end,
    auth = function() return json(401, { error = "Unauthorized" }) end,
    ctype = function()
      return json(400, { error = { message = "Unsupported Media Type: Only " ..
        "'application/json' is allowed", type = "BadRequestError", param = cjson.null,
        code = 400 } })
    end,
    problem = function(p)
      return json(400, { error = { message = describe(p), type = "BadRequestError",
        param = cjson.null, code = 400 } })
    end,
    rules = function() -- other unknown fields are ignored (vLLM logs and drops them)
      return { docs = "documents", model = "optional", max = 1000, top = "top_n", top_min = 0,
               reject = { passages = true } }
    end,
    list_key = "results",
    answer = function(ranked, norm, tokens)
      local results = {}
      for i, r in ipairs(ranked) do
        results[i] = { index = r.index, relevance_score = logistic(r.logit),
                       document = { text = norm.texts[r.doc + 1] } }
      end
      return { id = next_id("rerank"), model = norm.model or "fake-vllm-reranker",
               usage = { total_tokens = tokens }, results = results }
    end,
  },

  -- Text Embeddings Inference: axum. Its own checks answer {"error", "error_type"}; a body
  -- serde cannot read is refused by axum's Json extractor as plain text; unknown fields (model,
  -- top_n) are ignored, so every result comes back (TEI does not apply top_n).
  tei = {
    paths = { ["/rerank"] = "v1" },
    err = function(status, msg, extra)
      return json(status, { error = msg, error_type = status == 429 and "overloaded"
        or status >= 500 and "backend" or "validation" }, extra)
    end,
    auth = function() return { status = 401, body = "", headers = "" } end,
    ctype = function()
      return text(415, "Expected request with `Content-Type: application/json`")
    end,
    problem = function(p)
      if p.code == "empty_docs" then
        return json(400, { error = "`texts` cannot be empty", error_type = "empty" })
      elseif p.code == "too_many" then
        return json(413, { error = ("batch size %d > maximum allowed batch size %d")
          :format(p.n, p.max), error_type = "validation" })
      elseif p.code == "json" then
        return text(400, "Failed to parse the request body as JSON: " .. (p.detail or ""))
      end
      local what
      if p.code == "missing" then what = ("missing field `%s`"):format(p.field)
      elseif p.code == "enum" then
        what = ("unknown variant of `%s`, expected `Left` or `Right`"):format(p.field)
      elseif p.code == "not_object" then what = "invalid type: expected struct RerankRequest"
      else what = ("invalid type for `%s`: expected %s"):format(p.field, p.want or "a value") end
      return text(422, "Failed to deserialize the JSON body into the target type: " .. what)
    end,
    rules = function()
      return { docs = "texts", empty_query_ok = true,
               -- --max-client-batch-size: 32 by default; a fake given --max-passages uses that
               max = MAX_PASSAGES == 512 and 32 or MAX_PASSAGES,
               bools = { "raw_scores", "return_text", "truncate" },
               enums = { truncation_direction = { Left = true, Right = true } } }
    end,
    list_key = nil,
    answer = function(ranked, norm)
      local out = {}
      for i, r in ipairs(ranked) do
        out[i] = { index = r.index, score = norm.raw_scores and r.logit or logistic(r.logit),
                   text = norm.return_text and norm.texts[r.doc + 1] or nil }
      end
      return out
    end,
  },
}

local function dialect_auth(D, name, req)
  if not API_KEY then return nil end
  local h = req.headers["authorization"]
  if not h then return D.auth(true) end
  local ok
  if name == "tei" then ok = h == "Bearer " .. API_KEY -- TEI compares the whole header
  else ok = h:match("^[Bb][Ee][Aa][Rr][Ee][Rr] (.*)$") == API_KEY end
  if not ok then return D.auth(false) end
end

local function json_content_type(D, req)
  local ct = req.headers["content-type"]
  if not ct then return D.fastapi == true end
  local media = ct:lower():match("^%s*([^;%s]+)")
  return media == "application/json"
end

-- The faults a dialect honours (the NIM-only NVCF and !body directives excepted).
local function dialect_injected(D, d, req)
  if d["echo-auth"] then
    return text(400, "bad request from " .. (req.headers["authorization"] or "nobody"))
  end
  if d["echo-escaped"] then return injected({ ["echo-escaped"] = d["echo-escaped"],
    ok = d.ok, nul = d.nul }, req) end
  local status = tonumber(d.status)
  if not status then return nil end
  local extra = d["retry-after"] and ("Retry-After: " .. d["retry-after"] .. "\n") or ""
  if d.empty then return { status = status, body = "", headers = extra } end
  if d.text then return text(status, "injected failure " .. status, extra) end
  return D.err(status, "injected failure " .. status, extra)
end

local function dialect_rerank(D, name, variant, req, body, norm)
  local d, qtext = directives(norm.query)
  local n = (seen_counts[norm.query] or 0) + 1
  seen_counts[norm.query] = n
  local active = not d.times or n <= tonumber(d.times)
  local delay = tonumber(d.delay)
  local function with_delay(r) r.delay_ms = delay or r.delay_ms; return r end
  if active and d.drop then return { drop = true, delay_ms = delay } end

  local qwords = words(qtext)
  local qterms = {}
  for _, w in ipairs(qwords) do if not STOP[w] then qterms[w] = true end end
  local ranked, tokens = {}, 0
  for i, t in ipairs(norm.texts) do
    local pw = words(t)
    tokens = tokens + #qwords + #pw
    ranked[i] = { index = i - 1, doc = i - 1, logit = score(qterms, pw) }
  end
  table.sort(ranked, function(a, b)
    if a.logit ~= b.logit then return a.logit > b.logit end
    return a.index < b.index
  end)
  if norm.top and norm.top > 0 and norm.top < #ranked then
    for i = #ranked, norm.top + 1, -1 do ranked[i] = nil end
  end
  if active and d.ties then
    for _, r in ipairs(ranked) do r.logit = 1.5 end
    table.sort(ranked, function(a, b) return a.index > b.index end)
  end
  if active and d.reverse then
    local k = #ranked
    for i = 1, k // 2 do ranked[i], ranked[k + 1 - i] = ranked[k + 1 - i], ranked[i] end
  end
  if active and d.badindex then ranked[1].index = #norm.texts + 5 end
  if active and d.dupindex and ranked[2] then ranked[2].index = ranked[1].index end
  norm.raw_scores = body.raw_scores == true
  norm.return_text = body.return_text == true
  local out = D.answer(ranked, norm, tokens, variant)
  if active then
    if d.id and D.list_key then out.id = d.id end
    if d.nousage then out.usage, out.meta = nil, nil end
    if d.usage then
      if out.usage then out.usage.total_tokens = tonumber(d.usage)
      elseif out.meta then out.meta.billed_units.search_units = tonumber(d.usage) end
    end
  end

  if active then
    local h = hostile(d, req, out)
    if h then return with_delay(h) end
    local r = dialect_injected(D, d, req)
    if r then return with_delay(r) end
    if d.malformed then
      local cut = D.list_key and ('{"' .. D.list_key .. '": [ {"index": 0, "relevance_score": ')
        or '[ {"index": 0, "score": '
      return with_delay({ status = 200, body = cut,
                          headers = "Content-Type: application/json\n" })
    end
    if d.shape then
      return with_delay(json(200, D.list_key and { [D.list_key] = "nope" }
        or { error = "nope" }))
    end
  end
  local r
  if active and d.norankings then
    if D.list_key then out[D.list_key] = nil; r = json(200, out)
    else r = { status = 200, body = "[]", headers = "Content-Type: application/json\n" } end
  else
    r = json(200, out)
  end
  if active and d.nan then
    local key = D.list_key and "relevance_score" or "score"
    r.body = r.body:gsub('"' .. key .. '":[^,}]+', '"' .. key .. '":NaN', 1)
  end
  if active and d.huge then
    if D.list_key then
      r.body = r.body:sub(1, -2) .. ',"pad":"' .. ("x"):rep(tonumber(d.huge)) .. '"}'
    else
      r.body = r.body:sub(1, -2) .. (" "):rep(tonumber(d.huge)) .. "]"
    end
  end
  return with_delay(r)
end

-- A POST to /<dialect>/<the provider's path>, or nil when the path names no dialect.
local function route_dialect(req)
  local name, rest = req.path:match("^/(%a+)(/.*)$")
  local D = name and DIALECTS[name]
  if not D then return nil end
  local variant = D.paths[rest]
  if not variant then return nil end
  requests_seen[name] = (requests_seen[name] or 0) + 1
  last_by[name] = last_request
  local denied = dialect_auth(D, name, req)
  if denied then return denied end
  if not json_content_type(D, req) then return D.ctype() end
  if req.too_large then return D.err(413, "request entity too large") end
  local ok, body = pcall(cjson.decode, req.body)
  if not ok then return D.problem({ code = "json", detail = tostring(body):gsub("^.-: ", "") }) end
  local norm, p = check_body(body, D.rules(variant))
  if not p and D.extra_check then p = D.extra_check(body, norm, variant) end
  if p then return D.problem(p, body) end
  return dialect_rerank(D, name, variant, req, body, norm)
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
    elseif path:match("^/_fake/last/%a+$") then
      return json(200, last_by[path:match("^/_fake/last/(%a+)$")] or {})
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
                         aborted = FAKE.aborted(), requests = requests_seen })
    end
    return text(404, "404 page not found")
  end
  if req.method ~= "POST" then return text(405, "method not allowed") end
  last_request = { path = path, headers = req.headers, body = req.body }
  local dialect_reply = route_dialect(req)
  if dialect_reply then return dialect_reply end

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
  requests_seen.nim = (requests_seen.nim or 0) + 1
  last_by.nim = last_request
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
