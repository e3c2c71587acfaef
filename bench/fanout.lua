-- fanout.lua URL DELAY_MS REQUESTS CONCURRENCY: nim.rerank_many sends REQUESTS requests at
-- CONCURRENCY, the fake upstream holding each one DELAY_MS. Prints "seconds peak_rss_kb
-- base_rss_kb" like bench/curl_fanout.c.
local nim = require "nim"
local url, delay, n, c = arg[1], tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4])
local function rss(field)
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^" .. field .. ":%s*(%d+)")
    if kb then return tonumber(kb) end
  end
end
nim.settings.max_connections = math.max(c, nim.settings.max_connections)
local spec = { model = "nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2",
  api_base = url, concurrency = c }
for i = 1, n do
  spec[i] = { query = ("!delay=%d gpu memory %d-%d"):format(delay, c, i),
    documents = { "gpu memory bandwidth", "cats", "tensor cores" } }
end
nim.rerank({ model = spec.model, api_base = url, query = "warm", documents = { "x" } })
local base = rss("VmRSS")
local t0 = nim.now()
local _, errors = nim.rerank_many(spec)
local took = nim.now() - t0
for i = 1, n do assert(not errors[i], tostring(errors[i])) end
print(("%.3f %d %d"):format(took, rss("VmHWM"), base))
