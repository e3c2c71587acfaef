-- nim.providers: the rerank providers a model string's prefix can name. Each is a descriptor,
-- a table of data (lua/nim/providers/<name>.lua): where its API lives, which header and
-- environment variables carry the key and the base URL, the names of its request and answer
-- fields, the parameters it takes, its passage limit and what its error statuses mean. The C
-- side (src/descriptor.c, src/provider_http.c) executes a descriptor: it writes the body and
-- reads the answer in C, so a provider costs no Lua work per document.
--
--   nim.providers.add(descriptor)   -- checks it, registers it under descriptor.name: from
--                                   -- then on "<name>/<model>" goes to it
--   nim.providers.get(name)         -- a copy of the registered descriptor, or nil
--   nim.providers.list()            -- the registered names, sorted
--
-- A descriptor (every field but name optional; defaults in brackets):
--   name          the model prefix: "cohere" serves "cohere/rerank-v3.5"
--   api_base      default base URL [none: api_base or a base_env variable is required]
--   base_env      variables that may hold the base URL, first set wins
--   key_env       variables that may hold the key, first set wins
--   key_required  a call without a key fails with `auth` before sending [false]
--   auth          { header = "Authorization", prefix = "Bearer " (for Authorization; "" for
--                   another header) }: no framing header (Content-Length, Host, ...)
--   path          appended to the base ["" ]; full = { suffixes }: a base ending with the path
--                 or one of these is the full URL; short = { ["/v1"] = "/rerank" }: a base
--                 ending with a key gets its value instead; path_params = { param = path }:
--                 a call passing that parameter uses that path
--   request       { model = "model" (nil: not sent), query = "query", documents = "documents",
--                   document = "string" | "object" ({"text": ...}), top_n = "top_n" (nil:
--                   applied here only), truncate = { field =, NONE =, END = } (nil:
--                   truncate is unsupported) }
--   params        { name = "integer" | "number" | "boolean" | "string" | "strings" }: the
--                 provider's own parameters, passed through; any other is unsupported (an
--                 error naming it, or dropped with drop_params)
--   response      { list = "results" (nil: the answer is a bare list), index = "index",
--                   score = "relevance_score", id = nil, tokens = { "usage", "total_tokens" },
--                   billed_as = "total_tokens" (the meta.billed_units key of that count) }
--   max_passages  documents per request; nimrank batches above it [no limit]
--   errors        { [status] = error type }: what the provider's statuses mean, beyond the
--                 common mapping (401 auth, 404 not_found, 429 rate_limit, ...)
--   native        "nvidia_nim" only: NIM's own rules run in C; its descriptor documents it
--   docs          where the provider's API is documented
-- Names that are never a provider's: local, hybrid, and nvidia and ranking (the first
-- segments of NIM model strings without a prefix).
local nim = require "nim"

local native = nim.native
local M = {}

-- C checks every field (naming it: "descriptor.request.document: ...") and registers a copy;
-- a call holds the copy it started with.
function M.add(desc)
  native.provider_register(desc)
  return M
end

function M.get(name)
  return native.provider_get(name)
end

function M.list()
  local out = native.provider_names()
  table.sort(out)
  return out
end

-- The built-in providers, one file each (the list is C's: a missing one is refused there).
M.BUILTIN = native.builtin_providers
for _, name in ipairs(M.BUILTIN) do M.add(require("nim.providers." .. name)) end

return M
