-- vLLM's rerank endpoint (self-hosted: POST {base}/rerank; /v1/rerank and /v2/rerank serve the
-- same and are used as given). A key only if the server was started with --api-key.
return {
  name = "hosted_vllm",
  base_env = { "HOSTED_VLLM_API_BASE" },
  key_env = { "HOSTED_VLLM_API_KEY" },
  path = "/rerank",
  full = { "/v1/rerank", "/v2/rerank" },
  request = { model = "model", query = "query", documents = "documents", top_n = "top_n" },
  params = { max_tokens_per_doc = "integer", instruction = "string",
    truncate_prompt_tokens = "integer", rank_fields = "strings" },
  response = { list = "results", index = "index", score = "relevance_score", id = "id",
    tokens = { "usage", "total_tokens" } },
  docs = "https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html",
}
