-- simple-shuffle (LiteLLM's default): weighted random among the candidates, by `weight`, else
-- `rpm`, else `tpm`, else 1. One draw of the router's random source per choice.
local M = { name = "simple-shuffle" }

local function weight(p) return p.weight or p.rpm or p.tpm or 1 end

function M.pick(deployments, _, ctx)
  local total = 0
  for _, d in ipairs(deployments) do total = total + weight(d.params) end
  local x = ctx.random() * total
  for _, d in ipairs(deployments) do
    x = x - weight(d.params)
    if x < 0 then return d end
  end
  return deployments[#deployments]
end

return M
