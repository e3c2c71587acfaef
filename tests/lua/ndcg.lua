-- ndcg.lua: nDCG over tests/data/labelled.json (30 documents, 10 queries, graded labels), for
-- the specs that report ranking quality (local_spec, hybrid_spec) and for a bench script
-- (package.path "tests/lua/?.lua"). Gains are 2^rel - 1, discounts log2(rank + 1).
local M = {}

-- The labelled set: { documents = {...}, queries = { {query =, relevant = {["id"] = rel}} } }.
function M.labelled(path)
  local f = assert(io.open(path or "tests/data/labelled.json", "rb"))
  local data = require("nim.json").decode(f:read("a"))
  f:close()
  return data
end

-- DCG@k of order (0-based document ids, best first) under labels ({["id"] = rel}).
function M.dcg(order, labels, k)
  local s = 0
  for i = 1, math.min(k, #order) do
    local rel = labels[tostring(order[i])] or 0
    s = s + (2 ^ rel - 1) / math.log(i + 1, 2)
  end
  return s
end

-- nDCG@k: DCG@k over the DCG@k of the ideal order.
function M.ndcg_at(order, labels, k)
  local ideal = {}
  for id, rel in pairs(labels) do ideal[#ideal + 1] = { id = tonumber(id), rel = rel } end
  table.sort(ideal, function(a, b) return a.rel > b.rel end)
  local ideal_order = {}
  for i, e in ipairs(ideal) do ideal_order[i] = e.id end
  return M.dcg(order, labels, k) / M.dcg(ideal_order, labels, k)
end

-- The document ids of a result, in its order.
function M.order(res)
  local order = {}
  for i, r in ipairs(res.results) do order[i] = r.index end
  return order
end

-- Mean nDCG@k over the set's queries of rank(query, documents) -> result.
function M.mean(data, k, rank)
  local sum = 0
  for _, q in ipairs(data.queries) do
    sum = sum + M.ndcg_at(M.order(assert(rank(q.query, data.documents))), q.relevant, k)
  end
  return sum / #data.queries
end

return M
