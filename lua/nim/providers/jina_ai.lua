-- Jina AI rerank (POST /v1/rerank). LiteLLM replaces any path of the base with /v1/rerank;
-- here the path is appended, so a base with a path prefix (a proxy) keeps it.
return {
  name = "jina_ai",
  api_base = "https://api.jina.ai",
  base_env = { "JINA_AI_API_BASE" },
  key_env = { "JINA_AI_API_KEY", "JINA_AI_TOKEN" },
  key_required = true,
  path = "/v1/rerank",
  short = { ["/v1"] = "/rerank" },
  request = { model = "model", query = "query", documents = "documents", top_n = "top_n" },
  response = { list = "results", index = "index", score = "relevance_score", id = "id",
    tokens = { "usage", "total_tokens" } },
  max_passages = 1000,
  errors = { [402] = "auth" }, -- the account's balance is spent: not retryable
  docs = "https://jina.ai/reranker/",
}
