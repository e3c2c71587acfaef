-- A self-hosted NIM container (default http://localhost:8000): no key needed. Run:
--   build/nimrank examples/self_hosted.lua [BASE_URL]
-- The container serves POST /v1/ranking; nimrank sends no Authorization header without a key.
local nim = require "nim"

local base = arg[1] or "http://localhost:8000"
print("route:", nim.resolve("nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2",
  { api_base = base }).url)
local res, err = nim.rerank{
  model = "nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2",
  api_base = base,
  query = "how do I keep a cast iron pan from rusting?",
  documents = {
    "Dry the pan on the stove and wipe it with a thin film of oil.",
    "Sourdough needs a lively starter and a very hot oven.",
    "Soak it overnight in soapy water.",
  },
  top_n = 2,
  timeout = 10,
}
if not res then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
for _, r in ipairs(res.results) do
  print(("[%d] %.3f %s"):format(r.index, r.relevance_score, r.document.text))
end
