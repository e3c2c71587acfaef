-- Hybrid reranking: a self-hosted NIM container (default http://localhost:8000) and the
-- embedded BM25 ranker on the same documents at once, fused by reciprocal rank fusion. Run:
--   build/nimrank examples/hybrid.lua [BASE_URL]
-- If the container is down, the answer is BM25's alone, with a warning saying so.
local nim = require "nim"

local NIM = "nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2"
local res, err = nim.rerank{
  model = "hybrid",
  models = { NIM, "local/bm25" },
  fusion = "rrf",              -- score = sum of weight / (rrf_k + rank); or "weighted"
  rrf_k = 60,
  api_base = arg[1] or "http://localhost:8000", -- the NIM component's; BM25 needs none
  query = "how do I keep a cast iron pan from rusting?",
  documents = {
    "Dry the pan on the stove and wipe it with a thin film of oil.",
    "Sourdough needs a lively starter and a very hot oven.",
    "Soak it overnight in soapy water.",
    "Cast iron rusts when it is left wet.",
  },
  top_n = 3,
  timeout = 10,
}
if not res then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
for _, w in ipairs(res.meta.warnings or {}) do io.stderr:write("warning: ", w, "\n") end
for rank, r in ipairs(res.results) do
  local parts = {}
  for _, c in ipairs(r.components) do
    parts[#parts + 1] = ("%s #%d"):format(c.model == NIM and "nim" or "bm25", c.rank)
  end
  print(("%d. %.4f [%s] %s"):format(rank, r.relevance_score, table.concat(parts, ", "),
    r.document.text))
end
