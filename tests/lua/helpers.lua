-- helpers.lua: what the specs share: the fake servers' URLs and key, and small utilities.
local M = {}

M.url = assert(os.getenv("FAKE_URL"), "FAKE_URL not set: run through tests/run.sh")
M.open_url = assert(os.getenv("FAKE_OPEN_URL"), "FAKE_OPEN_URL not set")
M.key = assert(os.getenv("FAKE_KEY"), "FAKE_KEY not set")
M.nimrank = os.getenv("NIMRANK_BIN") or "build/nimrank"

M.RETRIEVAL = "nvidia_nim/nvidia/llama-nemotron-rerank-1b-v2"
M.RANKING = "nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2"

M.DOCS = {
  "The Hopper GPU is paired with the Grace CPU using NVIDIA's ultra-fast chip-to-chip "
    .. "interconnect, delivering 900GB/s of bandwidth.",
  "A100 provides up to 20X higher performance over the prior generation.",
  "Accelerated servers with H100 deliver 3 terabytes per second (TB/s) of memory bandwidth "
    .. "per GPU.",
}
M.QUERY = "What is the GPU memory bandwidth of H100 SXM?"

-- Arguments for a call against the keyed fake; overrides merged on top.
function M.args(over)
  local a = { model = M.RETRIEVAL, query = M.QUERY, documents = M.DOCS,
              api_key = M.key, api_base = M.url }
  for k, v in pairs(over or {}) do a[k] = v end
  return a
end

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
M.q = shell_quote

-- Runs a shell command; returns stdout, exit code.
function M.sh(cmd)
  local f = assert(io.popen(cmd, "r"))
  local out = f:read("a")
  local _, _, code = f:close()
  return out, code
end

-- The last POST the fake saw: { path, headers = {lowercase = value}, body = raw string }.
function M.last(base)
  local json = require "nim.json"
  local out = M.sh("curl -s " .. shell_quote((base or M.url) .. "/_fake/last"))
  return json.decode(out)
end

function M.decode(s) return require("nim.json").decode(s) end

function M.words(n, len)
  local t = {}
  local base = "lorem ipsum dolor sit amet gpu memory bandwidth "
  for i = 1, n do
    local s = ("doc %d "):format(i) .. base:rep(math.ceil(len / #base))
    t[i] = s:sub(1, len)
  end
  return t
end

return M
