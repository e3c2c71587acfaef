-- The fault matrix: what a hostile or broken upstream does, and the err.type a caller gets,
-- from the native call and through the router's retries and fallbacks. It prints the matrix
-- (docs/errors.md summarises it).
local spec = require "spec"
local h = require "helpers"
local nim = require "nim"
local test, eq, ok, match = spec.test, spec.eq, spec.ok, spec.match

local GZIP = os.tmpname()
-- 64 MiB of zeros, gzip'ed to about 64 KB: a decompression bomb, sent although the client
-- asks for no compression (Accept-Encoding: identity): never inflated, refused for its coding
h.sh(("head -c 67108864 /dev/zero | gzip -9 > %s"):format(h.q(GZIP)))

local n = 0
local function uniq(directives)
  n = n + 1
  return ("%s u%d-%d gpu memory"):format(directives, n, math.random(1, 1e9))
end

local FAULTS = {
  { "trickles its answer", "!trickle=50", "timeout" },
  { "stays silent", "!silent", "timeout" },
  { "resets mid-body", "!reset", "connection" },
  { "drops the connection", "!drop", "connection" },
  { "sends an endless chunked body", "!endless", "bad_response", { max_response_bytes = 65536 } },
  { "sends a gzip bomb unasked", "!gzip=" .. GZIP, "bad_response", nil, "gzip%-encoded" },
  { "redirects to another host", "!redirect", "bad_response" },
  { "echoes the request (key included)", "!echo", "bad_response" },
  { "loops 202 Accepted", "!202-forever", "timeout" },
  { "sends a 200 KB header line", "!bigheader=200000", "bad_response" },
  { "sends 350 KB of headers in 35 KB lines", "!manyheaders=10", "bad_response" },
  { "fails its NVCF status poll", "!202-fail=503", "provider" },
  { "answers 429, Retry-After: 1e999", "!status=429 !retry-after=1e999", "rate_limit" },
  { "answers 429, Retry-After: 99999999999", "!status=429 !retry-after=99999999999",
    "rate_limit" },
  { "answers 503", "!status=503", "provider" },
  { "answers 401", "!status=401", "auth" },
  { "answers malformed JSON", "!malformed", "bad_response" },
}

test("fault_matrix_native_and_routed", function()
  local rows = { "| upstream | native `err.type` | through the router |", "| --- | --- | --- |" }
  for _, f in ipairs(FAULTS) do
    local name, directive, want, extra, why = f[1], f[2], f[3], f[4] or {}, f[5]
    nim.load_config({ model_list = { -- a fresh router: no cooldown carried between rows
      { model_name = "primary", litellm_params = { model = h.RETRIEVAL, api_base = h.url,
        api_key = h.key, timeout = 0.5 } },
      { model_name = "offline", litellm_params = { model = "local/bm25" } } },
      router_settings = { num_retries = 1, retry_after = 0, max_retry_wait = 1,
        fallbacks = { { primary = { "offline" } } } } })
    local args = h.args({ query = uniq(directive), timeout = 0.5,
      nvcf_status_url = h.url .. "/v2/nvcf/pexec/status", nvcf_poll_interval = 0.05 })
    for k, v in pairs(extra) do args[k] = v end
    local t0 = nim.now()
    local res, err = nim.native.rerank(args)
    local took = nim.now() - t0
    eq(res, nil, name .. ": no result")
    eq(err.type, want, name)
    if why then match(err.message, why, name .. ": the reason") end
    ok(took < 3, name .. ": ended in time (" .. took .. " s)")
    spec.no_match(tostring(err), h.key, name .. ": no key in the error")
    if err.retry_after then ok(err.retry_after <= 86400, name .. ": Retry-After capped") end
    -- routed: retried or moved on, then the fallback answers
    local routed = { model = "primary", query = uniq(directive), documents = h.DOCS,
      timeout = 5, nvcf_status_url = h.url .. "/v2/nvcf/pexec/status",
      nvcf_poll_interval = 0.05 }
    for k, v in pairs(extra) do routed[k] = v end
    local rres, rerr = nim.rerank(routed)
    ok(rres, name .. ": the fallback answered: " .. tostring(rerr))
    eq(rres.meta.fallback, "offline", name .. ": fallback")
    eq(rres.meta.attempts[1].error, want, name .. ": first attempt's error")
    rows[#rows + 1] = ("| %s | `%s` | %d attempt(s), then fallback `offline` |"):format(name,
      want, #rres.meta.attempts - 1)
  end
  nim.load_config({})
  print("     " .. table.concat(rows, "\n     "))
end)

test("a_redirect_sends_nothing_to_the_other_host_and_no_key_leaves", function()
  local _, err = nim.native.rerank(h.args({ query = uniq("!redirect") }))
  eq(err.status, 302, "the 302 is the answer: never followed")
end)

test("zz_cleanup", function() os.remove(GZIP) end)
