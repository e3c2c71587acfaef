-- A pipeline with a custom catalog entry, a custom filter and a fallback chain. Run:
--   build/nimrank examples/pipeline.lua
-- Works offline: the NIM deployment is tried first and, with no key or no network, the
-- router falls back to the embedded local/bm25.
local nim = require "nim"
local filters = require "nim.filters"
local catalog = require "nim.catalog"

-- A model the built-in catalog does not know, with its own limits.
catalog.add("acme/rerank-small", {
  endpoint_path = "/v1/retrieval/acme/rerank-small/reranking",
  body_model = "acme/rerank-small", max_passages = 128, max_tokens = 512,
})

-- A filter: keep at most two results per source (documents carry a "[source]" prefix).
filters.register("two_per_source", function(results)
  local per, out = {}, {}
  for _, r in ipairs(results) do
    local source = r.document and r.document.text:match("^%[(%w+)%]") or "?"
    per[source] = (per[source] or 0) + 1
    if per[source] <= 2 then out[#out + 1] = r end
  end
  return out
end)

nim.load_config{
  model_list = {
    { model_name = "primary",
      litellm_params = { model = "nvidia_nim/nvidia/llama-nemotron-rerank-1b-v2" } },
    { model_name = "offline", litellm_params = { model = "local/bm25" } },
  },
  router_settings = { fallbacks = { { primary = { "offline" } } }, num_retries = 1 },
  nimrank_settings = { filters = { offline = { "two_per_source" } } },
}

local docs = {
  "[wiki] H100 has 3 TB/s of HBM3 memory bandwidth.",
  "[wiki] The A100 GPU offers 2 TB/s of memory bandwidth.",
  "[wiki] GPU memory bandwidth limits LLM inference.",
  "[blog] We measured H100 memory bandwidth at 2.9 TB/s in practice.",
  "[forum] Is H100 memory bandwidth worth the price?",
}
local res, err = nim.rerank{
  model = "primary",
  query = "H100 memory bandwidth",
  documents = docs,
  filters = { { normalize = "sigmoid" } }, -- per call, after the group's filters
}
if not res then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
print(("answered by %s%s"):format(res.meta.model_group,
  res.meta.fallback and (" (fallback after: " .. res.meta.attempts[1].error .. ")") or ""))
for _, r in ipairs(res.results) do
  print(("%.3f  %s"):format(r.probability, r.document.text))
end
