-- Hugging Face Text Embeddings Inference (TEI): POST {base}/rerank with "texts", no model in
-- the body (a server serves one), and a bare list of {index, score} back. top_n is applied
-- here. TEI refuses more texts than --max-client-batch-size (32 by default): batches of 32.
return {
  name = "huggingface",
  api_base = "https://api-inference.huggingface.co",
  base_env = { "HF_API_BASE", "HUGGINGFACE_API_BASE" },
  key_env = { "HUGGINGFACE_API_KEY", "HF_TOKEN" },
  path = "/rerank",
  request = { query = "query", documents = "texts",
    truncate = { field = "truncate", NONE = false, END = true } },
  params = { raw_scores = "boolean", truncation_direction = "string" },
  response = { index = "index", score = "score" },
  max_passages = 32,
  errors = { [413] = "bad_request", [424] = "provider" },
  docs = "https://huggingface.github.io/text-embeddings-inference/",
}
