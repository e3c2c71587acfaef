-- least-busy: the candidate with the fewest requests in flight through this router (this
-- worker: in-flight counts are not shared through Redis); a tie is broken at random.
local M = { name = "least-busy" }

-- One of n, from a draw in [0, 1).
local function nth(ctx, n)
  if n == 1 then return 1 end
  return math.min(n, math.floor(ctx.random() * n) + 1)
end
M.nth = nth

function M.pick(deployments, state, ctx)
  local fewest, tied = math.huge, {}
  for _, d in ipairs(deployments) do
    local n = state[d.id].inflight or 0
    if n < fewest then
      fewest, tied = n, { d }
    elseif n == fewest then
      tied[#tied + 1] = d
    end
  end
  return tied[nth(ctx, #tied)]
end

function M.on_start(d, state)
  local st = state[d.id]
  st.inflight = (st.inflight or 0) + 1
end

function M.on_end(d, state)
  local st = state[d.id]
  st.inflight = math.max(0, (st.inflight or 1) - 1)
end

return M
