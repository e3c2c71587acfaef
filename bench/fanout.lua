-- fanout.lua URL DELAY_MS REQUESTS CONCURRENCY: seconds for nim.rerank_many to send REQUESTS
-- requests at CONCURRENCY, the fake upstream holding each one DELAY_MS.
local nim = require "nim"
local url, delay, n, c = arg[1], tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4])
local spec = { model = "nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2",
  api_base = url, concurrency = c }
for i = 1, n do
  spec[i] = { query = ("!delay=%d gpu memory %d-%d"):format(delay, c, i),
    documents = { "gpu memory bandwidth", "cats", "tensor cores" } }
end
local t0 = nim.now()
local _, errors = nim.rerank_many(spec)
local took = nim.now() - t0
for i = 1, n do assert(not errors[i], tostring(errors[i])) end
print(("%.3f"):format(took))
