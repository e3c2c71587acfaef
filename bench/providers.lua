-- bench/providers.lua URL CALLS: CPU seconds per call (os.clock: this process only) for NIM
-- and for descriptor providers, 1 / 100 / 1000 documents of ~200 bytes, one reused
-- connection. Run by bench/providers.sh, which starts the fake.
local nim = require "nim"
local url, calls = arg[1], tonumber(arg[2] or 300)

local function docs(n)
  local t = {}
  for i = 1, n do
    local line = ("passage %d about gpu memory bandwidth and interconnects "):format(i)
    t[i] = line:rep(4):sub(1, 200)
  end
  return t
end

local CASES = {
  { "nvidia_nim (C rules)", "nvidia_nim/nvidia/llama-nemotron-rerank-1b-v2", url },
  { "cohere (descriptor)", "cohere/rerank-v3.5", url .. "/cohere" },
  { "voyage (descriptor)", "voyage/rerank-2.5", url .. "/voyage" },
}

print(("%-22s %8s %14s"):format("provider", "docs", "CPU us/call"))
for _, n in ipairs({ 1, 100, 1000 }) do
  local d = docs(n)
  for _, c in ipairs(CASES) do
    local args = { model = c[2], api_base = c[3], api_key = "k", query = "gpu bandwidth",
      documents = d, top_n = 5 }
    assert(nim.rerank(args)) -- warm: connection open, code paths loaded
    local k = math.max(10, calls // math.max(1, n // 100))
    local t0 = os.clock()
    for _ = 1, k do assert(nim.rerank(args)) end
    print(("%-22s %8d %14.1f"):format(c[1], n, (os.clock() - t0) / k * 1e6))
  end
end
