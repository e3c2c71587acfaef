-- Cohere rerank, v2 by default (POST /v2/rerank). As in LiteLLM: an api_base that ends with
-- /v1/rerank is used as it is (one ending with /v1 or /v2 gets /rerank), and
-- max_chunks_per_doc (a v1-only parameter) selects /v1/rerank.
return {
  name = "cohere",
  api_base = "https://api.cohere.com",
  base_env = { "COHERE_API_BASE" },
  key_env = { "COHERE_API_KEY", "CO_API_KEY" },
  key_required = true,
  path = "/v2/rerank",
  full = { "/v1/rerank", "/v2/rerank" },
  short = { ["/v1"] = "/rerank", ["/v2"] = "/rerank" },
  path_params = { max_chunks_per_doc = "/v1/rerank" },
  request = { model = "model", query = "query", documents = "documents", top_n = "top_n" },
  params = { max_tokens_per_doc = "integer", max_chunks_per_doc = "integer",
    rank_fields = "strings" },
  response = { list = "results", index = "index", score = "relevance_score", id = "id",
    tokens = { "meta", "billed_units", "search_units" }, billed_as = "search_units" },
  max_passages = 1000, -- Cohere's recommended maximum per request
  docs = "https://docs.cohere.com/reference/rerank",
}
