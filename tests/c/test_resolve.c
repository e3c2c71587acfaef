/* Resolver vectors: every example of LITELLM_COMPAT.md section 1, plus edge cases. */
#include "../../src/resolve.h"
#include "ctest.h"

#define B "https://ai.api.nvidia.com"
#define M "nvidia/llama-3_2-nv-rerankqa-1b-v2"

/* Fake environment: a NULL-terminated list of name, value pairs. */
static const char *fake_env(const char *name, void *ud) {
    const char **kv = ud;
    for (; kv && kv[0]; kv += 2)
        if (strcmp(kv[0], name) == 0) return kv[1];
    return NULL;
}

typedef struct {
    const char *name;
    const char *model;
    const char *api_base;
    const char *env[7];
    const char *want_family;
    const char *want_url;
    const char *want_body_model;
    int want_hosted;
} vector;

/* clang-format off: hand-aligned */
static const vector vectors[] = {
    {"spec_example_default_base",
     "nvidia_nim/" M,
     NULL,
     {NULL},
     "retrieval",
     B "/v1/retrieval/" M "/reranking",
     "nvidia/llama-3.2-nv-rerankqa-1b-v2",
     1},
    {"spec_example_custom_base_with_v1",
     "nvidia_nim/" M,
     "https://custom.example.com/v1",
     {NULL},
     "retrieval",
     "https://custom.example.com/v1/retrieval/" M "/reranking",
     "nvidia/llama-3.2-nv-rerankqa-1b-v2",
     0},
    {"spec_example_ranking_prefix",
     "nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2",
     NULL,
     {NULL},
     "ranking",
     B "/v1/ranking",
     "nvidia/llama-3.2-nv-rerankqa-1b-v2",
     1},
    {"bare_model_without_provider_prefix",
     M,
     NULL,
     {NULL},
     "retrieval",
     B "/v1/retrieval/" M "/reranking",
     "nvidia/llama-3.2-nv-rerankqa-1b-v2",
     1},
    {"bare_ranking_prefix",
     "ranking/nvidia/x_y",
     NULL,
     {NULL},
     "ranking",
     B "/v1/ranking",
     "nvidia/x.y",
     1},
    {"only_one_provider_prefix_is_stripped",
     "nvidia_nim/nvidia_nim/m",
     NULL,
     {NULL},
     "retrieval",
     B "/v1/retrieval/nvidia_nim/m/reranking",
     "nvidia.nim/m",
     1},
    {"base_trailing_slashes_dropped",
     "nvidia_nim/" M,
     "http://h:8000///",
     {NULL},
     "retrieval",
     "http://h:8000/v1/retrieval/" M "/reranking",
     "nvidia/llama-3.2-nv-rerankqa-1b-v2",
     0},
    {"base_v1_with_trailing_slash",
     "nvidia_nim/" M,
     "http://h/v1/",
     {NULL},
     "retrieval",
     "http://h/v1/retrieval/" M "/reranking",
     "nvidia/llama-3.2-nv-rerankqa-1b-v2",
     0},
    {"only_one_trailing_v1_dropped",
     "nvidia_nim/" M,
     "http://h/v1/v1",
     {NULL},
     "retrieval",
     "http://h/v1/v1/retrieval/" M "/reranking",
     "nvidia/llama-3.2-nv-rerankqa-1b-v2",
     0},
    {"full_url_detected_by_retrieval_segment",
     "nvidia_nim/" M,
     "https://custom.example.com/v1/retrieval/" M "/reranking/",
     {NULL},
     "retrieval",
     "https://custom.example.com/v1/retrieval/" M "/reranking",
     "nvidia/llama-3.2-nv-rerankqa-1b-v2",
     0},
    {"ranking_base_ending_in_ranking_kept",
     "nvidia_nim/ranking/m",
     "http://h:8000/v1/ranking/",
     {NULL},
     "ranking",
     "http://h:8000/v1/ranking",
     "m",
     0},
    {"ranking_base_v1_dropped_once",
     "nvidia_nim/ranking/m",
     "http://localhost:8000/v1",
     {NULL},
     "ranking",
     "http://localhost:8000/v1/ranking",
     "m",
     0},
    {"ranking_plain_base",
     "nvidia_nim/ranking/m",
     "http://localhost:8000",
     {NULL},
     "ranking",
     "http://localhost:8000/v1/ranking",
     "m",
     0},
    {"ranking_ignores_retrieval_full_url_rule",
     "nvidia_nim/ranking/m",
     "http://h/v1/retrieval/x/reranking",
     {NULL},
     "ranking",
     "http://h/v1/retrieval/x/reranking/v1/ranking",
     "m",
     0},
    {"env_rerank_base_wins_over_api_base_env",
     "nvidia_nim/m",
     NULL,
     {"NVIDIA_NIM_RERANK_API_BASE", "http://r", "NVIDIA_NIM_API_BASE", "http://a", NULL},
     "retrieval",
     "http://r/v1/retrieval/m/reranking",
     "m",
     0},
    {"env_api_base_used",
     "nvidia_nim/m",
     NULL,
     {"NVIDIA_NIM_API_BASE", "http://a/v1", NULL},
     "retrieval",
     "http://a/v1/retrieval/m/reranking",
     "m",
     0},
    {"env_api_base_chat_host_ignored",
     "nvidia_nim/m",
     NULL,
     {"NVIDIA_NIM_API_BASE", "https://integrate.api.nvidia.com/v1", NULL},
     "retrieval",
     B "/v1/retrieval/m/reranking",
     "m",
     1},
    {"empty_env_values_count_as_unset",
     "nvidia_nim/m",
     NULL,
     {"NVIDIA_NIM_RERANK_API_BASE", "", "NVIDIA_NIM_API_BASE", "", NULL},
     "retrieval",
     B "/v1/retrieval/m/reranking",
     "m",
     1},
    {"call_api_base_beats_env",
     "nvidia_nim/m",
     "http://call",
     {"NVIDIA_NIM_RERANK_API_BASE", "http://r", NULL},
     "retrieval",
     "http://call/v1/retrieval/m/reranking",
     "m",
     0},
    {"catalog_mistral_alias_uses_fixed_path",
     "nvidia_nim/nvidia/rerank-qa-mistral-4b",
     NULL,
     {NULL},
     "retrieval",
     B "/v1/retrieval/nvidia/reranking",
     "nv-rerank-qa-mistral-4b:1",
     1},
    {"catalog_mistral_versioned_name",
     "nvidia_nim/nv-rerank-qa-mistral-4b:1",
     "https://x.example/v1/",
     {NULL},
     "retrieval",
     "https://x.example/v1/retrieval/nvidia/reranking",
     "nv-rerank-qa-mistral-4b:1",
     0},
    {"mistral_v3_follows_derived_rule",
     "nvidia_nim/nvidia/nv-rerankqa-mistral-4b-v3",
     NULL,
     {NULL},
     "retrieval",
     B "/v1/retrieval/nvidia/nv-rerankqa-mistral-4b-v3/reranking",
     "nvidia/nv-rerankqa-mistral-4b-v3",
     1},
    {"catalog_body_model_on_ranking_family",
     "nvidia_nim/ranking/nvidia/rerank-qa-mistral-4b",
     "http://h",
     {NULL},
     "ranking",
     "http://h/v1/ranking",
     "nv-rerank-qa-mistral-4b:1",
     0},
    {"hosted_subdomain_detected",
     "m",
     "https://foo.api.nvidia.com",
     {NULL},
     "retrieval",
     "https://foo.api.nvidia.com/v1/retrieval/m/reranking",
     "m",
     1},
    {"lookalike_host_not_hosted",
     "m",
     "https://nvidia.com.evil.example",
     {NULL},
     "retrieval",
     "https://nvidia.com.evil.example/v1/retrieval/m/reranking",
     "m",
     0},
};
/* clang-format on */

/* The catalog lookup the binding performs, done here on the C built-ins. */
static const nim_catalog_entry *builtin_entry(const char *model) {
    nim_family f;
    const char *clean;
    char err[64];
    if (nim_model_parse(model, &f, &clean, err, sizeof err) != 0) return NULL;
    for (const nim_catalog_builtin *c = nim_catalog_builtins; c->name; c++)
        if (strcmp(c->name, clean) == 0) return &c->entry;
    return NULL;
}

static void resolve_vectors_match_spec(void) {
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        const vector *v = &vectors[i];
        nim_route r;
        char err[256] = "";
        int rc = nim_resolve(v->model, v->api_base, builtin_entry(v->model), fake_env,
                             (void *)v->env, &r, err, sizeof err);
        if (rc != 0) {
            fprintf(stderr, "  vector %s: unexpected error %s\n", v->name, err);
            ctest_failed_checks++;
            continue;
        }
        int before = ctest_failed_checks;
        CHECK_STR(nim_family_name(r.family), v->want_family);
        CHECK_STR(r.url, v->want_url);
        CHECK_STR(r.body_model, v->want_body_model);
        CHECK(r.hosted == v->want_hosted);
        CHECK(strstr(r.url + 8, "//") == NULL); /* never // in the path */
        if (ctest_failed_checks != before) fprintf(stderr, "  ^ in vector %s\n", v->name);
    }
}

typedef struct {
    const char *model, *api_base, *want_err_prefix;
} bad_vector;

static const bad_vector bad[] = {
    {"", NULL, "model:"},
    {"nvidia_nim/", NULL, "model:"},
    {"nvidia_nim/ranking/", NULL, "model:"},
    {"nvidia_nim/a b", NULL, "model:"},
    {"nvidia_nim/a?x=1", NULL, "model:"},
    {"nvidia_nim//a", NULL, "model:"},
    {"nvidia_nim/a/../b", NULL, "model:"},
    {"nvidia_nim/a/", NULL, "model:"},
    {"nvidia_nim/nvidia/.", NULL, "model:"},
    {"nvidia_nim/./x", NULL, "model:"},
    {"nvidia_nim/a/./b", NULL, "model:"},
    {"nvidia_nim/ranking/..", NULL, "model:"},
    {"m", "ftp://h", "api_base:"},
    {"m", "localhost:8000", "api_base:"},
    {"m", "http://", "api_base:"},
    {"m", "http://:8000", "api_base:"},
    {"m", "http://h:99999", "api_base:"},
    {"m", "http://h:0", "api_base:"},
    {"m", "http://h:", "api_base:"},
    {"m", "http://h:80x", "api_base:"},
    {"m", "http://h\r\nX-Evil: 1", "api_base:"},
    {"m", "http://h/a b", "api_base:"},
    {"m", "http://h/#frag", "api_base:"},
    {"m", "http://[::1:8000", "api_base:"},
    {"m", "http://user:pw@", "api_base:"},
};

static void bad_inputs_name_the_field(void) {
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nim_route r;
        char err[256] = "";
        int rc =
            nim_resolve(bad[i].model, bad[i].api_base, NULL, fake_env, NULL, &r, err, sizeof err);
        CHECK(rc == -1);
        if (strncmp(err, bad[i].want_err_prefix, strlen(bad[i].want_err_prefix)) != 0) {
            fprintf(stderr, "  model=%s: error '%s' does not start with %s\n", bad[i].model, err,
                    bad[i].want_err_prefix);
            ctest_failed_checks++;
        }
    }
}

static void good_bases_with_ports_users_and_ipv6(void) {
    static const char *const good[] = {"http://h:8000",     "https://user:pw@h.example:443/v1",
                                       "http://[::1]:8000", "http://[::1]",
                                       "http://10.0.0.1",   "https://h.example/path?x=1"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        nim_route r;
        char err[256] = "";
        CHECK(nim_resolve("m", good[i], NULL, fake_env, NULL, &r, err, sizeof err) == 0);
        if (err[0]) fprintf(stderr, "  %s: %s\n", good[i], err);
    }
}

static void bad_env_base_is_named_in_error(void) {
    const char *env[] = {"NVIDIA_NIM_RERANK_API_BASE", "not-a-url", NULL};
    nim_route r;
    char err[256];
    CHECK(nim_resolve("m", NULL, NULL, fake_env, env, &r, err, sizeof err) == -1);
    CHECK(strstr(err, "NVIDIA_NIM_RERANK_API_BASE") != NULL);
}

static void overlong_base_is_rejected_not_truncated(void) {
    char base[NIM_URL_MAX + 100];
    memset(base, 'a', sizeof base);
    memcpy(base, "http://", 7);
    base[sizeof base - 1] = '\0';
    nim_route r;
    char err[256];
    CHECK(nim_resolve("m", base, NULL, fake_env, NULL, &r, err, sizeof err) == -1);
    CHECK(strstr(err, "api_base") != NULL);
}

static void overlong_model_is_rejected(void) {
    char model[NIM_MODEL_MAX + 10];
    memset(model, 'm', sizeof model);
    model[sizeof model - 1] = '\0';
    nim_route r;
    char err[256];
    CHECK(nim_resolve(model, NULL, NULL, fake_env, NULL, &r, err, sizeof err) == -1);
    CHECK(strncmp(err, "model:", 6) == 0);
}

static void catalog_entry_with_empty_path_fails_closed(void) {
    nim_catalog_entry e = {"/", NULL};
    nim_route r;
    char err[256];
    CHECK(nim_resolve("m", NULL, &e, fake_env, NULL, &r, err, sizeof err) == -1);
    CHECK(strstr(err, "endpoint_path") != NULL);
}

static void catalog_endpoint_path_without_leading_slash(void) {
    nim_catalog_entry e = {"v1/retrieval/custom/reranking", "custom-body"};
    nim_route r;
    char err[256];
    CHECK(nim_resolve("nvidia_nim/custom", "http://h/", &e, fake_env, NULL, &r, err, sizeof err) ==
          0);
    CHECK_STR(r.url, "http://h/v1/retrieval/custom/reranking");
    CHECK_STR(r.body_model, "custom-body");
}

/* A catalog path is appended to the base: nothing in it may move the request elsewhere. */
static void catalog_paths_cannot_leave_their_place(void) {
    static const char *const paths[] = {
        "/v1/retrieval/acme/../../../admin/delete-everything",
        "/v1/./x",
        "/v1//x",
        "//v1/x",
        "/v1/x/",
        "/v1/x?admin=1",
        "/v1/x#f",
        "/v1/x\r\nX-Injected: 1",
        "/v1/x y",
        "/v1/%2e%2e/x",
        "",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        nim_catalog_entry e = {paths[i], NULL};
        nim_route r;
        char err[256];
        CHECK(nim_resolve("nvidia_nim/acme/x", "http://h", &e, fake_env, NULL, &r, err,
                          sizeof err) == -1);
        CHECK(strstr(err, "catalog['acme/x'].endpoint_path") != NULL);
    }
    nim_catalog_entry ctl = {NULL, "acme/reranker\x01"};
    nim_route r;
    char err[256];
    CHECK(nim_resolve("nvidia_nim/acme/x", "http://h", &ctl, fake_env, NULL, &r, err, sizeof err) ==
          -1);
    CHECK(strstr(err, "body_model: has a control byte") != NULL);
}

static void builtin_catalog_has_no_duplicate_names(void) {
    for (const nim_catalog_builtin *a = nim_catalog_builtins; a->name; a++)
        for (const nim_catalog_builtin *b = a + 1; b->name; b++)
            CHECK(strcmp(a->name, b->name));
}

int main(void) {
    RUN(resolve_vectors_match_spec);
    RUN(bad_inputs_name_the_field);
    RUN(bad_env_base_is_named_in_error);
    RUN(good_bases_with_ports_users_and_ipv6);
    RUN(overlong_base_is_rejected_not_truncated);
    RUN(overlong_model_is_rejected);
    RUN(catalog_entry_with_empty_path_fails_closed);
    RUN(catalog_endpoint_path_without_leading_slash);
    RUN(catalog_paths_cannot_leave_their_place);
    RUN(builtin_catalog_has_no_duplicate_names);
    return CTEST_SUMMARY("c/resolve");
}
