/* The answer reader: the first byte says which shape is read (bit 7: a bare list of {index,
 * score}, as TEI answers; bit 6: Cohere's results with a three-key token path; else NIM's)
 * and how many passages were sent (its low 6 bits); the rest is the body. Whatever it
 * accepts must be JSON that lua-cjson (a more lenient reader) decodes too. */
#include <math.h>
#include <string.h>

#include "../../src/answer.h"
#include "fuzz_lua.h"

/* cjson's one limit (1000 levels of nesting) is not a disagreement about what JSON is. */
static const char *code = "local cjson = require 'cjson'\n"
                          "return function(s)\n"
                          "  local ok, err = pcall(cjson.decode, s)\n"
                          "  return ok or tostring(err):find('too many nested', 1, true) ~= nil\n"
                          "end\n";

typedef struct {
    void *blocks[8];
    int n;
} arena;

static void *take(void *ud, size_t size) {
    arena *a = ud;
    return a->n < 8 ? (a->blocks[a->n++] = malloc(size)) : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const nim_answer_shape bare = {NULL, "index", "score", {NULL}, NULL};
    static const nim_answer_shape cohere = {
        "results", "index", "relevance_score", {"meta", "billed_units", "search_units"}, "id"};
    const nim_answer_shape *shape = data[0] & 0x80 ? &bare : data[0] & 0x40 ? &cohere : NULL;
    size_t np = data[0] & 0x3f;
    arena a = {{0}, 0};
    nim_answer out;
    char err[256];
    /* every block its own malloc (not the binding's scratch): ASan sees each one's bounds */
    nim_answer_mem mem = {take, &a, take, &a};
    int rc =
        nim_answer_read((const char *)data + 1, size - 1, np, shape, &mem, &out, err, sizeof err);
    if (rc == 0) {
        FUZZ_ASSERT(out.n <= np);
        unsigned char seen[256] = {0};
        for (size_t i = 0; i < out.n; i++) {
            FUZZ_ASSERT(out.rk[i].index < np && !seen[out.rk[i].index]);
            seen[out.rk[i].index] = 1;
            FUZZ_ASSERT(isfinite(out.rk[i].score));
        }
        FUZZ_ASSERT(out.tokens >= 0);
        fuzz_lua_run(code, data + 1, size - 1); /* accepted: a JSON parser agrees */
        if (out.id)
            FUZZ_ASSERT(out.id >= (const char *)data + 1 &&
                        out.id + out.id_len <= (const char *)data + size);
    } else {
        FUZZ_ASSERT(err[0]);
    }
    for (int i = 0; i < a.n; i++)
        free(a.blocks[i]);
    return 0;
}
