/* result.c: the result envelope, one builder for every provider and for batching:
 *   { id = "...", results = [ {index, relevance_score, document = {text}} ... ],
 *     meta = { billed_units = {total_tokens}, provider, family, model, latency_ms, ... } }
 * Lists carry the array marker, so an empty one encodes as [] (json.lua). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "binding.h"

/* splitmix64: ids need to be unique, not secret; the state's seed comes from getrandom. */
static unsigned long long next_random(unsigned long long *x) {
    unsigned long long z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A fresh UUID4 string into out (37 bytes), from the state's generator. */
static void uuid4(lua_State *L, char out[37]) {
    nim_ctx *c = nim_ctx_get(L);
    if (!c->uuid_state[1]) { /* the first id of this state: seed it */
        if (getrandom(c->uuid_state, sizeof c->uuid_state, 0) != (ssize_t)sizeof c->uuid_state)
            c->uuid_state[0] = (unsigned long long)(uintptr_t)c ^ (unsigned long long)time(NULL);
        c->uuid_state[1] = 1;
    }
    unsigned char r[16];
    unsigned long long a = next_random(&c->uuid_state[0]), b = next_random(&c->uuid_state[0]);
    memcpy(r, &a, 8);
    memcpy(r + 8, &b, 8);
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) { /* 8-4-4-4-12 hex digits, by table: snprintf cost ~6k
                                      instructions per call */
        if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
        *o++ = hex[r[i] >> 4];
        *o++ = hex[r[i] & 15];
    }
    *o = '\0';
}

void nim_mark_array(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    nim_push_reg(L, nim_key_array_mt);
    lua_setmetatable(L, idx);
}

static void push_meta(lua_State *L, lua_Integer tokens) {
    lua_createtable(L, 0, 6);
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, tokens);
    lua_setfield(L, -2, "total_tokens");
    lua_setfield(L, -2, "billed_units");
}

/* A batch's rankings, kept in C until the merge. The count and offset live in the userdata
 * (under a private metatable), not in the Lua table a script can edit: merge reads only these. */
typedef struct {
    size_t n;
    lua_Integer offset;
    nim_ranking rk[];
} batch_rankings;

/* The batch_rankings at idx, checked to be ours and as large as it says; NULL if not. */
static batch_rankings *to_batch_rankings(lua_State *L, int idx) {
    batch_rankings *b = lua_touserdata(L, idx);
    if (!b || !lua_getmetatable(L, idx)) return NULL;
    nim_push_reg(L, nim_key_rankings_mt);
    int ours = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!ours || lua_rawlen(L, idx) < sizeof *b ||
        b->n > (lua_rawlen(L, idx) - sizeof *b) / sizeof b->rk[0])
        return NULL;
    return b;
}

/* The partial result of a batch: its best rankings, copied, indices made the caller's. */
static void push_partial(lua_State *L, const nim_result_spec *s, lua_Integer keep,
                         const char *uuid) {
    lua_createtable(L, 0, 6);
    lua_pushstring(L, uuid);
    lua_setfield(L, -2, "id");
    batch_rankings *b = lua_newuserdatauv(L, sizeof *b + (size_t)keep * sizeof b->rk[0], 0);
    b->n = (size_t)keep;
    b->offset = s->offset;
    for (lua_Integer i = 0; i < keep; i++) {
        b->rk[i] = s->rk[i];
        b->rk[i].index += (size_t)s->offset;
    }
    nim_setmeta(L, &nim_key_rankings_mt);
    lua_setfield(L, -2, "rankings");
    lua_pushinteger(L, keep);
    lua_setfield(L, -2, "nrankings"); /* for a reader's eyes; merge trusts only the userdata */
    lua_pushvalue(L, s->texts);
    lua_setfield(L, -2, "texts");
    lua_pushinteger(L, s->offset);
    lua_setfield(L, -2, "offset");
    push_meta(L, s->tokens);
    lua_setfield(L, -2, "meta");
}

void nim_push_result(lua_State *L, const nim_result_spec *s) {
    lua_Integer n = (lua_Integer)s->n;
    lua_Integer keep = (s->top_n > 0 && s->top_n < n) ? s->top_n : n;
    char uuid[37];
    uuid4(L, uuid);
    if (s->partial) {
        push_partial(L, s, keep, uuid);
        return;
    }
    /* The keys, interned once here and set with rawset: lua_setfield would hash and look up
     * each key string again for every result. */
    lua_pushliteral(L, "index");
    lua_pushliteral(L, "relevance_score");
    lua_pushliteral(L, "document");
    lua_pushliteral(L, "text");
    int k_index = lua_gettop(L) - 3, k_score = k_index + 1, k_doc = k_index + 2,
        k_text = k_index + 3;
    lua_createtable(L, 0, 3);
    lua_pushstring(L, uuid);
    lua_setfield(L, -2, "id");
    lua_createtable(L, (int)keep, 0);
    nim_mark_array(L, -1);
    for (lua_Integer i = 0; i < keep; i++) {
        const nim_ranking *r = &s->rk[i];
        int has_doc = s->return_documents &&
                      lua_rawgeti(L, s->texts, (lua_Integer)r->index + 1) == LUA_TSTRING;
        if (s->return_documents && !has_doc) lua_pop(L, 1); /* image only: no document */
        lua_createtable(L, 0, 3);
        lua_pushvalue(L, k_index);
        lua_pushinteger(L, (lua_Integer)r->index + s->offset);
        lua_rawset(L, -3);
        lua_pushvalue(L, k_score);
        lua_pushnumber(L, r->score);
        lua_rawset(L, -3);
        if (has_doc) { /* the text is below the result: {text = it} becomes its document */
            lua_pushvalue(L, k_doc);
            lua_createtable(L, 0, 1);
            lua_pushvalue(L, k_text);
            lua_pushvalue(L, -5);
            lua_rawset(L, -3);
            lua_rawset(L, -3);
            lua_remove(L, -2);
        }
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "results");
    push_meta(L, s->tokens);
    lua_setfield(L, -2, "meta");
    lua_replace(L, k_index); /* the result where the keys began */
    lua_pop(L, 3);
}

void nim_annotate_meta(lua_State *L, const char *provider, const char *family, const char *model,
                       int dropped, double seconds) {
    lua_getfield(L, -1, "meta");
    lua_pushstring(L, provider);
    lua_setfield(L, -2, "provider");
    if (family) {
        lua_pushstring(L, family);
        lua_setfield(L, -2, "family");
    }
    lua_pushstring(L, model);
    lua_setfield(L, -2, "model");
    if (seconds >= 0) {
        lua_pushnumber(L, seconds * 1000.0);
        lua_setfield(L, -2, "latency_ms");
    }
    if (dropped && lua_rawlen(L, dropped) > 0) {
        lua_pushvalue(L, dropped);
        nim_mark_array(L, -1);
        lua_setfield(L, -2, "dropped_params");
    }
    lua_pop(L, 1);
}

/* ---- merging batches ------------------------------------------------------------------------ */

typedef struct {
    nim_ranking r;
    nim_merge_ref ref;
} entry;

static int entry_cmp(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (nim_ranking_before(&x->r, &y->r)) return -1;
    return nim_ranking_before(&y->r, &x->r) ? 1 : 0;
}

/* Pushes t[k] (t a table), read raw: merging runs no metamethod of the tables it is given,
 * so no script runs while it holds pointers into them. */
static int raw_field(lua_State *L, int t, const char *k) {
    t = lua_absindex(L, t);
    lua_pushstring(L, k);
    return lua_rawget(L, t);
}

/* Reads results[].index/relevance_score of every batch into C, from the results lists the
 * caller anchored in `lists` (read once: their lengths are lens[]). */
static void read_batches(lua_State *L, int lists, size_t k, const size_t *lens, entry *all,
                         const nim_ranking **heads, nim_ranking *flat, int *sorted) {
    size_t total = 0;
    *sorted = 1;
    for (size_t b = 0; b < k; b++) {
        lua_rawgeti(L, lists, (lua_Integer)b + 1);
        heads[b] = flat + total;
        for (size_t i = 0; i < lens[b]; i++) {
            entry *e = &all[total + i];
            e->r.index = 0;
            e->r.score = 0;
            if (lua_rawgeti(L, -1, (lua_Integer)i + 1) == LUA_TTABLE) {
                raw_field(L, -1, "index");
                raw_field(L, -2, "relevance_score");
                e->r.index = (size_t)lua_tointeger(L, -2);
                e->r.score = lua_tonumber(L, -1);
                lua_pop(L, 2);
            }
            e->ref.list = b;
            e->ref.pos = i;
            flat[total + i] = e->r;
            lua_pop(L, 1);
        }
        if (!nim_rankings_sorted(heads[b], lens[b])) *sorted = 0;
        total += lens[b];
        lua_pop(L, 1);
    }
}

/* Pushes the merged call's meta: a copy of the first batch's (the table at batches[1]), tokens
 * summed over the k batches, latency the slowest batch's. */
/* Sums, into the table on top, every integer field of the billed_units table at idx (tokens
 * for NIM, search units for Cohere: whatever the batches' provider counts). */
static void add_billed(lua_State *L, int idx) {
    int sum = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_isinteger(L, -1)) {
            lua_Integer v = lua_tointeger(L, -1);
            lua_pushvalue(L, -2);
            lua_pushvalue(L, -1);
            lua_rawget(L, sum);
            lua_Integer before = lua_tointeger(L, -1);
            lua_pop(L, 1);
            lua_pushinteger(L, before + v);
            lua_rawset(L, sum);
        }
        lua_pop(L, 1);
    }
}

static void merged_meta(lua_State *L, int batches, size_t k) {
    lua_Number slowest = 0;
    lua_newtable(L); /* the billed units, summed */
    int billed = lua_gettop(L);
    for (size_t b = 1; b <= k; b++) {
        lua_rawgeti(L, batches, (lua_Integer)b);
        if (raw_field(L, -1, "meta") == LUA_TTABLE) {
            if (raw_field(L, -1, "billed_units") == LUA_TTABLE) {
                lua_pushvalue(L, billed);
                add_billed(L, lua_gettop(L) - 1);
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
            raw_field(L, -1, "latency_ms");
            if (lua_tonumber(L, -1) > slowest) slowest = lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
        lua_pop(L, 2);
    }
    lua_newtable(L);
    int meta = lua_gettop(L);
    lua_rawgeti(L, batches, 1);
    if (raw_field(L, -1, "meta") == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, meta);
        }
    }
    lua_settop(L, meta);
    lua_pushvalue(L, billed);
    lua_setfield(L, -2, "billed_units");
    lua_pushnumber(L, slowest);
    lua_setfield(L, -2, "latency_ms");
    lua_remove(L, billed);
}

/* Pushes the merged result's table ({id = the first batch's id}) and its results list, to be
 * filled with keep entries. */
static void push_merged_shell(lua_State *L, int batches, size_t keep) {
    lua_createtable(L, 0, 3);
    lua_rawgeti(L, batches, 1);
    raw_field(L, -1, "id");
    lua_setfield(L, -3, "id");
    lua_pop(L, 1);
    lua_createtable(L, (int)keep, 0);
    nim_mark_array(L, -1);
}

/* Merges partial results (a batch's rankings in C): a k-way merge by the ranking rule, then
 * one result table per entry kept, its text from its batch's texts. The batches are in the
 * private table at slot 3; their rankings and texts are anchored there too. */
static int merge_partial(lua_State *L, size_t k, lua_Integer top_n, int return_documents) {
    const nim_ranking **heads = lua_newuserdatauv(L, k * sizeof *heads, 0); /* 4 */
    size_t *lens = lua_newuserdatauv(L, k * sizeof *lens, 0);               /* 5 */
    size_t *cursor = lua_newuserdatauv(L, k * sizeof *cursor, 0);           /* 6 */
    lua_createtable(L, (int)k, 0);                                          /* 7: texts */
    lua_Integer *offsets = lua_newuserdatauv(L, k * sizeof *offsets, 0);    /* 8 */
    lua_createtable(L, (int)k, 0);                                          /* 9: rankings */
    size_t total = 0;
    for (size_t b = 0; b < k; b++) {
        lua_rawgeti(L, 3, (lua_Integer)b + 1);
        raw_field(L, -1, "rankings");
        batch_rankings *br = to_batch_rankings(L, -1);
        if (!br)
            return luaL_error(L, "nim.native.merge: [%d]: not a batch's partial result",
                              (int)b + 1);
        lua_rawseti(L, 9, (lua_Integer)b + 1); /* anchored while heads[b] points into it */
        lens[b] = br->n;
        offsets[b] = br->offset;
        nim_rankings_sort(br->rk, br->n); /* providers answer in rank order: usually a no-op */
        heads[b] = br->rk;
        total += lens[b];
        if (raw_field(L, -1, "texts") != LUA_TTABLE)
            return luaL_error(L, "nim.native.merge: [%d].texts: expected a list", (int)b + 1);
        lua_rawseti(L, 7, (lua_Integer)b + 1);
        lua_pop(L, 1);
    }
    size_t keep = (top_n > 0 && (size_t)top_n < total) ? (size_t)top_n : total;
    nim_merge_ref *refs = lua_newuserdatauv(L, (keep ? keep : 1) * sizeof *refs, 0); /* 10 */
    keep = nim_rankings_merge(heads, lens, k, keep, cursor, refs);
    lua_pushliteral(L, "index");
    lua_pushliteral(L, "relevance_score");
    lua_pushliteral(L, "document");
    lua_pushliteral(L, "text"); /* 11-14 */
    push_merged_shell(L, 3, keep);
    for (size_t i = 0; i < keep; i++) {
        const nim_ranking *r = &heads[refs[i].list][refs[i].pos];
        lua_createtable(L, 0, 3);
        lua_pushvalue(L, 11);
        lua_pushinteger(L, (lua_Integer)r->index);
        lua_rawset(L, -3);
        lua_pushvalue(L, 12);
        lua_pushnumber(L, r->score);
        lua_rawset(L, -3);
        if (return_documents) {
            lua_rawgeti(L, 7, (lua_Integer)refs[i].list + 1); /* that batch's texts */
            lua_Integer local = (lua_Integer)r->index - offsets[refs[i].list] + 1;
            if (lua_rawgeti(L, -1, local) == LUA_TSTRING) {
                lua_pushvalue(L, 13);
                lua_createtable(L, 0, 1);
                lua_pushvalue(L, 14);
                lua_pushvalue(L, -4);
                lua_rawset(L, -3);
                lua_rawset(L, -5);
            }
            lua_pop(L, 2);
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "results");
    merged_meta(L, 3, k);
    lua_setfield(L, -2, "meta");
    return 1;
}

/* nim.native.merge(results, top_n | args) -> one result (given the call's args, top_n is
 * read from them by the binding's own rule): the batches' results (indices already the
 * caller's) in rank order, cut to top_n; id and meta of the first batch, tokens summed,
 * latency the slowest batch's. The batches are read raw, once, and anchored in private
 * tables for the whole merge: nothing a script does meanwhile (a finalizer) can pull them
 * away from under the pointers held. */
int nim_l_merge(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer top_n = lua_istable(L, 2) ? nim_args_top_n(L, 2) : luaL_optinteger(L, 2, 0);
    int docs = 1;
    if (lua_istable(L, 2) && lua_getfield(L, 2, "return_documents") == LUA_TBOOLEAN)
        docs = lua_toboolean(L, -1);
    lua_settop(L, 2);
    size_t k = lua_rawlen(L, 1), total = 0;
    luaL_argcheck(L, k > 0, 1, "no results to merge");
    luaL_checkstack(L, NIM_STACK_NEED, NULL);
    lua_createtable(L, (int)k, 0); /* 3: the batches, as they are now */
    for (size_t b = 1; b <= k; b++) {
        if (lua_rawgeti(L, 1, (lua_Integer)b) != LUA_TTABLE)
            return luaL_error(L, "nim.native.merge: [%d]: expected a result", (int)b);
        lua_rawseti(L, 3, (lua_Integer)b);
    }
    lua_rawgeti(L, 3, 1);
    int partial = raw_field(L, -1, "rankings") == LUA_TUSERDATA;
    lua_settop(L, 3);
    if (partial) return merge_partial(L, k, top_n, docs);

    lua_createtable(L, (int)k, 0);                            /* 4: each batch's results list */
    size_t *lens = lua_newuserdatauv(L, k * sizeof *lens, 0); /* 5 */
    for (size_t b = 1; b <= k; b++) {
        lua_rawgeti(L, 3, (lua_Integer)b);
        if (raw_field(L, -1, "results") != LUA_TTABLE)
            return luaL_error(L, "nim.native.merge: [%d].results: expected a list", (int)b);
        lens[b - 1] = lua_rawlen(L, -1);
        total += lens[b - 1];
        lua_rawseti(L, 4, (lua_Integer)b);
        lua_pop(L, 1);
    }
    /* scratch owned by the GC (slots 6-10): a raise frees it */
    entry *all = lua_newuserdatauv(L, (total ? total : 1) * sizeof *all, 0);
    nim_ranking *flat = lua_newuserdatauv(L, (total ? total : 1) * sizeof *flat, 0);
    size_t *cursor = lua_newuserdatauv(L, k * sizeof *cursor, 0);
    const nim_ranking **heads = lua_newuserdatauv(L, k * sizeof *heads, 0);
    int sorted;
    read_batches(L, 4, k, lens, all, heads, flat, &sorted);
    size_t keep = (top_n > 0 && (size_t)top_n < total) ? (size_t)top_n : total;
    nim_merge_ref *refs = lua_newuserdatauv(L, (keep ? keep : 1) * sizeof *refs, 0);
    if (sorted) { /* every provider answers in rank order: a k-way merge suffices */
        keep = nim_rankings_merge(heads, lens, k, keep, cursor, refs);
    } else {
        qsort(all, total, sizeof *all, entry_cmp);
        for (size_t i = 0; i < keep; i++)
            refs[i] = all[i].ref;
    }

    push_merged_shell(L, 3, keep);
    for (size_t i = 0; i < keep; i++) {
        lua_rawgeti(L, 4, (lua_Integer)refs[i].list + 1);
        lua_rawgeti(L, -1, (lua_Integer)refs[i].pos + 1);
        lua_rawseti(L, -3, (lua_Integer)i + 1);
        lua_pop(L, 1);
    }
    lua_setfield(L, -2, "results");
    merged_meta(L, 3, k);
    lua_setfield(L, -2, "meta");
    return 1;
}
