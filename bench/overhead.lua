-- overhead.lua URL N NDOCS BODYFILE: times N nim.rerank calls of NDOCS 1 KB documents against
-- URL (the ranking family), writes the same request body to BODYFILE for the curl baseline,
-- and prints "nimrank NDOCS wall_ms_per_call cpu_ms_per_call".
local nim = require "nim"
local url, n, ndocs, body_file = arg[1], tonumber(arg[2]), tonumber(arg[3]), arg[4]

local words = { "gpu", "memory", "bandwidth", "lorem", "ipsum", "dolor", "sit", "amet",
                "hopper", "grace", "cpu", "interconnect", "tensor", "core", "cache" }
local docs = {}
local seed = 42
for i = 1, ndocs do
  local parts, len = {}, 0
  while len < 1024 do
    seed = (seed * 1103515245 + 12345) % 2147483648
    local w = words[seed % #words + 1]
    parts[#parts + 1] = w
    len = len + #w + 1
  end
  docs[i] = table.concat(parts, " "):sub(1, 1024)
end
-- Past NIM's 512 on purpose: the fake is started with --max-passages 1000.
nim.catalog["nvidia/llama-3_2-nv-rerankqa-1b-v2"].max_passages = math.max(512, ndocs)
local args = { model = "nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2",
               query = "gpu memory bandwidth", documents = docs, api_base = url }

-- The exact body nim sends, for curl: build it the way the wire format documents it.
local cjson = require "cjson"
local passages = {}
for i, d in ipairs(docs) do passages[i] = { text = d } end
local f = assert(io.open(body_file, "wb"))
f:write('{"model":', cjson.encode("nvidia/llama-3.2-nv-rerankqa-1b-v2"),
        ',"query":{"text":"gpu memory bandwidth"},"passages":', cjson.encode(passages), "}")
f:close()

assert(nim.rerank(args)) -- warm: connection open, caches filled
local wall0, cpu0 = nim.now(), os.clock()
for _ = 1, n do
  local res, err = nim.rerank(args)
  if not res then error(tostring(err)) end
end
local wall, cpu = nim.now() - wall0, os.clock() - cpu0
print(("nimrank %d %.3f %.3f"):format(ndocs, wall * 1000 / n, cpu * 1000 / n))
