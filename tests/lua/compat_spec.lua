-- Cohere-compatible clients work unchanged against `nimrank serve`: the official Cohere
-- JavaScript SDK (npm: cohere-ai), v1 and v2 rerank, installed by tests/compat/setup.sh
-- (skipped, with the reason, only when the npm registry cannot be reached).
local spec = require "spec"
local h = require "helpers"
local test, eq, match = spec.test, spec.eq, spec.match
local q, sh = h.q, h.sh

local MASTER = "sk-compat-" .. h.key
local CONFIG = ([[
model_list:
  - model_name: nvidia-rerank
    litellm_params:
      model: nvidia_nim/nvidia/llama-nemotron-rerank-1b-v2
      api_key: os.environ/FAKE_KEY
      api_base: os.environ/FAKE_URL
  - model_name: offline
    litellm_params:
      model: local/bm25
router_settings:
  num_retries: 0
general_settings:
  master_key: %s
]]):format(MASTER)

local installed
local function sdk()
  if installed == nil then
    local out, code = sh("sh tests/compat/setup.sh 2>&1")
    if code == 3 then installed = out:gsub("%s+$", "") else installed = code == 0 end
    if installed == false then error("tests/compat/setup.sh failed:\n" .. out) end
  end
  if type(installed) == "string" then spec.skip(installed) end
end

local function run_client(model)
  sdk()
  local srv = h.serve(CONFIG, "--workers 2")
  local ok, out, code = pcall(function()
    return sh(("NIMRANK_URL=%s NIMRANK_KEY=%s NIMRANK_MODEL=%s node tests/compat/cohere_client.mjs "
      .. "2>&1"):format(q(srv.url), q(MASTER), q(model)))
  end)
  srv.stop()
  if not ok then error(out, 0) end
  return out, code
end

for _, model in ipairs({ "nvidia-rerank", "offline" }) do
  test("cohere_sdk_v1_and_v2_rerank_work_unchanged_with_" .. model:gsub("%-", "_"), function()
    local out, code = run_client(model)
    eq(code, 0, "cohere_client.mjs exit:\n" .. out)
    match(out, "%d+ passed, 0 failed", "every check passed:\n" .. out)
  end)
end
