-- The /v1/ranking family: the "ranking/" prefix, truncate = "END". Run:
--   NVIDIA_NIM_API_KEY=nvapi-... build/nimrank examples/ranking.lua
-- top_n is applied on the client here: the ranking endpoint rejects top_k.
local nim = require "nim"
local json = require "nim.json"

local res, err = nim.rerank{
  model = "nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2",
  query = "which way did the traveler go?",
  documents = {
    "two roads diverged in a yellow wood...",
    "then took the other, as just as fair...",
    "i shall be telling this with a sigh somewhere ages and ages hence...",
  },
  top_n = 3,
  truncate = "END", -- cut over-long passages from the right instead of failing
}
if not res then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
print(json.pretty(res))
