-- The seed's H100 example, in Lua. Run:
--   NVIDIA_NIM_API_KEY=nvapi-... build/nimrank examples/h100.lua [MODEL]
-- The seed used nvidia_nim/nvidia/llama-3_2-nv-rerankqa-1b-v2; NVIDIA's hosted endpoint for
-- that model answers 410 Gone since 2026-05-18, so this example defaults to its replacement.
local nim = require "nim"

local res, err = nim.rerank{
  model = arg[1] or "nvidia_nim/nvidia/llama-nemotron-rerank-1b-v2",
  query = "What is the GPU memory bandwidth of H100 SXM?",
  documents = {
    "The Hopper GPU is paired with the Grace CPU using NVIDIA's ultra-fast chip-to-chip "
      .. "interconnect, delivering 900GB/s of bandwidth.",
    "A100 provides up to 20X higher performance over the prior generation.",
    "Accelerated servers with H100 deliver 3 terabytes per second (TB/s) of memory "
      .. "bandwidth per GPU.",
  },
  top_n = 3,
}
if not res then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
for rank, r in ipairs(res.results) do
  print(("%d. [%d] %8.3f  %s"):format(rank, r.index, r.relevance_score, r.document.text))
end
