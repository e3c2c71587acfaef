-- Voyage AI rerank (POST /v1/rerank): top_k, not top_n; results under "data"; truncation is
-- a boolean (truncate = "NONE" sends false, "END" true).
return {
  name = "voyage",
  api_base = "https://api.voyageai.com",
  base_env = { "VOYAGE_API_BASE" },
  key_env = { "VOYAGE_API_KEY", "VOYAGE_AI_API_KEY" },
  key_required = true,
  path = "/v1/rerank",
  short = { ["/v1"] = "/rerank" },
  request = { model = "model", query = "query", documents = "documents", top_n = "top_k",
    truncate = { field = "truncation", NONE = false, END = true } },
  response = { list = "data", index = "index", score = "relevance_score",
    tokens = { "usage", "total_tokens" } },
  max_passages = 1000,
  docs = "https://docs.voyageai.com/reference/reranker-api",
}
