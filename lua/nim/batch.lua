-- nim.batch: auto-batching. A call with more documents than the model takes in one request
-- (the catalog's max_passages: 512 for NIM) is split into batches that run in parallel
-- (bounded by `concurrency`, default 4), and the rankings are merged: indices mapped back to
-- the caller's documents, sorted by score (ties by index), then cut to top_n.
--
-- Merging scores from different batches is sound for NIM rerankers: they are cross-encoders
-- that score each (query, passage) pair on its own, so a passage's logit does not depend on
-- which other passages share its request. (local/bm25 has no limit and is never split: its
-- idf depends on the whole document set.)
--
-- Options per call (or as config call defaults): batch_size (at most max_passages),
-- concurrency, on_progress(done_documents, total_documents).
local nim = require "nim"
local catalog = require "nim.catalog"
local async = require "nim.async"

local M = {}

local BATCH_KEYS = { batch_size = true, concurrency = true, on_progress = true }

local function without_batch_keys(a)
  local out = {}
  for k, v in pairs(a) do if not BATCH_KEYS[k] then out[k] = v end end
  return out
end

local function by_score(x, y)
  if x.relevance_score ~= y.relevance_score then return x.relevance_score > y.relevance_score end
  return x.index < y.index
end

local function check_options(a, max_passages)
  local size = a.batch_size or max_passages
  if math.type(size) ~= "integer" or size < 1 then
    error("nim.rerank: batch_size: must be an integer >= 1", 3)
  end
  if size > max_passages then
    error(("nim.rerank: batch_size: %d is over the model's limit of %d passages"):format(size,
      max_passages), 3)
  end
  local conc = a.concurrency or 4
  if math.type(conc) ~= "integer" or conc < 1 then
    error("nim.rerank: concurrency: must be an integer >= 1", 3)
  end
  if a.on_progress ~= nil and type(a.on_progress) ~= "function" then
    error("nim.rerank: on_progress: expected a function", 3)
  end
  return size, conc
end

-- The provider call behind the router: batches when it must, else the native call.
function M.call(a)
  local docs = a.documents
  local local_model = type(a.model) == "string" and a.model:match("^local/")
  if type(docs) ~= "table" or local_model then
    if a.on_progress and type(docs) == "table" then
      local res, err = nim.native.rerank(without_batch_keys(a))
      a.on_progress(#docs, #docs)
      return res, err
    end
    return nim.native.rerank(without_batch_keys(a))
  end
  local n = #docs
  local max_passages = type(a.model) == "string" and catalog.max_passages(a.model) or 512
  local size, conc = check_options(a, max_passages)
  if n <= size then
    local res, err = nim.native.rerank(without_batch_keys(a))
    if a.on_progress then a.on_progress(n, n) end
    return res, err
  end

  local base = without_batch_keys(a)
  local items, offsets = {}, {}
  for start = 1, n, size do
    local slice = table.move(docs, start, math.min(start + size - 1, n), 1, {})
    items[#items + 1] = { documents = slice }
    offsets[#items] = start - 1
  end
  local done_docs, progress = 0, a.on_progress
  local many = table.move(items, 1, #items, 1, { concurrency = conc })
  for k, v in pairs(base) do if k ~= "documents" then many[k] = v end end
  if progress then
    many.on_progress = function(done)
      local total = 0
      for i = 1, done do total = total + #items[i].documents end
      done_docs = math.max(done_docs, math.min(total, n))
      progress(done_docs, n)
    end
  end
  local results, errors = async.rerank_many(many)
  for i = 1, #items do
    if errors[i] then
      local err = errors[i]
      err.batch, err.batches = i, #items
      return nil, err
    end
  end

  local merged, tokens = {}, 0
  for i, res in ipairs(results) do
    for _, r in ipairs(res.results) do
      r.index = r.index + offsets[i]
      merged[#merged + 1] = r
    end
    tokens = tokens + (res.meta.billed_units and res.meta.billed_units.total_tokens or 0)
  end
  table.sort(merged, by_score)
  if a.top_n and a.top_n < #merged then
    for i = #merged, a.top_n + 1, -1 do merged[i] = nil end
  end
  local first = results[1]
  local meta = first.meta
  meta.billed_units = { total_tokens = tokens }
  meta.batches = #items
  meta.batch_size = size
  local slowest = 0
  for _, res in ipairs(results) do slowest = math.max(slowest, res.meta.latency_ms or 0) end
  meta.latency_ms = slowest
  return { id = first.id, results = nim.array(merged), meta = meta }
end

return M
