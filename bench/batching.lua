-- batching.lua URL NDOCS RUNS: wall time of one nim.rerank call with NDOCS ~200-byte
-- documents, auto-batched (512 a request, four at a time, merged by the binding), against the
-- same call sent as one request to an upstream that accepts them all (the catalog's limit
-- raised for it), the two alternating call by call. Prints "batched_ms single_ms batches
-- batched_cpu_ms single_cpu_ms" (medians).
local nim = require "nim"
local url, ndocs, runs = arg[1], tonumber(arg[2]), tonumber(arg[3])
local MODEL = "nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2"
local docs = {}
for i = 1, ndocs do docs[i] = ("document %d about gpu memory bandwidth "):format(i):rep(5) end
local args = { model = MODEL, query = "gpu memory bandwidth", documents = docs, api_base = url }
local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end
local entry = nim.native.catalog_entry(MODEL)
-- One call with the catalog's limit at `limit`: wall ms, CPU ms, batches sent.
local function call(limit)
  entry.max_passages = limit
  local t0, c0 = nim.now(), os.clock()
  local res = assert(nim.rerank(args))
  return (nim.now() - t0) * 1000, (os.clock() - c0) * 1000, res.meta.batches or 1
end
call(512) -- warm: connections open, caches filled
call(ndocs)
-- The two kinds alternate, call by call, so drift (the heap's growth, the machine's load)
-- weighs on both alike.
local bw, bc, sw, sc, nb = {}, {}, {}, {}, nil
for i = 1, runs do
  bw[i], bc[i], nb = call(512)
  sw[i], sc[i] = call(ndocs)
end
entry.max_passages = 512
print(("%.2f %.2f %d %.2f %.2f"):format(median(bw), median(sw), nb, median(bc), median(sc)))
