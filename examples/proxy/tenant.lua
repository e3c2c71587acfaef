-- A gateway extension, loaded through nimrank_settings.scripts (and again on every SIGHUP
-- reload: use() and route() replace by name, so nothing doubles).
local proxy = require "nim.proxy"

-- Middleware: runs before every route's handler (after the master key check). Returning a
-- response answers the request; returning nothing lets it through.
proxy.use("tenant", function(req, ctx)
  local tenant = req.headers["x-tenant"]
  if tenant and not tenant:match("^[%w%-]+$") then
    return proxy.error(400, "invalid_request_error", "x-tenant: letters, digits and - only",
      "x-tenant")
  end
  ctx.tenant = tenant
end)

-- A route of our own: which model names this gateway serves, in a plain list.
proxy.route("GET", "/models/names", function()
  return 200, { names = require("nim").router:group_names() }
end)
