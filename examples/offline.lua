-- The embedded offline reranker: no key, no network. Run:
--   build/nimrank examples/offline.lua [QUERY]
local nim = require "nim"

local docs = {}
for line in io.lines("examples/docs.txt") do docs[#docs + 1] = line end
local res = assert(nim.rerank{
  model = "local/bm25",
  query = arg[1] or "What is the GPU memory bandwidth of H100 SXM?",
  documents = docs,
  top_n = 3,
  bm25 = { k1 = 1.2, b = 0.75 }, -- the defaults, shown for the curious
})
for rank, r in ipairs(res.results) do
  print(("%d. %.3f  %s"):format(rank, r.relevance_score, r.document.text))
end
