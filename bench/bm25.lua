-- bm25.lua [NDOCS] [RUNS]: throughput of local/bm25 through nim.rerank, 1 KB documents.
local nim = require "nim"
local ndocs, runs = tonumber(arg[1]) or 10000, tonumber(arg[2]) or 20
local vocab = {}
for w in ([[gpu memory bandwidth tensor core cache latency throughput kernel warp thread block
  grid register shared global texture constant atomic barrier stream event graph launch copy
  host device pinned unified page fault migrate prefetch advise occupancy scheduler dispatch
  pipeline stage fetch decode issue retire branch predict speculate vector scalar matrix
  multiply accumulate precision float half double integer quantize calibrate prune distill
  sparse dense attention transformer layer norm embedding token vocabulary sequence batch]])
  :gmatch("%a+") do vocab[#vocab + 1] = w end
local seed, docs, bytes = 1, {}, 0
for i = 1, ndocs do
  local parts, len = {}, 0
  while len < 1024 do
    seed = (seed * 1103515245 + 12345) % 2147483648
    local w = vocab[seed % #vocab + 1]
    if seed % 7 == 0 then w = w:upper() end
    parts[#parts + 1] = w
    len = len + #w + 1
  end
  docs[i] = table.concat(parts, seed % 3 == 0 and ", " or " "):sub(1, 1024)
  bytes = bytes + #docs[i]
end
local args = { model = "local/bm25", query = "gpu memory bandwidth of tensor cores",
               documents = docs, top_n = 10 }
assert(nim.rerank(args))
local times = {}
for r = 1, runs do
  local t0 = nim.now()
  assert(nim.rerank(args))
  times[r] = nim.now() - t0
end
table.sort(times)
local med = times[(runs + 1) // 2]
print(("local/bm25: %d docs, %.1f MB of text: median %.2f ms per rerank, %.0f MB/s "
  .. "(best %.0f MB/s)")
  :format(ndocs, bytes / 1e6, med * 1000, bytes / 1e6 / med, bytes / 1e6 / times[1]))
