-- Non-blocking and parallel reranking: handles, coroutines, fan-out, auto-batching.
-- Timings are printed; the bounds asserted are generous (a slow machine must still pass).
local spec = require "spec"
local h = require "helpers"
local nim = require "nim"
local json = require "nim.json"
local test, eq, ok, raises = spec.test, spec.eq, spec.ok, spec.raises

local M = h.RANKING
local function args(query, over)
  local a = { model = M, query = query, documents = h.DOCS, api_base = h.open_url }
  for k, v in pairs(over or {}) do a[k] = v end
  return a
end
local function uniq(s) return ("%s u%d"):format(s, math.random(1, 1e9)) end

-- A plain call's own table goes to the provider call uncopied (the router's fast path); an
-- auto-batched call reads what it needs later (top_n, return_documents) from a snapshot taken
-- at its start, so a caller that reuses its table meanwhile changes nothing.
test("a_batched_call_reads_the_callers_table_only_at_its_start", function()
  local entry = nim.catalog["nvidia/llama-3_2-nv-rerankqa-1b-v2"]
  entry.max_passages = 2 -- five documents: three batches, answered one by one
  local a = args(uniq("!delay=100 gpu"), { documents = { "gpu one", "gpu two", "gpu three",
    "gpu four", "gpu five" }, top_n = 3 })
  local docs = a.documents
  local req = nim.rerank_async(a)
  a.top_n, a.return_documents, a.model = 1, false, "nvidia_nim/nvidia/not-this-one"
  for i = 1, #docs do docs[i] = "REUSED " .. i end -- the list too, in place
  local res, err = req:wait()
  entry.max_passages = 512
  ok(res, tostring(err))
  eq(res.meta.batches, 3, "three batches")
  eq(#res.results, 3, "the top_n the call was made with")
  ok(res.results[1].document, "documents, as the call asked")
  for _, r in ipairs(res.results) do
    spec.no_match(r.document.text, "REUSED", "the texts the call was given")
  end
end)

test("frame_loop_polls_without_blocking", function()
  -- The property: poll() never waits for the network. A poll can be slow on a slow machine
  -- (under valgrind the first run of a code path takes ~100 ms), so the bound is half the
  -- request's own duration: a poll that waited for the answer would take all of it.
  local delay = 0.6
  local req = nim.rerank_async(args(uniq(("!delay=%d gpu memory"):format(delay * 1000))))
  local frames, worst, t0 = 0, 0, nim.now()
  local res
  while nim.now() - t0 < 30 do
    local f0 = nim.now()
    local done, r, err = req:poll()
    worst = math.max(worst, nim.now() - f0)
    if done then res = r; ok(r, tostring(err)); break end
    frames = frames + 1
    nim.sleep(0.01) -- "render" a frame
  end
  print(("     %d frames rendered while waiting; slowest poll %.2f ms")
    :format(frames, worst * 1000))
  ok(res, "finished")
  ok(frames > 0, "frames were rendered while the request ran")
  ok(worst < delay / 2, "no poll waited for the network")
end)

test("rerank_many_50_requests_of_200ms_concurrency_50", function()
  local spec_ = { model = M, api_base = h.open_url, concurrency = 50 }
  for i = 1, 50 do
    spec_[i] = { query = uniq("!delay=200 doc"), documents = { "doc-" .. i } }
  end
  local t0 = nim.now()
  local results, errors = nim.rerank_many(spec_)
  local took = nim.now() - t0
  print(("     50 x 200 ms with concurrency 50: %.3f s (serial would be 10 s)"):format(took))
  ok(took < 5, "parallel")
  for i = 1, 50 do
    eq(errors[i], nil, "no error " .. i)
    eq(results[i].results[1].document.text, "doc-" .. i, "input order")
  end
end)

test("rerank_many_concurrency_is_a_cap", function()
  local spec_ = { model = M, api_base = h.open_url, concurrency = 2 }
  for i = 1, 6 do spec_[i] = { query = uniq("!delay=150 x"), documents = { "d" } } end
  local t0 = nim.now()
  nim.rerank_many(spec_)
  ok(nim.now() - t0 >= 0.44, "6 x 150 ms at 2 at a time takes 3 rounds")
end)

test("rerank_many_failures_stay_with_their_item", function()
  local results, errors = nim.rerank_many{
    model = M, api_base = h.open_url,
    { query = "gpu" },
    { query = uniq("!status=500 gpu") },
    { query = "gpu", top_n = 0 },
    { query = "gpu", documents = { "only" } },
    documents = h.DOCS,
  }
  ok(results[1], "first fine")
  eq(results[2], false, "second failed")
  eq(errors[2].type, "provider", "its error")
  eq(errors[3].type, "bad_request", "misuse is that item's error")
  spec.match(errors[3].message, "top_n", "names the field")
  eq(results[4].results[1].document.text, "only", "item overrides shared documents")
  raises(function() nim.rerank_many{ concurrency = 0 } end, "concurrency")
  raises(function() nim.rerank_many{ "x" } end, "[1]")
end)

test("spawned_tasks_run_concurrently", function()
  local done = 0
  local t0 = nim.now()
  for i = 1, 20 do
    nim.spawn(function()
      assert(nim.rerank(args(uniq("!delay=500 q" .. i))))
      done = done + 1
    end)
  end
  ok(nim.run(10), "all finished")
  local took = nim.now() - t0
  print(("     20 tasks x 500 ms: %.3f s"):format(took))
  eq(done, 20, "all ran")
  ok(took < 5, "overlapped (serially: 10 s)")
end)

test("retry_backoff_inside_a_task_does_not_block_others", function()
  local order = {}
  nim.spawn(function()
    assert(nim.rerank(args(uniq("!status=503 !times=1 slow"), { num_retries = 1 })))
    order[#order + 1] = "retried"
  end)
  nim.spawn(function()
    assert(nim.rerank(args("fast")))
    order[#order + 1] = "fast"
  end)
  ok(nim.run(10), "finished")
  eq(table.concat(order, ","), "fast,retried", "the fast one did not wait for the backoff")
end)

test("dropped_spawn_handles_keep_running_dropped_async_handles_cancel", function()
  local done = 0
  for _ = 1, 10 do nim.spawn(function() nim.sleep(0.05); done = done + 1 end) end
  collectgarbage()
  collectgarbage()
  ok(nim.run(5), "finished")
  eq(done, 10, "every spawned task ran although its handle was collected")
end)

test("sleep_yields_inside_tasks", function()
  local t0 = nim.now()
  for _ = 1, 10 do nim.spawn(function() nim.sleep(0.5) end) end
  nim.run(10)
  ok(nim.now() - t0 < 3, "ten 0.5 s sleeps overlapped (serially: 5 s)")
end)

test("outside_a_task_calls_block_and_user_coroutines_are_not_yielded_through", function()
  local res = coroutine.wrap(function() return nim.rerank(args("gpu")) end)()
  eq(type(res), "table", "a user coroutine gets the result, not a yielded transfer")
  eq(res.results[1].index, 2, "result")
end)

test("non_yieldable_context_falls_back_to_blocking", function()
  local got
  nim.spawn(function()
    -- a gsub callback is a C-call boundary: yielding there is impossible
    ("x"):gsub("x", function() got = nim.rerank(args("gpu")) end)
  end)
  ok(nim.run(10), "finished without 'attempt to yield across a C-call boundary'")
  eq(got.results[1].index, 2, "blocked and answered")
end)

test("callback_form_runs_from_poll", function()
  local called
  nim.rerank_async(args(uniq("!delay=50 gpu")), function(res, err) called = { res, err } end)
  collectgarbage() -- the handle was dropped: the callback keeps the request alive
  local t0 = nim.now()
  while not called and nim.now() - t0 < 10 do
    nim.poll()
    nim.sleep(0.005)
  end
  ok(called and called[1], "callback ran with the result")
end)

test("wait_with_timeout_then_without", function()
  local req = nim.rerank_async(args(uniq("!delay=400 gpu")))
  eq(req:wait(0.05), false, "time ran out first")
  local res = req:wait()
  eq(res.results[1].index, 2, "then the result")
  eq(tostring(req), "nim.Request (done)", "tostring")
end)

test("cancel_stops_the_request", function()
  local req = nim.rerank_async(args(uniq("!delay=10000 gpu")))
  local t0 = nim.now()
  req:cancel()
  local res, err = req:wait()
  eq(res, nil, "no result")
  eq(err.type, "cancelled", "cancelled")
  eq(tostring(req), "nim.Request (cancelled)", "tostring")
  ok(nim.now() - t0 < 5, "did not wait for the server (10 s)")
  req:cancel() -- idempotent
end)

-- A task's coroutine closed from outside the scheduler (coroutine.close) ends the task as
-- cancelled: nim.run and the handle's wait go on, they do not raise.
test("a_task_whose_coroutine_is_closed_from_outside_ends_cancelled", function()
  local co
  local task = nim.spawn(function()
    co = coroutine.running()
    return nim.rerank(args(uniq("!delay=10000 gpu")))
  end)
  nim.run(0.05) -- the task is waiting for its answer
  ok(co and coroutine.close(co), "closed")
  local t0 = nim.now()
  ok(pcall(nim.run, 20), "nim.run does not raise")
  local res, err = task:wait(5)
  eq(res, nil, "no result")
  eq(err.type, "cancelled", "cancelled")
  ok(nim.now() - t0 < 5, "its transfer was cancelled, not waited for (10 s)")
end)

test("close_and_gc_cancel_pending_requests", function()
  local kept
  do
    local req <close> = nim.rerank_async(args(uniq("!delay=2000 gpu")))
    kept = req
  end
  eq(tostring(kept), "nim.Request (cancelled)", "__close cancelled it")
  for _ = 1, 20 do nim.rerank_async(args(uniq("!delay=2000 gpu"))) end
  collectgarbage()
  collectgarbage()
  eq(nim.poll(), 0, "collected handles cancelled their tasks")
end)

test("async_misuse_raises_at_once_and_local_is_immediate", function()
  raises(function() nim.rerank_async(args("q", { top_n = 0 })) end, "top_n")
  raises(function() nim.rerank_async("x") end, "table expected")
  local req = nim.rerank_async({ model = "local/bm25", query = "gpu", documents = h.DOCS })
  local done, res = req:poll()
  ok(done and res.results[1], "local/bm25 answers at once")
end)

local function big_docs(n)
  local words = { "gpu", "memory", "bandwidth", "cat", "dog", "tensor", "core", "fish" }
  local seed, docs = 7, {}
  for i = 1, n do
    local t = {}
    for j = 1, 12 do
      seed = (seed * 1103515245 + 12345) % 2147483648
      t[j] = words[seed % #words + 1]
    end
    docs[i] = table.concat(t, " ") .. " #" .. i
  end
  return docs
end

test("auto_batching_10000_documents_matches_a_single_call", function()
  local docs = big_docs(10000)
  local seen, last = 0, 0
  local t0 = nim.now()
  local res, err = nim.rerank({ model = M, query = "gpu memory bandwidth", documents = docs,
    api_base = h.open_url, top_n = 20, concurrency = 4,
    on_progress = function(done, total)
      ok(done >= last and total == 10000, "progress grows")
      last, seen = done, seen + 1
    end })
  local took = nim.now() - t0
  ok(res, tostring(err))
  print(("     10,000 documents in %d batches: %.3f s"):format(res.meta.batches, took))
  eq(res.meta.batches, 20, "512 per batch")
  eq(last, 10000, "progress reached the total")
  eq(seen, 20, "one progress call per batch")
  -- the oracle: one request with every document, to a fake that accepts them all
  nim.catalog["nvidia/llama-3_2-nv-rerankqa-1b-v2"].max_passages = 20000
  local one = nim.native.rerank({ model = M, query = "gpu memory bandwidth", documents = docs,
    api_base = os.getenv("FAKE_BIG_URL"), top_n = 20 })
  nim.catalog["nvidia/llama-3_2-nv-rerankqa-1b-v2"].max_passages = 512
  for i = 1, 20 do
    eq(res.results[i].index, one.results[i].index, "rank " .. i)
    eq(res.results[i].relevance_score, one.results[i].relevance_score, "score " .. i)
    eq(res.results[i].document.text, docs[one.results[i].index + 1], "document mapped back")
  end
  ok(res.meta.billed_units.total_tokens > 0, "tokens summed")
  spec.match(json.encode(res), '"results":%[', "results stay a list")
end)

test("batch_options_and_failures", function()
  local docs = big_docs(30)
  local res = assert(nim.rerank({ model = h.RETRIEVAL, query = "gpu", documents = docs,
    api_base = h.url, api_key = h.key, batch_size = 7, top_n = 5 }))
  eq(res.meta.batches, 5, "batch_size 7 over 30 documents")
  eq(#res.results, 5, "top_n")
  raises(function() nim.rerank({ model = M, query = "q", documents = docs, batch_size = 0 }) end,
    "batch_size")
  raises(function() nim.rerank({ model = M, query = "q", documents = docs, batch_size = 600 }) end,
    "batch_size", "512")
  local _, err = nim.rerank({ model = M, query = "q", documents = docs,
    api_base = "http://127.0.0.1:1",
    batch_size = 10 })
  eq(err.type, "connection", "a failed batch fails the call")
  eq(err.batches, 3, "and says how many there were")
end)

test("errors_in_spawned_tasks_surface_from_run_with_a_traceback", function()
  nim.spawn(function() error("boom in a task") end)
  local okr, err = pcall(nim.run, 5)
  eq(okr, false, "run raised")
  spec.match(err, "boom in a task", "the task's error")
  spec.match(err, "stack traceback", "with the task's traceback")
  eq(nim.poll(), 0, "nothing left behind")
  local h2 = nim.spawn(function() error("waited for") end)
  raises(function() h2:wait() end, "waited for")
end)

test("callbacks_never_run_inside_rerank_async_and_a_raising_one_strands_nothing", function()
  local order = {}
  nim.rerank_async({ model = "local/bm25", query = "gpu", documents = h.DOCS },
    function() order[#order + 1] = "callback" end)
  order[#order + 1] = "returned"
  nim.poll()
  eq(table.concat(order, ","), "returned,callback", "deferred to poll even when immediate")
  local ran = 0
  nim.rerank_async({ model = "local/bm25", query = "gpu", documents = h.DOCS },
    function() error("callback failed") end)
  for _ = 1, 3 do
    nim.rerank_async({ model = "local/bm25", query = "gpu", documents = h.DOCS },
      function() ran = ran + 1 end)
  end
  raises(function() nim.poll() end, "callback failed")
  nim.poll()
  eq(ran, 3, "the other callbacks still ran")
end)

test("cancelling_a_batched_request_cancels_its_batches", function()
  local docs = big_docs(2000)
  local req = nim.rerank_async({ model = M, query = uniq("!delay=10000 gpu"), documents = docs,
    api_base = h.open_url, concurrency = 4 })
  nim.poll()
  ok(nim.poll() > 1, "batches in flight")
  local t0 = nim.now()
  req:cancel()
  eq(nim.poll(), 0, "no task left: every batch stopped")
  local _, err = req:wait()
  eq(err.type, "cancelled", "cancelled")
  ok(nim.now() - t0 < 5, "did not wait for the server (10 s)")
end)

test("native_transfer_primitives", function()
  local t = nim.native.start({ model = "local/bm25", query = "gpu", documents = h.DOCS })
  eq(t:done(), true, "local answers at once")
  eq(t:result().results[1].index, 2, "its result")
  eq(tostring(t), "nim.Transfer (finished)", "tostring")
  raises(function() nim.native.start({ model = "local/nope", query = "q", documents = {} }) end,
    "unknown local model")
  local p = nim.native.start(args(uniq("!delay=300 gpu")))
  eq(p:done(), false, "pending")
  eq(p:result(), nil, "no result while pending")
  eq(p:wait(0.05), nil, "time ran out")
  local res = p:wait()
  eq(res.results[1].index, 2, "then the answer")
  local c = nim.native.start(args(uniq("!delay=2000 gpu")))
  c:cancel()
  local r2, err = c:result()
  eq(r2, nil, "cancelled: no result")
  eq(err.type, "cancelled", "cancelled error")
  local n = 0
  local s = nim.native.start(args(uniq("!delay=100 gpu")))
  while not s:done() do
    nim.native.step(0.05)
    n = n + 1
  end
  ok(n >= 1, "step drives the engine")
  eq(s:result().results[1].index, 2, "settled by stepping")
end)

test("a_request_can_cancel_itself_from_its_progress_callback", function()
  local docs = big_docs(2000)
  local req
  local calls = 0
  req = nim.rerank_async({ model = M, query = uniq("!delay=200 gpu"), documents = docs,
    api_base = h.open_url, concurrency = 2, on_progress = function()
      calls = calls + 1
      req:cancel()
    end })
  local res, err = req:wait()
  eq(res, nil, "no result")
  eq(err.type, "cancelled", "cancelled")
  eq(calls, 1, "no progress after the cancel")
  eq(nim.poll(), 0, "nothing left running")
end)

-- Misuse is reported at the caller's line (this file), never from inside lua/nim/.
test("run_and_wait_arguments_and_request_misuse_are_raised_at_the_callers_line", function()
  local function at_my_line(fn, ...)
    local err = raises(fn, ...)
    spec.match(err, "^[^\n]*async_spec%.lua:%d+: ", "at the caller's line")
    spec.no_match(err, "lua/nim/", "never a file of the layer")
  end
  for _, bad in ipairs({ "x", 0 / 0, -1, math.huge }) do
    at_my_line(function() nim.run(bad) end, "nim.run: timeout: must be a number of seconds")
    local req = nim.rerank_async({ model = "local/bm25", query = "gpu", documents = h.DOCS })
    at_my_line(function() req:wait(bad) end, "nim.Request:wait: timeout:")
  end
  eq(nim.run(0), true, "0 does not wait")
  at_my_line(function() nim.rerank_async(args("q", { filters = 5 })) end,
    "nim.rerank: filters: expected a list")
  at_my_line(function() nim.rerank_async(args("q", { top_n = 0 })) end, "nim.rerank: top_n")
end)

test("a_task_yielding_a_settled_transfer_is_resumed_without_a_wake_up", function()
  -- nothing in the engine will ever wake a task that waits on a transfer already settled:
  -- the scheduler must put it straight back in the ready queue (next_timeout() 0, not nil)
  local t = nim.native.start({ model = "local/bm25", query = "gpu", documents = h.DOCS })
  ok(t:done(), "a local model's transfer is settled at once")
  local seen = 0
  nim.spawn(function()
    for _ = 1, 3 do coroutine.yield(t); seen = seen + 1 end
  end)
  for step = 1, 10 do
    nim.poll()
    if seen == 3 then break end
    ok(nim.next_timeout() ~= nil,
      ("poll %d: a task waits on a settled transfer and nothing would wake it"):format(step))
  end
  eq(seen, 3, "the task ran to its end")
  nim.run(1)
end)
