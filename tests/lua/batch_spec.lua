-- nim.batch: an auto-batched call's timeout is its total time, as every call's is. The fake
-- holds each request 1 s; eight batches one at a time take 8 s, each well inside the call's
-- 3 s (the bug caught here gave every batch the whole timeout: an answer after 8 s). What is
-- asserted is how the call ends (a timeout, after at least one batch and at most three, as
-- 1 s each allows) and a wall-time bound that leaves a slow or loaded machine 3 s to spare.
local spec = require "spec"
local h = require "helpers"
local nim = require "nim"
local test, eq, ok = spec.test, spec.eq, spec.ok

local function docs(n)
  local t = {}
  for i = 1, n do t[i] = "gpu memory doc " .. i end
  return t
end

local function slow_args(over)
  local a = { model = h.RETRIEVAL, api_base = h.open_url, documents = docs(8),
    query = ("!delay=1000 u%d gpu"):format(math.random(1, 1e9)), batch_size = 1,
    concurrency = 1, timeout = 3 }
  for k, v in pairs(over or {}) do a[k] = v end
  return a
end

local function timed(fn)
  local t0 = nim.now()
  local res, err = fn()
  return res, err, nim.now() - t0
end

test("batches_share_the_calls_timeout_and_fail_with_timeout_at_its_deadline", function()
  local res, err, took = timed(function() return nim.rerank(slow_args()) end)
  print(("     8 batches of 1 s, one at a time, timeout 3 s: %.2f s"):format(took))
  eq(res, nil, "no result: the time ran out")
  eq(err.type, "timeout", "a timeout error")
  eq(getmetatable(err), nim.error_mt, "an error object from the one constructor")
  eq(err.retryable, true, "retryable, as every timeout")
  eq(err.batches, 8, "names the batches")
  ok(err.batch >= 2 and err.batch <= 4, "and the first batch not answered: " .. err.batch)
  spec.match(tostring(err), "within the call's timeout of 3 s", "says whose deadline")
  ok(took < 6, ("the timeout is the total (took %.2f s)"):format(took))
end)

test("a_routed_batched_call_keeps_the_deadline_too", function()
  nim.load_config({ model_list = { { model_name = "slow", litellm_params = {
    model = h.RETRIEVAL, api_base = h.open_url } } } })
  local res, err, took = timed(function()
    return nim.rerank(slow_args({ model = "slow", num_retries = 2 }))
  end)
  nim.load_config({})
  print(("     routed, with retries: %.2f s"):format(took))
  eq(res, nil, "no result")
  eq(err.type, "timeout", "a timeout error")
  ok(took < 6, ("retries fit in the same total (took %.2f s)"):format(took))
end)

test("the_cli_timeout_bounds_a_batched_call", function()
  local t0 = nim.now()
  local out, code = h.sh(("%s rerank -m %s --api-base %s --timeout 3 --batch-size 1 "
    .. "--concurrency 1 -q %s a b c d e f g h 2>&1"):format(h.nimrank, h.RETRIEVAL,
    h.q(h.open_url), h.q(("!delay=1000 u%d gpu"):format(math.random(1, 1e9)))))
  local took = nim.now() - t0
  eq(code, 1, "a failure, not a late success: " .. out)
  spec.match(out, "timeout", "a timeout")
  ok(took < 6, ("--timeout is the total (took %.2f s)"):format(took))
end)

test("batches_that_fit_in_the_time_still_merge", function()
  local res, err = nim.rerank(slow_args({ query = "!delay=50 gpu memory", timeout = 10,
    concurrency = 4 }))
  ok(res, "answered: " .. tostring(err))
  eq(res.meta.batches, 8, "eight batches")
  eq(#res.results, 8, "all merged")
end)

-- A batch's error that names an NVCF job (queued upstream) or is not retryable stays the
-- call's error: turning it into a retryable timeout made the router POST the job again.
test("a_batchs_nvcf_or_non_retryable_error_is_kept_and_not_retried", function()
  local function queued()
    return h.decode(h.sh("curl -s " .. h.q(h.open_url .. "/_fake/stats"))).nvcf_queued
  end
  nim.load_config({ model_list = { { model_name = "nvcf", litellm_params = {
    model = h.RETRIEVAL, api_base = h.open_url, timeout = 2 } } },
    router_settings = { num_retries = 2, timeout = 30 } })
  -- every poll answers 202; the next one (5 s on) would pass the 2 s deadline: the call
  -- ends at once with a timeout that is not retryable and names the job
  local function call(batched)
    local before = queued()
    local res, err = nim.rerank({ model = "nvcf", documents = { "a gpu", "b gpu" },
      query = ("!202-forever u%d gpu"):format(math.random(1, 1e9)),
      nvcf_status_url = h.open_url .. "/v2/nvcf/pexec/status", nvcf_poll_interval = 5,
      batch_size = batched and 1 or nil, concurrency = 1 })
    return res, err, queued() - before
  end
  local ok1, single = pcall(function()
    local res, err, jobs = call(false)
    eq(res, nil, "single: no answer")
    eq(jobs, 1, "single: one job queued")
    return err
  end)
  local ok2, res, err, jobs = pcall(call, true)
  nim.load_config({})
  ok(ok1, tostring(single))
  ok(ok2, tostring(res))
  eq(res, nil, "batched: no answer")
  eq(err.type, "timeout", "the batch's timeout")
  eq(err.retryable, false, "still not retryable")
  ok(single.nvcf_reqid and err.nvcf_reqid, "each names its job (an NVCF request id)")
  eq(err.batch, 1, "the batch that failed")
  eq(err.batches, 2, "of two")
  eq(#err.attempts, 1, "one attempt: not retried")
  eq(jobs, 1, "one job queued, as for the call in one request")
end)
