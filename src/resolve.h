/* resolve.h: model string + api_base + environment -> NIM route.
 * Pure C: no Lua, no curl. See shared/spec/LITELLM_COMPAT.md section 1. */
#ifndef NIM_RESOLVE_H
#define NIM_RESOLVE_H

#include <stddef.h>

#define NIM_DEFAULT_BASE "https://ai.api.nvidia.com"
#define NIM_URL_MAX 2048
#define NIM_MODEL_MAX 256

typedef enum { NIM_FAMILY_RETRIEVAL = 0, NIM_FAMILY_RANKING = 1 } nim_family;

/* A catalog entry overrides the derived rules for one cleaned model name.
 * Either field may be NULL (derived rule applies to that part). */
typedef struct {
    const char *endpoint_path; /* e.g. "/v1/retrieval/nvidia/reranking" (retrieval only) */
    const char *body_model;    /* e.g. "nv-rerank-qa-mistral-4b:1" */
} nim_catalog_entry;

/* The environment is injected so tests are deterministic; NULL means getenv(3). */
typedef const char *(*nim_getenv_fn)(const char *name, void *ud);

typedef struct {
    nim_family family;
    char model[NIM_MODEL_MAX];      /* cleaned model: prefixes stripped, the catalog key */
    char body_model[NIM_MODEL_MAX]; /* what goes into the request body */
    char url[NIM_URL_MAX];          /* the full POST URL */
    int hosted;                     /* URL is on NVIDIA's hosted API: a key is required */
    const char *base_source;        /* "api_base", an env var name, or "default" (static) */
} nim_route;

/* Strip "nvidia_nim/" and "ranking/"; *clean points into model. 0 ok, -1 with err. */
int nim_model_parse(const char *model, nim_family *family, const char **clean, char *err,
                    size_t errlen);

/* Resolve a route. entry may be NULL. Returns 0, or -1 with a message in err that names
 * the offending field. Never reads or prints a key. */
int nim_resolve(const char *model, const char *api_base, const nim_catalog_entry *entry,
                nim_getenv_fn getenv_fn, void *ud, nim_route *out, char *err, size_t errlen);

/* Checks a base URL nimrank sends a key to (http(s)://, a host, a valid port, no space,
 * control byte or '#'). 0, or -1 with err naming field. */
int nim_check_base_url(const char *url, const char *field, char *err, size_t errlen);

/* Checks an NVCF status URL as a base URL (http(s)://, a host, a valid port, no space, control
 * byte or '#') with no query: polls go to <url>/<request id>. 0, or -1 with err naming field. */
int nim_check_status_url(const char *url, const char *field, char *err, size_t errlen);

/* Built-in catalog (exceptions to the derived rules). Terminated by a NULL name. */
typedef struct {
    const char *name;
    nim_catalog_entry entry;
    int max_passages;
    int max_tokens;
    const char *deprecated; /* NULL, or why */
    const char *replacement;
} nim_catalog_builtin;

extern const nim_catalog_builtin nim_catalog_builtins[];

const char *nim_family_name(nim_family f);

#endif
