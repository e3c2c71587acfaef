-- Infinity (michaelfeil/infinity), self-hosted: POST {base}/rerank, Cohere's shape. No
-- default base; a key only if the server was started with one.
return {
  name = "infinity",
  base_env = { "INFINITY_API_BASE" },
  key_env = { "INFINITY_API_KEY" },
  path = "/rerank",
  request = { model = "model", query = "query", documents = "documents", top_n = "top_n" },
  params = { raw_scores = "boolean" },
  response = { list = "results", index = "index", score = "relevance_score", id = "id",
    tokens = { "usage", "total_tokens" } },
  docs = "https://michaelfeil.github.io/infinity/",
}
