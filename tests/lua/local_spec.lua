-- The embedded offline reranker, provider local/bm25: no key, no network.
local spec = require "spec"
local h = require "helpers"
local nim = require "nim"
local json = require "nim.json"
local ndcg = require "ndcg"
local test, eq, ok, raises = spec.test, spec.eq, spec.ok, spec.raises

local function bm25(over)
  local a = { model = "local/bm25", query = h.QUERY, documents = h.DOCS }
  for k, v in pairs(over or {}) do a[k] = v end
  return nim.rerank(a)
end

test("seed_question_ranks_h100_first_offline", function()
  local res, err = bm25()
  ok(res, tostring(err))
  eq(res.results[1].index, 2, "H100 document first")
  eq(res.results[1].document.text, h.DOCS[3], "document")
  ok(res.results[1].relevance_score > res.results[2].relevance_score, "sorted")
  eq(res.meta.provider, "local", "provider")
  eq(res.meta.model, "local/bm25", "model")
  spec.match(res.id, "^%x+%-%x+%-4%x+%-", "uuid")
end)

test("no_key_no_network_even_with_api_base", function()
  local res = bm25({ api_base = "http://127.0.0.1:1", api_key = nil })
  ok(res, "offline")
end)

test("billed_units_count_tokens_seen", function()
  local res = bm25({ query = "gpu memory", documents = { "one two three", "four five" } })
  eq(res.meta.billed_units.total_tokens, 2 + 5, "query + document tokens")
end)

test("top_n_and_return_documents", function()
  local res = bm25({ top_n = 1, return_documents = false })
  eq(#res.results, 1, "top_n")
  eq(res.results[1].document, nil, "no document")
end)

test("parameters_k1_b_stopwords", function()
  local a = bm25({ bm25 = { k1 = 2.0, b = 0.3 } })
  local b = bm25()
  ok(a.results[1].relevance_score ~= b.results[1].relevance_score, "k1/b change scores")
  local with = bm25({ query = "the of gpu", documents = { "the of the of", "gpu" } })
  eq(with.results[2].relevance_score, 0, "stop words ignored by default")
  local without = bm25({ query = "the of gpu", documents = { "the of the of", "gpu" },
    bm25 = { stopwords = false } })
  ok(without.results[2].relevance_score > 0, "stop words count when disabled")
end)

test("bad_parameters_name_the_field", function()
  raises(function() bm25({ bm25 = { k1 = -1 } }) end, "bm25.k1")
  raises(function() bm25({ bm25 = { b = 2 } }) end, "bm25.b")
  raises(function() bm25({ bm25 = { k1 = "x" } }) end, "bm25.k1")
  raises(function() bm25({ bm25 = { stopwords = 1 } }) end, "bm25.stopwords")
  raises(function() bm25({ bm25 = 5 }) end, "bm25")
  raises(function() bm25({ model = "local/tfidf" }) end, "unknown local model", "local/bm25")
  raises(function() bm25({ top_n = 0 }) end, "top_n")
end)

test("documents_of_every_kind", function()
  local res = bm25({ query = "alpha", documents = { "alpha", { text = "alpha beta" }, 7,
    { x = "alpha" },
    { image = "data:x" } } })
  eq(#res.results, 5, "all ranked")
  for _, r in ipairs(res.results) do
    if r.index == 4 then eq(r.document, nil, "image only: no document") end
    if r.index == 3 then eq(r.document.text, '{"x":"alpha"}', "table without text") end
  end
end)

test("empty_documents_encode_as_empty_list", function()
  local res = bm25({ documents = {} })
  eq(json.encode(res.results), "[]", "[]")
end)

test("no_passage_limit_offline", function()
  local docs = h.words(10000, 200)
  local res = bm25({ documents = docs, top_n = 3, query = "doc 9999" })
  eq(#res.results, 3, "ranked 10,000")
  eq(res.results[1].index, 9998, "exact document number wins")
end)

test("arbitrary_bytes_never_crash", function()
  math.randomseed(7)
  for _ = 1, 50 do
    local docs = {}
    for i = 1, 20 do
      local t = {}
      for j = 1, math.random(0, 300) do t[j] = string.char(math.random(0, 255)) end
      docs[i] = table.concat(t)
    end
    local q = {}
    for j = 1, math.random(1, 50) do q[j] = string.char(math.random(0, 255)) end
    local res = bm25({ documents = docs, query = table.concat(q) })
    eq(#res.results, 20, "ranked")
    json.encode(res) -- and the result encodes
  end
end)

test("bm25_ndcg_at_3_beats_identity_order", function()
  local data = ndcg.labelled()
  local n = #data.queries
  local b = ndcg.mean(data, 3, function(query, docs)
    return bm25({ query = query, documents = docs })
  end)
  local id = ndcg.mean(data, 3, function(_, docs)
    local identity = { results = {} }
    for i = 1, #docs do identity.results[i] = { index = i - 1 } end
    return identity
  end)
  print(("     nDCG@3 over %d queries: local/bm25 %.3f, identity order %.3f"):format(n, b, id))
  ok(b > id + 0.4, "BM25 beats the identity order by a clear margin")
  ok(b > 0.7, "BM25 is good on this set")
end)
