-- overhead.lua URL N NDOCS BODYFILE [lean]: N nim.rerank calls of NDOCS ~200-byte documents against
-- URL (ranking family; batches of the default 512 above that), writes the body of one
-- request with every document to BODYFILE for the curl baseline (byte-identical to what nim
-- sends for one request), and prints "cpu_us wall_us" per call (CPU: this process, user +
-- system, as getrusage counts it). "lean" asks for top_n = 5 and return_documents = false.
-- "floor" sends nothing: it only builds, in a Lua constructor, the tables a result of NDOCS
-- documents is made of (the envelope, a table per result and one per document): what any
-- binding that returns nim.rerank's result must spend, whatever else it does.
local nim = require "nim"
local url, n, ndocs, body_file = arg[1], tonumber(arg[2]), tonumber(arg[3]), arg[4]
local lean, floor = arg[5] == "lean", arg[5] == "floor"

local words = { "gpu", "memory", "bandwidth", "lorem", "ipsum", "dolor", "sit", "amet",
  "hopper", "grace", "cpu", "interconnect", "tensor", "core", "cache" }
local docs, seed = {}, 42
for i = 1, ndocs do
  local parts, len = {}, 0
  while len < 200 do
    seed = (seed * 1103515245 + 12345) % 2147483648
    local w = words[seed % #words + 1]
    parts[#parts + 1] = w
    len = len + #w + 1
  end
  docs[i] = table.concat(parts, " "):sub(1, 200)
end
local MODEL = "nvidia/llama-3.2-nv-rerankqa-1b-v2"
local args = { model = "nvidia_nim/ranking/" .. MODEL, query = "gpu memory bandwidth",
  documents = docs, api_base = url }
if lean then args.top_n, args.return_documents = 5, false end

-- The exact body of one request with every document, written the way the wire format says.
local cjson = require "cjson"
local passages = {}
for i, d in ipairs(docs) do passages[i] = { text = d } end
local f = assert(io.open(body_file, "wb"))
f:write('{"model":', cjson.encode(MODEL), ',"query":{"text":"gpu memory bandwidth"},',
  '"passages":', cjson.encode(passages), "}")
f:close()

local call = function()
  local res, err = nim.rerank(args)
  if not res then error(tostring(err)) end
end
if floor then
  call = function()
    local results = {}
    for i = 1, ndocs do
      results[i] = { index = i - 1, relevance_score = 0.5, document = { text = docs[i] } }
    end
    return { id = "x", results = results, meta = { billed_units = { total_tokens = 1 } } }
  end
end

call() -- warm: connections open, caches filled
collectgarbage()
local wall0, cpu0 = nim.now(), os.clock()
for _ = 1, n do call() end
local wall, cpu = nim.now() - wall0, os.clock() - cpu0
print(("%.1f %.1f"):format(cpu * 1e6 / n, wall * 1e6 / n))
