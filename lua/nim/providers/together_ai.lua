-- Together AI rerank (POST {base}/rerank, the base ending with /v1).
return {
  name = "together_ai",
  api_base = "https://api.together.xyz/v1",
  base_env = { "TOGETHER_AI_API_BASE" },
  key_env = { "TOGETHER_API_KEY", "TOGETHER_AI_API_KEY", "TOGETHERAI_API_KEY",
    "TOGETHER_AI_TOKEN" },
  key_required = true,
  path = "/rerank",
  request = { model = "model", query = "query", documents = "documents", top_n = "top_n" },
  params = { rank_fields = "strings" },
  response = { list = "results", index = "index", score = "relevance_score", id = "id",
    tokens = { "usage", "total_tokens" } },
  max_passages = 1000,
  docs = "https://docs.together.ai/reference/rerank-1",
}
