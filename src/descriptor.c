/* descriptor.c: a rerank provider described by data (lua/nim/providers/NAME.lua), read into C:
 * which descriptor a model string names, its route (URL, key, model in the body), the
 * parameters it passes through, and the shapes of its request and answer. The descriptor
 * table is registered by nim.providers (lua/nim/providers.lua, which checks it with readable
 * messages); the reads here are raw and typed all the same, so a table written into
 * nim.native.providers by hand cannot crash a call: it raises naming the field. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"

static const char *const FN = "nim.providers";

/* ---- typed raw reads ----------------------------------------------------------------------- */

static int raw_field(lua_State *L, int t, const char *k) {
    t = lua_absindex(L, t);
    lua_pushstring(L, k);
    return lua_rawget(L, t);
}

static const char *desc_string(lua_State *L, int t, const char *name, const char *k,
                               const char *dflt) {
    int type = raw_field(L, t, k);
    const char *s = dflt;
    if (type == LUA_TSTRING) {
        s = lua_tostring(L, -1);
        if (strlen(s) != lua_rawlen(L, -1))
            nim_misuse(L, FN, lua_pushfstring(L, "%s.%s", name, k), "contains a NUL byte");
    } else if (type != LUA_TNIL) {
        nim_misuse(L, FN, lua_pushfstring(L, "%s.%s", name, k), "expected string, got %s",
                   luaL_typename(L, -1));
    }
    lua_pop(L, 1); /* the string stays anchored by the descriptor */
    return s;
}

/* Pushes the subtable t[k] (an empty table when absent); raises on another type. */
static int desc_table(lua_State *L, int t, const char *name, const char *k) {
    int type = raw_field(L, t, k);
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        lua_newtable(L);
    } else if (type != LUA_TTABLE) {
        nim_misuse(L, FN, lua_pushfstring(L, "%s.%s", name, k), "expected table, got %s",
                   luaL_typename(L, -1));
    }
    return lua_gettop(L);
}

/* ---- finding a descriptor ------------------------------------------------------------------ */

int nim_descriptor_push(lua_State *L, const char *model) {
    const char *slash = strchr(model, '/');
    if (!slash || slash == model || slash - model > 64) {
        lua_pushnil(L);
        return 0;
    }
    nim_push_reg(L, nim_key_providers);
    lua_pushlstring(L, model, (size_t)(slash - model));
    int t = lua_rawget(L, -2);
    lua_remove(L, -2);
    if (t != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_pushnil(L);
        return 0;
    }
    /* NVIDIA NIM's own descriptor documents it; its calls run provider_http.c's NIM rules. */
    int native = raw_field(L, lua_gettop(L), "native") != LUA_TNIL;
    lua_pop(L, 1);
    if (native) {
        lua_pop(L, 1);
        lua_pushnil(L);
        return 0;
    }
    return 1;
}

/* ---- reading one ----------------------------------------------------------------------------- */

void nim_descriptor_read(lua_State *L, int idx, nim_descriptor *d) {
    idx = lua_absindex(L, idx);
    int top = lua_gettop(L);
    memset(d, 0, sizeof *d);
    d->name = desc_string(L, idx, "?", "name", NULL);
    if (!d->name) nim_misuse(L, FN, "name", "required");
    const char *n = d->name;
    d->path = desc_string(L, idx, n, "path", "");
    d->default_base = desc_string(L, idx, n, "api_base", NULL);
    lua_pushliteral(L, "key_required");
    d->key_required = lua_rawget(L, idx) == LUA_TBOOLEAN && lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_pushliteral(L, "max_passages");
    if (lua_rawget(L, idx) != LUA_TNIL) {
        int isint;
        d->max_passages = lua_tointegerx(L, -1, &isint);
        if (!isint || d->max_passages < 1)
            nim_misuse(L, FN, lua_pushfstring(L, "%s.max_passages", n), "expected an integer >= 1");
    }
    lua_pop(L, 1);

    int auth = desc_table(L, idx, n, "auth");
    d->auth_header = desc_string(L, auth, n, "header", "Authorization");
    d->auth_prefix = desc_string(L, auth, n, "prefix", "Bearer ");
    int req = desc_table(L, idx, n, "request");
    d->model_field = desc_string(L, req, n, "model", NULL);
    d->query_field = desc_string(L, req, n, "query", "query");
    d->documents_field = desc_string(L, req, n, "documents", "documents");
    d->top_n_field = desc_string(L, req, n, "top_n", NULL);
    const char *doc = desc_string(L, req, n, "document", "string");
    if (raw_field(L, req, "truncate") == LUA_TTABLE)
        d->truncate_field = desc_string(L, lua_gettop(L), n, "field", NULL);
    lua_pop(L, 1);
    d->document_objects = strcmp(doc, "object") == 0;
    if (!d->document_objects && strcmp(doc, "string") != 0)
        nim_misuse(L, FN, lua_pushfstring(L, "%s.request.document", n),
                   "must be \"string\" or \"object\" (got \"%s\")", doc);
    int res = desc_table(L, idx, n, "response");
    nim_answer_shape *s = &d->answer;
    s->list = desc_string(L, res, n, "list", NULL);
    s->index = desc_string(L, res, n, "index", "index");
    s->score = desc_string(L, res, n, "score", "relevance_score");
    s->id = desc_string(L, res, n, "id", NULL);
    d->billed_as = desc_string(L, res, n, "billed_as", "total_tokens");
    if (raw_field(L, res, "tokens") == LUA_TTABLE) {
        int tk = lua_gettop(L);
        for (int i = 0; i < 3; i++) {
            if (lua_rawgeti(L, tk, i + 1) == LUA_TSTRING) s->tokens[i] = lua_tostring(L, -1);
            lua_pop(L, 1); /* anchored by the tokens list, anchored by the descriptor */
        }
    }
    lua_settop(L, top); /* the subtables stay anchored by the descriptor, and their strings */
}

/* ---- the route --------------------------------------------------------------------------- */

/* The first non-empty variable of the list t[k]; its name in *name. */
static const char *env_first(lua_State *L, int t, const char *k, const char **name) {
    const char *v = NULL;
    *name = NULL;
    if (raw_field(L, t, k) == LUA_TTABLE) {
        int list = lua_gettop(L);
        for (lua_Integer i = 1; !v && lua_rawgeti(L, list, i) == LUA_TSTRING; i++) {
            const char *var = lua_tostring(L, -1);
            const char *val = getenv(var);
            if (!*name) *name = var; /* the first one is named when none is set */
            if (val && *val) {
                v = val;
                *name = var;
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return v;
}

const char *nim_descriptor_key(lua_State *L, int desc, const char **var) {
    return env_first(L, desc, "key_env", var);
}

/* Pushes "A or B" for the variables of the list t[k] (or "" when there are none). */
void nim_descriptor_env_names(lua_State *L, int desc, const char *k) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (raw_field(L, desc, k) == LUA_TTABLE) {
        for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TSTRING; i++) {
            const char *var = lua_tostring(L, -1);
            lua_pop(L, 1);
            if (i > 1) luaL_addstring(&b, " or ");
            luaL_addstring(&b, var);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    luaL_pushresult(&b);
}

static int ends_with(const char *s, size_t n, const char *suffix) {
    size_t k = strlen(suffix);
    return k > 0 && n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* What to append to the base (its first bl bytes, no trailing '/'), or NULL when the base is
 * already the full URL: it ends with the path or one of `full`, or has a query. A base ending
 * with a key of `short` gets that key's value ({["/v1"] = "/rerank"}); a parameter named in
 * `path_params` that the call passes picks its path (Cohere's v1-only max_chunks_per_doc). */
static const char *route_path(lua_State *L, int desc, const nim_descriptor *d, int args,
                              const char *base, size_t bl) {
    int top = lua_gettop(L);
    const char *path = d->path, *found = NULL;
    if (args && raw_field(L, desc, "path_params") == LUA_TTABLE) {
        int pp = lua_gettop(L);
        lua_pushnil(L);
        while (!found && lua_next(L, pp)) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING &&
                lua_getfield(L, args, lua_tostring(L, -2)) != LUA_TNIL)
                found = lua_tostring(L, -2); /* anchored by the descriptor */
            lua_settop(L, pp + 1);
        }
        if (found) {
            lua_settop(L, pp);
            path = found;
        }
    }
    lua_settop(L, top);
    if (strchr(base, '?') || ends_with(base, bl, path)) return NULL;
    if (raw_field(L, desc, "full") == LUA_TTABLE) {
        for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TSTRING; i++) {
            int full = ends_with(base, bl, lua_tostring(L, -1));
            lua_pop(L, 1);
            if (full) {
                lua_settop(L, top);
                return NULL;
            }
        }
    }
    lua_settop(L, top);
    if (raw_field(L, desc, "short") == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, top + 1)) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING &&
                ends_with(base, bl, lua_tostring(L, -2))) {
                path = lua_tostring(L, -1);
                break;
            }
            lua_pop(L, 1);
        }
    }
    lua_settop(L, top);
    return path;
}

int nim_descriptor_route(lua_State *L, int desc, const nim_descriptor *d, const char *model,
                         const char *api_base, int args, nim_route *r, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    r->family = NIM_FAMILY_RETRIEVAL;
    const char *clean = model + strlen(d->name) + 1; /* the descriptor was found by the prefix */
    if (!*clean) {
        snprintf(err, errlen, "model: '%s' names no model after the provider prefix", model);
        return -1;
    }
    if (strlen(clean) >= sizeof r->model) {
        snprintf(err, errlen, "model: longer than %d bytes", NIM_MODEL_MAX - 1);
        return -1;
    }
    strcpy(r->model, clean);
    strcpy(r->body_model, clean);
    const char *base = api_base && *api_base ? api_base : NULL, *var = NULL;
    r->base_source = "api_base";
    if (!base) {
        base = env_first(L, desc, "base_env", &var);
        r->base_source = var;
    }
    if (!base) {
        base = d->default_base;
        r->base_source = "default";
    }
    if (!base) {
        nim_descriptor_env_names(L, desc, "base_env");
        snprintf(err, errlen, "api_base: required for %s models (pass api_base%s%s)", d->name,
                 lua_rawlen(L, -1) ? " or set " : "", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    if (nim_check_base_url(base, r->base_source, err, errlen) != 0) return -1;
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        bl--;
    const char *path = route_path(L, desc, d, args, base, bl);
    int w = path ? snprintf(r->url, sizeof r->url, "%.*s%s", (int)bl, base, path)
                 : snprintf(r->url, sizeof r->url, "%s", base);
    if (w < 0 || (size_t)w >= sizeof r->url) {
        snprintf(err, errlen, "api_base: URL longer than %d characters", NIM_URL_MAX - 1);
        return -1;
    }
    r->hosted = d->key_required;
    return 0;
}

/* ---- parameters passed through --------------------------------------------------------------- */

static int is_string_list(lua_State *L, int idx) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    lua_pushnil(L);
    lua_Integer count = 0;
    while (lua_next(L, idx)) {
        count++;
        int ok = lua_type(L, -2) == LUA_TNUMBER && lua_type(L, -1) == LUA_TSTRING;
        lua_pop(L, 1);
        if (!ok) {
            lua_pop(L, 1);
            return 0;
        }
    }
    return count == n;
}

void nim_descriptor_params(lua_State *L, int desc, int args, int out) {
    int params = desc_table(L, desc, "?", "params");
    lua_pushnil(L);
    while (lua_next(L, params)) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            continue;
        }
        const char *name = lua_tostring(L, -2), *kind = lua_tostring(L, -1);
        int t = lua_getfield(L, args, name);
        int v = lua_gettop(L);
        if (t != LUA_TNIL) {
            int isint = 0;
            if (t == LUA_TNUMBER) lua_tointegerx(L, v, &isint);
            const char *want = NULL;
            if (strcmp(kind, "integer") == 0) {
                if (!isint) want = "an integer";
            } else if (strcmp(kind, "number") == 0) {
                if (t != LUA_TNUMBER || lua_tonumber(L, v) != lua_tonumber(L, v) ||
                    lua_tonumber(L, v) - lua_tonumber(L, v) != 0)
                    want = "a finite number";
            } else if (strcmp(kind, "boolean") == 0) {
                if (t != LUA_TBOOLEAN) want = "a boolean";
            } else if (strcmp(kind, "string") == 0) {
                if (t != LUA_TSTRING) want = "a string";
            } else if (strcmp(kind, "strings") == 0) {
                if (t != LUA_TTABLE || !is_string_list(L, v)) want = "a list of strings";
            } else {
                nim_misuse(L, FN, lua_pushfstring(L, "params.%s", name),
                           "unknown kind '%s' (integer, number, boolean, string, strings)", kind);
            }
            if (want)
                nim_misuse(L, "nim.rerank", name, "expected %s, got %s", want, luaL_typename(L, v));
            lua_pushvalue(L, -3);
            lua_pushvalue(L, v);
            lua_rawset(L, out);
        }
        lua_settop(L, v - 2); /* the key, for lua_next */
    }
    lua_pop(L, 1);
}

int nim_descriptor_truncate(lua_State *L, int desc, const char *truncate) {
    int top = lua_gettop(L);
    if (truncate && raw_field(L, desc, "request") == LUA_TTABLE &&
        raw_field(L, -1, "truncate") == LUA_TTABLE && raw_field(L, -1, truncate) != LUA_TNIL) {
        lua_replace(L, top + 1);
        lua_settop(L, top + 1);
        return 1;
    }
    lua_settop(L, top);
    lua_pushnil(L);
    return 0;
}

int nim_descriptor_supports(lua_State *L, int desc, const char *key) {
    int top = lua_gettop(L);
    int yes = raw_field(L, desc, "params") == LUA_TTABLE && raw_field(L, -1, key) == LUA_TSTRING;
    lua_settop(L, top);
    return yes;
}

int nim_descriptor_has_truncate(lua_State *L, int desc) {
    int top = lua_gettop(L);
    int yes =
        raw_field(L, desc, "request") == LUA_TTABLE && raw_field(L, -1, "truncate") == LUA_TTABLE;
    lua_settop(L, top);
    return yes;
}

/* ---- the request body ------------------------------------------------------------------------ */

#define ADD_LIT(b, lit) nim_buf_add((b), (lit), sizeof(lit) - 1)

/* A value of a passed-through parameter or a truncate mapping: boolean, number or string, or
 * a list of strings (an empty one is [], never cjson's {}). Raw reads only. */
static int add_value(lua_State *L, nim_buf *b, int v) {
    char num[64];
    int k;
    switch (lua_type(L, v)) {
    case LUA_TBOOLEAN: return lua_toboolean(L, v) ? ADD_LIT(b, "true") : ADD_LIT(b, "false");
    case LUA_TNUMBER:
        if (lua_isinteger(L, v))
            k = snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, v));
        else
            k = snprintf(num, sizeof num, "%.17g", (double)lua_tonumber(L, v));
        return nim_buf_add(b, num, (size_t)k);
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, v, &n);
        return nim_buf_json_string(b, s, n);
    }
    case LUA_TTABLE: {
        int rc = ADD_LIT(b, "[");
        lua_Integer n = (lua_Integer)lua_rawlen(L, v); /* checked: strings only */
        for (lua_Integer i = 1; !rc && i <= n; i++) {
            size_t len;
            lua_rawgeti(L, v, i);
            const char *s = lua_tolstring(L, -1, &len);
            rc = (i > 1 && ADD_LIT(b, ",")) || nim_buf_json_string(b, s, len);
            lua_pop(L, 1);
        }
        return rc || ADD_LIT(b, "]");
    }
    default: return ADD_LIT(b, "null");
    }
}

static int add_key(nim_buf *b, const char *k) {
    return ADD_LIT(b, ",") || nim_buf_json_string(b, k, strlen(k)) || ADD_LIT(b, ":");
}

int nim_descriptor_body(lua_State *L, nim_buf *b, const nim_descriptor *d, int texts, int query_idx,
                        const char *body_model, lua_Integer top_n, int truncate_v, int params) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, texts);
    size_t qlen, estimate = 256 + strlen(body_model);
    const char *q = lua_tolstring(L, query_idx, &qlen);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, texts, i) == LUA_TSTRING) estimate += lua_rawlen(L, -1);
        lua_pop(L, 1);
        estimate += 12;
    }
    if (nim_buf_reserve(b, estimate + qlen)) return -1;
    /* The query first: every key after it starts with a comma. */
    if (ADD_LIT(b, "{") || nim_buf_json_string(b, d->query_field, strlen(d->query_field)) ||
        ADD_LIT(b, ":") || nim_buf_json_string(b, q, qlen))
        return -1;
    if (d->model_field &&
        (add_key(b, d->model_field) || nim_buf_json_string(b, body_model, strlen(body_model))))
        return -1;
    if (add_key(b, d->documents_field) || ADD_LIT(b, "[")) return -1;
    for (lua_Integer i = 1; i <= n; i++) {
        size_t tl = 0;
        const char *t = "";
        if (lua_rawgeti(L, texts, i) == LUA_TSTRING) t = lua_tolstring(L, -1, &tl);
        lua_pop(L, 1); /* anchored by texts */
        if (i > 1 && ADD_LIT(b, ",")) return -1;
        if (d->document_objects && ADD_LIT(b, "{\"text\":")) return -1;
        if (nim_buf_json_string(b, t, tl)) return -1;
        if (d->document_objects && ADD_LIT(b, "}")) return -1;
    }
    if (ADD_LIT(b, "]")) return -1;
    if (top_n > 0 && d->top_n_field) {
        char num[40];
        int k = snprintf(num, sizeof num, "%lld", (long long)top_n);
        if (add_key(b, d->top_n_field) || nim_buf_add(b, num, (size_t)k)) return -1;
    }
    if (truncate_v && d->truncate_field &&
        (add_key(b, d->truncate_field) || add_value(L, b, truncate_v)))
        return -1;
    if (params) {
        lua_pushnil(L);
        while (lua_next(L, params)) {
            int rc = add_key(b, lua_tostring(L, -2)) || add_value(L, b, lua_gettop(L));
            lua_pop(L, 1);
            if (rc) {
                lua_pop(L, 1);
                return -1;
            }
        }
    }
    return ADD_LIT(b, "}");
}
