/* The resolver: a model string, a base URL and two environment variables, NUL-separated. */
#include <string.h>

#include "../../src/resolve.h"
#include "fuzz.h"

typedef struct {
    const char *rerank_base, *api_base;
} env;

static const char *get(const char *name, void *ud) {
    env *e = ud;
    if (strcmp(name, "NVIDIA_NIM_RERANK_API_BASE") == 0) return e->rerank_base;
    if (strcmp(name, "NVIDIA_NIM_API_BASE") == 0) return e->api_base;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 4);
    if (!s) return 0;
    memcpy(s, data, size);
    memset(s + size, 0, 4); /* at least four strings, the missing ones empty */
    const char *model = s;
    const char *base = model + strlen(model) + 1;
    const char *rerank = (base < s + size) ? base + strlen(base) + 1 : s + size + 1;
    const char *api = (rerank < s + size) ? rerank + strlen(rerank) + 1 : s + size + 2;
    env e = {*rerank ? rerank : NULL, *api ? api : NULL};
    nim_route r;
    char err[256];
    nim_family fam;
    const char *clean;
    if (nim_model_parse(model, &fam, &clean, err, sizeof err) == 0) FUZZ_ASSERT(*clean);
    if (nim_resolve(model, *base ? base : NULL, NULL, get, &e, &r, err, sizeof err) == 0) {
        FUZZ_ASSERT(strncmp(r.url, "http://", 7) == 0 || strncmp(r.url, "https://", 8) == 0);
        for (const char *p = r.url; *p; p++) /* nothing that changes the request line */
            FUZZ_ASSERT((unsigned char)*p > ' ' && *p != 0x7f);
        FUZZ_ASSERT(*r.body_model && *r.model);
        FUZZ_ASSERT(!strstr(r.model, "/./") && !strstr(r.model, ".."));
    } else {
        FUZZ_ASSERT(err[0] && memchr(err, '\0', sizeof err)); /* a message, terminated */
    }
    free(s);
    return 0;
}
