-- usage-based-routing (also -v2, LiteLLM's names): the candidate with the most headroom under
-- its `rpm`/`tpm` limits in the current usage window (the smaller share left of the two; a
-- deployment without limits has all of it); ties go to the fewest tokens, then the fewest
-- requests, then chance. Its deployments' limits are always enforced and their requests and
-- tokens always counted (shared through Redis when configured).
local nth = require("nim.strategies.least_busy").nth

local M = { name = "usage-based-routing", usage = true, limits = true }

local function headroom(p, st)
  local h = math.huge
  if p.rpm then h = math.min(h, p.rpm > 0 and (p.rpm - st.requests) / p.rpm or -math.huge) end
  if p.tpm then h = math.min(h, p.tpm > 0 and (p.tpm - st.tokens) / p.tpm or -math.huge) end
  return h
end
M.headroom = headroom

-- Is a better than b? (-1 a, 1 b, 0 tie)
local function compare(a, b)
  if a.h ~= b.h then return a.h > b.h and -1 or 1 end
  if a.tokens ~= b.tokens then return a.tokens < b.tokens and -1 or 1 end
  if a.requests ~= b.requests then return a.requests < b.requests and -1 or 1 end
  return 0
end

function M.pick(deployments, state, ctx)
  local best, tied
  for _, d in ipairs(deployments) do
    local st = state[d.id]
    local x = { h = headroom(d.params, st), tokens = st.tokens, requests = st.requests }
    local c = best and compare(x, best) or -1
    if c < 0 then
      best, tied = x, { d }
    elseif c == 0 then
      tied[#tied + 1] = d
    end
  end
  return tied[nth(ctx, #tied)]
end

return M
