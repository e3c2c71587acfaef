-- Cohere rerank models deployed on Azure AI Foundry: Cohere's v1 API at the deployment's
-- endpoint (no default: api_base or AZURE_AI_API_BASE). A base ending with /v1 or /v2 gets
-- /rerank; one ending with /v1/rerank or /v2/rerank is used as it is.
return {
  name = "azure_ai",
  base_env = { "AZURE_AI_API_BASE" },
  key_env = { "AZURE_AI_API_KEY" },
  key_required = true,
  path = "/v1/rerank",
  full = { "/v1/rerank", "/v2/rerank" },
  short = { ["/v1"] = "/rerank", ["/v2"] = "/rerank" },
  request = { model = "model", query = "query", documents = "documents", top_n = "top_n" },
  params = { max_chunks_per_doc = "integer", rank_fields = "strings" },
  response = { list = "results", index = "index", score = "relevance_score", id = "id",
    tokens = { "meta", "billed_units", "search_units" }, billed_as = "search_units" },
  max_passages = 1000,
  docs = "https://learn.microsoft.com/azure/ai-foundry/how-to/deploy-models-cohere-rerank",
}
