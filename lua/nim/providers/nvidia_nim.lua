-- NVIDIA NIM (hosted API and self-hosted containers). Its calls run NIM's own rules in C
-- (src/resolve.c: the two endpoint families, /v1/retrieval/{model}/reranking and, with the
-- ranking/ prefix, /v1/ranking; the catalog's exceptions; NVCF 202 polling): this descriptor
-- documents it beside the others. A model string without a known prefix is a NIM model.
return {
  name = "nvidia_nim",
  native = "nvidia_nim",
  api_base = "https://ai.api.nvidia.com",
  base_env = { "NVIDIA_NIM_RERANK_API_BASE", "NVIDIA_NIM_API_BASE" },
  key_env = { "NVIDIA_NIM_API_KEY" },
  key_required = true, -- on NVIDIA's hosted API; a self-hosted container needs none
  request = { model = "model", query = "query", documents = "passages", document = "object",
    top_n = "top_k", truncate = { field = "truncate", NONE = "NONE", END = "END" } },
  response = { list = "rankings", index = "index", score = "logit", id = "id",
    tokens = { "usage", "total_tokens" } },
  max_passages = 512,
  docs = "https://docs.api.nvidia.com/nim/reference/nvidia-rerank",
}
