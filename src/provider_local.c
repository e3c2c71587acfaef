/* provider_local.c: local/bm25, the embedded offline reranker (bm25.c): no key, no network,
 * no document limit. */
#include "binding.h"
#include "bm25.h"
#include "clock.h"
#include "wire.h"

static double bm25_number(lua_State *L, int opts, const char *field, double dflt) {
    if (!opts) return dflt;
    int t = lua_getfield(L, opts, field);
    double v = dflt;
    if (t == LUA_TNUMBER)
        v = lua_tonumber(L, -1);
    else if (t != LUA_TNIL)
        nim_misuse(L, "nim.rerank", NULL, "bm25.%s: expected number, got %s", field,
                   luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

static nim_bm25_params check_params(lua_State *L, int opts) {
    nim_bm25_params p = NIM_BM25_DEFAULTS;
    p.k1 = bm25_number(L, opts, "k1", p.k1);
    p.b = bm25_number(L, opts, "b", p.b);
    if (opts) {
        int st = lua_getfield(L, opts, "stopwords");
        if (st == LUA_TBOOLEAN)
            p.stopwords = lua_toboolean(L, -1);
        else if (st != LUA_TNIL)
            nim_misuse(L, "nim.rerank", "bm25.stopwords", "expected boolean, got %s",
                       luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    if (!(p.k1 >= 0 && p.k1 < 1e6)) nim_misuse(L, "nim.rerank", "bm25.k1", "must be a number >= 0");
    if (!(p.b >= 0 && p.b <= 1)) nim_misuse(L, "nim.rerank", "bm25.b", "must be between 0 and 1");
    return p;
}

/* Pushes the texts of the documents sent. Image-only passages have no text here: the ranking
 * family's rule gives them none. */
static int push_texts(lua_State *L, const nim_args *a) {
    nim_push_reg(L, nim_key_encode);
    nim_wire_texts(L, a->documents, a->first, a->ndocs, lua_gettop(L), NIM_FAMILY_RANKING);
    lua_remove(L, -2);
    return lua_gettop(L);
}

void nim_local_validate(lua_State *L, const nim_args *a) {
    check_params(L, a->bm25);
    push_texts(L, a);
    lua_pop(L, 1);
}

void nim_local_rerank(lua_State *L, const nim_args *a) {
    int top = lua_gettop(L);
    nim_bm25_params p = check_params(L, a->bm25);
    int texts = push_texts(L, a);
    size_t n = (size_t)a->ndocs;
    /* Scratch memory owned by the GC, so a raise frees it. */
    const char **docs = lua_newuserdatauv(L, (n ? n : 1) * sizeof *docs, 0);
    size_t *lens = lua_newuserdatauv(L, (n ? n : 1) * sizeof *lens, 0);
    nim_bm25_hit *hits = lua_newuserdatauv(L, (n ? n : 1) * sizeof *hits, 0);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, texts, (lua_Integer)i + 1);
        docs[i] = lua_tolstring(L, -1, &lens[i]); /* anchored by texts; NULL for false */
        if (!docs[i]) lens[i] = 0;
        lua_pop(L, 1);
    }
    size_t qlen, tokens = 0;
    const char *q = lua_tolstring(L, a->query, &qlen);
    double t0 = nim_now();
    if (nim_bm25_rank(q, qlen, docs, lens, n, &p, hits, &tokens) != 0)
        luaL_error(L, "nim.rerank: local/bm25: out of memory");
    nim_result_spec s = {
        hits, n, a->top_n, a->first, texts, a->return_documents, (lua_Integer)tokens, 0};
    nim_push_result(L, &s);
    nim_annotate_meta(L, nim_provider_name(NIM_PROVIDER_LOCAL), NULL, "local/bm25", a->dropped,
                      nim_now() - t0);
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
}
