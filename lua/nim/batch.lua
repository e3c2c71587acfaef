-- nim.batch: auto-batching. A call with more documents than the model takes in one request
-- (nim.native.max_passages: 512 for NIM) is split into batches that run in parallel (bounded
-- by `concurrency`, default 4) as native transfers of slices of the caller's documents; the
-- binding merges the answers (nim.native.merge: indices are already the caller's, order by the
-- one ranking rule, then top_n). The router runs once per call, not once per batch.
--
-- Merging scores from different batches is sound for NIM rerankers: they are cross-encoders
-- that score each (query, passage) pair on its own, so a passage's logit does not depend on
-- which other passages share its request. (local/bm25 has no limit and is never split: its
-- idf depends on the whole document set.)
--
-- A failed batch fails the call: the other batches are cancelled and the error says which
-- batch (err.batch, err.batches). The router's retry then sends the whole call again, to the
-- deployment it picks: scores of two deployments (maybe two models) are never mixed.
--
-- The call's timeout (timeout, else request_timeout, else nim.settings.timeout) is its total
-- time, as everywhere: a deadline is fixed when the batched call starts, each batch gets
-- min(timeout, time left), and once the deadline has passed no batch starts: the call fails
-- with a timeout error (err.batch, err.batches: the first batch not answered). A batch's own
-- error that is not retryable, or that names an NVCF request (err.nvcf_reqid: a job queued
-- upstream), is the call's error as it is (with err.batch, err.batches): the router must not
-- send the call again.
--
-- Options per call (or as config call defaults): batch_size (at most max_passages),
-- concurrency, on_progress(done_documents, total_documents).
local nim = require "nim"

local native = nim.native
local M = {}

local function misuse(field, msg) native.misuse("nim.rerank", field, msg) end

-- Checks the batching options against the model's limit (nil: none). Returns the batch size,
-- the concurrency and the progress callback.
local NO_OPTIONS = {}
function M.check(a, opts)
  opts = opts or NO_OPTIONS
  local limit = type(a.model) == "string" and native.max_passages(a.model) or nil
  local size = opts.batch_size
  if size ~= nil and (math.type(size) ~= "integer" or size < 1) then
    misuse("batch_size", "must be an integer >= 1")
  end
  if size and limit and size > limit then
    misuse("batch_size", ("%d is over the model's limit of %d passages"):format(size, limit))
  end
  local conc = opts.concurrency or 4
  if math.type(conc) ~= "integer" or conc < 1 then
    misuse("concurrency", "must be an integer >= 1")
  end
  if opts.on_progress ~= nil and type(opts.on_progress) ~= "function" then
    misuse("on_progress", "expected a function")
  end
  if not limit then return nil, conc, opts.on_progress end -- no limit (local/bm25): never split
  return size or limit, conc, opts.on_progress
end

-- Runs the batches of a (documents 1..n, size per batch, conc at once). res | nil, err.
local function run(a, n, size, conc, progress)
  -- what is read after the first yield (the merge's top_n and return_documents, the model
  -- in messages) comes from a copy made now: a may be the caller's own table, reused
  -- meanwhile (the router passes it through)
  local snapshot = {}
  for k, v in pairs(a) do snapshot[k] = v end
  -- and the list itself: batches started later read their documents from it
  snapshot.documents = table.move(a.documents, 1, n, 1, {})
  a = snapshot
  -- the call's total time: the binding's rule (timeout, else request_timeout, else
  -- nim.settings.timeout, else its default), asked, not repeated
  local total = native.call_timeout(a)
  local deadline = nim.now() + total
  local batches = (n + size - 1) // size
  local pending, which, results = {}, {}, {}
  local next_b, done_docs, answered = 1, 0, 0
  -- each batch's own arguments: a's, with the time left as its timeout
  local b_args = {}
  for k, v in pairs(a) do b_args[k] = v end
  b_args.request_timeout = nil
  local function fail(err, b)
    for _, p in ipairs(pending) do p:cancel() end
    err.batch, err.batches = b, batches
    return nil, err
  end
  -- the call's deadline passed: batch b is the first one not answered
  local function deadline_error(b)
    return fail(native.error({ type = "timeout", model = a.model,
      message = ("no answer within the call's timeout of %.3g s (%d of %d batches answered)")
        :format(total, answered, batches) }), b)
  end
  local function start(b)
    local left = deadline - nim.now()
    if left <= 0 then return deadline_error(b) end
    b_args.timeout = math.min(total, left)
    local first = (b - 1) * size + 1
    -- partial: the batch's rankings stay in C; merge builds the result tables once
    pending[#pending + 1] = native.start(b_args, first, math.min(size, n - first + 1), true)
    which[#which + 1] = b
    return true
  end
  while next_b <= math.min(conc, batches) do
    local ok, err = start(next_b)
    if not ok then return nil, err end
    next_b = next_b + 1
  end
  while #pending > 0 do
    local i = native.await(pending) -- yields inside nim's tasks, else drives the engine
    local t, b = table.remove(pending, i), table.remove(which, i)
    local res, err = t:result()
    if not res then
      -- a batch's timeout is the time the call had left: when it runs out (not a 408 of the
      -- server's), the call's deadline has passed. A batch's error that says more is kept:
      -- one with an NVCF request id (the job is queued upstream: sending the call again would
      -- queue another) or one that is not retryable; a non-retryable error never becomes a
      -- retryable one.
      if err.type == "timeout" and err.status ~= 408 and err.nvcf_reqid == nil
        and err.retryable ~= false then
        return deadline_error(b)
      end
      return fail(err, b)
    end
    results[b] = res
    answered = answered + 1
    done_docs = done_docs + math.min(size, n - (b - 1) * size)
    if progress then
      progress(done_docs, n)
      -- a task that cancelled itself there stops now, before another batch's progress
      local async = package.loaded["nim.async"]
      if async and async.cancel_requested() then return fail(native.cancelled(a.model), b) end
    end
    if next_b <= batches then
      local ok, serr = start(next_b)
      if not ok then return nil, serr end
      next_b = next_b + 1
    end
  end
  local merged = native.merge(results, a) -- the binding reads top_n (or its alias top_k)
  merged.meta.batches = batches
  merged.meta.batch_size = size
  return merged
end

-- call(a, opts) -> res | nil, err: the provider call behind the router. a holds the provider
-- call's arguments (no policy keys), opts the batching options.
function M.call(a, opts)
  local docs = a.documents
  if type(docs) ~= "table" or type(a.model) ~= "string" then
    return native.rerank(a) -- the binding names the problem
  end
  local size, conc, progress = M.check(a, opts)
  local n = #docs
  if not size or n <= size then
    local res, err = native.rerank(a)
    if progress then progress(n, n) end
    return res, err
  end
  return run(a, n, size, conc, progress)
end

return M
