/* descriptor.c: a rerank provider described by data (lua/nim/providers/NAME.lua), read into C:
 * which descriptor a model string names, its route (URL, key, model in the body), the
 * parameters it passes through, and the shapes of its request and answer. nim.providers.add
 * (lua/nim/providers.lua) is nim_l_provider_register: the one check of a descriptor, which
 * registers a copy no Lua code can reach; the reads here are raw and typed all the same. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* ---- registering one ------------------------------------------------------------------------
 * The one check of a descriptor (nim.providers.add is this): every field's type and shape, so
 * C can trust what it reads. What is registered is a copy, kept where Lua code cannot reach
 * it: a call holds the copy it started with, whatever is registered after. */

#define NAME_MAX_LEN 64
#define PATH_MAX_LEN 256
#define ADD "nim.providers.add"

/* Built-in providers (lua/nim/providers/<name>.lua): a model with one of these prefixes is
 * refused, never sent to NVIDIA, when its descriptor is missing (no Lua layer loaded). */
const char *const nim_builtin_providers[] = {
    "nvidia_nim",  "cohere",   "azure_ai",    "jina_ai",     "voyage",
    "together_ai", "infinity", "hosted_vllm", "huggingface", NULL};
/* Prefixes that are never a descriptor's: the embedded reranker, the fusion, and the first
 * segments of NIM model strings that carry no provider prefix. */
static const char *const reserved_names[] = {"local", "hybrid", "nvidia", "ranking", NULL};

static int in(const char *const *list, const char *s) {
    for (; *list; list++)
        if (strcmp(*list, s) == 0) return 1;
    return 0;
}

static int bad(lua_State *L, const char *path, const char *fmt, const char *arg) {
    return nim_misuse(L, ADD, path, fmt, arg);
}

/* The path of field k below path, e.g. "descriptor.request.query"; pushed (anchors it). */
static const char *sub(lua_State *L, const char *path, const char *k) {
    return lua_pushfstring(L, "%s.%s", path, k);
}

static int token_ok(const char *s, size_t n, const char *extra) {
    if (n == 0 || n > NAME_MAX_LEN) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr(extra, s[i])) return 0;
    return 1;
}

static const char *want_string(lua_State *L, int v, const char *path) {
    if (lua_type(L, v) != LUA_TSTRING) bad(L, path, "expected string, got %s", luaL_typename(L, v));
    size_t n;
    const char *s = lua_tolstring(L, v, &n);
    if (strlen(s) != n) bad(L, path, "contains a NUL byte%s", "");
    return s;
}

static void check_field_name(lua_State *L, int v, const char *path) {
    size_t n;
    want_string(L, v, path);
    const char *s = lua_tolstring(L, v, &n);
    if (!token_ok(s, n, "_-."))
        bad(L, path,
            "must be a JSON field name (letters, digits, _-.; "
            "at most 64 bytes), got \"%s\"",
            s);
}

/* A URL path appended to a base: "/", then unreserved characters, no empty, "." or ".."
 * segment, so it cannot move the request to another host or up the server's tree. */
static void check_path(lua_State *L, int v, const char *path) {
    const char *s = want_string(L, v, path);
    size_t n = strlen(s);
    int ok = n > 0 && n <= PATH_MAX_LEN && s[0] == '/';
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)s[i]) || strchr("/-._~", s[i]);
    for (const char *seg = s; ok && seg && *seg; seg = strchr(seg + 1, '/')) {
        const char *next = strchr(seg + 1, '/');
        size_t len = (size_t)((next ? next : s + n) - (seg + 1));
        ok = !(len == 0 && next) && !(len == 1 && seg[1] == '.') &&
             !(len == 2 && seg[1] == '.' && seg[2] == '.');
    }
    if (!ok)
        bad(L, path,
            "must be a URL path: '/' then letters, digits and -._~ with no empty, "
            "'.' or '..' segment (got \"%s\")",
            s);
}

static void check_string_list(lua_State *L, int v, const char *path,
                              void (*check)(lua_State *, int, const char *), int max) {
    if (!lua_istable(L, v)) bad(L, path, "expected a list of strings, got %s", luaL_typename(L, v));
    lua_Integer n = (lua_Integer)lua_rawlen(L, v), count = 0;
    lua_pushnil(L);
    while (lua_next(L, v)) {
        count++;
        lua_pop(L, 1);
    }
    if (count != n || n > max)
        bad(L, path, "expected a list of at most %s strings", lua_pushfstring(L, "%d", max));
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, v, i);
        int item = lua_gettop(L);
        check(L, item, lua_pushfstring(L, "%s[%I]", path, i));
        lua_pop(L, 2);
    }
}

static void check_env_name(lua_State *L, int v, const char *path) {
    size_t n;
    want_string(L, v, path);
    const char *s = lua_tolstring(L, v, &n);
    if (!token_ok(s, n, "_") || isdigit((unsigned char)s[0]))
        bad(L, path, "must be an environment variable name, got \"%s\"", s);
}

static void check_boolean(lua_State *L, int v, const char *path) {
    if (!lua_isboolean(L, v)) bad(L, path, "expected boolean, got %s", luaL_typename(L, v));
}

/* What a truncate value may be on the wire: a boolean, a string or an integer. */
static void check_json_value(lua_State *L, int v, const char *path) {
    if (lua_isboolean(L, v) || lua_isinteger(L, v)) return;
    if (lua_type(L, v) == LUA_TSTRING) {
        want_string(L, v, path);
        return;
    }
    bad(L, path, "expected a boolean, a string or an integer, got %s", luaL_typename(L, v));
}

typedef struct {
    const char *name;
    void (*check)(lua_State *L, int v, const char *path);
} field_rule;

/* Checks the table at v against rules: every key known, every value by its rule. */
static void check_table(lua_State *L, int v, const char *path, const field_rule *rules) {
    if (!lua_istable(L, v)) bad(L, path, "expected table, got %s", luaL_typename(L, v));
    lua_pushnil(L);
    while (lua_next(L, v)) {
        int val = lua_gettop(L);
        const field_rule *r = rules;
        if (lua_type(L, val - 1) == LUA_TSTRING)
            while (r->name && strcmp(r->name, lua_tostring(L, val - 1)) != 0)
                r++;
        if (!r->name) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (const field_rule *k = rules; k->name; k++) {
                if (k != rules) luaL_addstring(&b, ", ");
                luaL_addstring(&b, k->name);
            }
            luaL_pushresult(&b);
            const char *known = lua_tostring(L, -1);
            const char *key = luaL_tolstring(L, val - 1, NULL);
            const char *where = lua_pushfstring(L, "%s.%s", path, key);
            nim_misuse(L, ADD, where, "unknown field (known: %s)", known);
        }
        r->check(L, val, sub(L, path, r->name));
        lua_settop(L, val - 1);
    }
}

static void check_header(lua_State *L, int v, const char *path) {
    const char *s = want_string(L, v, path);
    if (!nim_header_name_ok(s) || strlen(s) > NAME_MAX_LEN || nim_framing_header(s))
        bad(L, path, "must be a header name that does not frame the message, got \"%s\"", s);
}

static void check_prefix(lua_State *L, int v, const char *path) {
    const char *s = want_string(L, v, path);
    if (!nim_header_value_ok(s, strlen(s)) || strlen(s) > NAME_MAX_LEN)
        bad(L, path, "must be at most 64 bytes with no control character%s", "");
}

static void check_auth(lua_State *L, int v, const char *path) {
    static const field_rule rules[] = {{"header", check_header}, {"prefix", check_prefix}, {0}};
    check_table(L, v, path, rules);
}

static void check_document(lua_State *L, int v, const char *path) {
    const char *s = want_string(L, v, path);
    if (strcmp(s, "string") != 0 && strcmp(s, "object") != 0)
        bad(L, path, "must be \"string\" or \"object\", got \"%s\"", s);
}

static void check_truncate(lua_State *L, int v, const char *path) {
    static const field_rule rules[] = {
        {"field", check_field_name}, {"NONE", check_json_value}, {"END", check_json_value}, {0}};
    check_table(L, v, path, rules);
    if (raw_field(L, v, "field") == LUA_TNIL) bad(L, sub(L, path, "field"), "required%s", "");
    lua_pop(L, 1);
}

static void check_request(lua_State *L, int v, const char *path) {
    static const field_rule rules[] = {{"model", check_field_name},
                                       {"query", check_field_name},
                                       {"documents", check_field_name},
                                       {"top_n", check_field_name},
                                       {"document", check_document},
                                       {"truncate", check_truncate},
                                       {0}};
    check_table(L, v, path, rules);
}

static void check_tokens(lua_State *L, int v, const char *path) {
    check_string_list(L, v, path, check_field_name, 3);
}

static void check_response(lua_State *L, int v, const char *path) {
    static const field_rule rules[] = {{"list", check_field_name},
                                       {"index", check_field_name},
                                       {"score", check_field_name},
                                       {"id", check_field_name},
                                       {"tokens", check_tokens},
                                       {"billed_as", check_field_name},
                                       {0}};
    check_table(L, v, path, rules);
}

static const char *const param_kinds[] = {"integer", "number",  "boolean",
                                          "string",  "strings", NULL};

/* A map of names to what check(key) and check_value(value) allow. */
static void check_map(lua_State *L, int v, const char *path,
                      void (*check_key)(lua_State *, int, const char *),
                      void (*check_value)(lua_State *, int, const char *)) {
    if (!lua_istable(L, v)) bad(L, path, "expected table, got %s", luaL_typename(L, v));
    lua_pushnil(L);
    while (lua_next(L, v)) {
        int val = lua_gettop(L);
        check_key(L, val - 1, lua_pushfstring(L, "%s (a key)", path));
        lua_pushvalue(L, val - 1);
        check_value(L, val, lua_pushfstring(L, "%s[\"%s\"]", path, lua_tostring(L, -1)));
        lua_settop(L, val - 1);
    }
}

static void check_param_name(lua_State *L, int v, const char *path) {
    check_field_name(L, v, path);
    if (nim_args_known_key(lua_tostring(L, v)))
        bad(L, path, "\"%s\" is one of nimrank's own arguments", lua_tostring(L, v));
}

static void check_kind(lua_State *L, int v, const char *path) {
    if (!in(param_kinds, want_string(L, v, path)))
        bad(L, path, "must be integer, number, boolean, string or strings, got \"%s\"",
            lua_tostring(L, v));
}

static void check_params(lua_State *L, int v, const char *path) {
    check_map(L, v, path, check_param_name, check_kind);
}

static void check_short(lua_State *L, int v, const char *path) {
    check_map(L, v, path, check_path, check_path);
}

static void check_path_params(lua_State *L, int v, const char *path) {
    check_map(L, v, path, check_field_name, check_path);
}

static void check_full(lua_State *L, int v, const char *path) {
    check_string_list(L, v, path, check_path, 16);
}

static void check_env_list(lua_State *L, int v, const char *path) {
    check_string_list(L, v, path, check_env_name, 32);
}

static void check_max_passages(lua_State *L, int v, const char *path) {
    if (!lua_isinteger(L, v) || lua_tointeger(L, v) < 1 || lua_tointeger(L, v) > 10000000)
        bad(L, path, "expected an integer between 1 and 10000000%s", "");
}

static void check_status(lua_State *L, int v, const char *path) {
    if (!lua_isinteger(L, v) || lua_tointeger(L, v) < 300 || lua_tointeger(L, v) > 599)
        bad(L, path, "keys must be HTTP statuses 300..599%s", "");
}

static void check_error_type(lua_State *L, int v, const char *path) {
    const char *s = want_string(L, v, path);
    int t = nim_err_type_parse(s);
    if (t < 0 || t == NIM_ERR_CANCELLED) bad(L, path, "unknown error type \"%s\"", s);
}

static void check_errors(lua_State *L, int v, const char *path) {
    check_map(L, v, path, check_status, check_error_type);
}

static void check_base(lua_State *L, int v, const char *path) {
    char err[512];
    if (nim_check_base_url(want_string(L, v, path), path, err, sizeof err) != 0)
        nim_misuse(L, ADD, NULL, "%s", err);
}

static void check_name(lua_State *L, int v, const char *path) {
    size_t n;
    const char *s = want_string(L, v, path);
    lua_tolstring(L, v, &n);
    if (!token_ok(s, n, "_-") || !isalpha((unsigned char)s[0]))
        bad(L, path, "must be a letter then letters, digits, _ or - (at most 64), got \"%s\"", s);
    if (in(reserved_names, s)) bad(L, path, "\"%s\" is reserved", s);
}

static void check_native(lua_State *L, int v, const char *path) {
    if (strcmp(want_string(L, v, path), "nvidia_nim") != 0)
        bad(L, path, "must be \"nvidia_nim\" (NIM's own rules in C)%s", "");
}

static void check_docs(lua_State *L, int v, const char *path) { want_string(L, v, path); }

static const field_rule descriptor_rules[] = {{"name", check_name},
                                              {"native", check_native},
                                              {"api_base", check_base},
                                              {"base_env", check_env_list},
                                              {"key_env", check_env_list},
                                              {"key_required", check_boolean},
                                              {"auth", check_auth},
                                              {"path", check_path},
                                              {"full", check_full},
                                              {"short", check_short},
                                              {"path_params", check_path_params},
                                              {"request", check_request},
                                              {"params", check_params},
                                              {"response", check_response},
                                              {"max_passages", check_max_passages},
                                              {"errors", check_errors},
                                              {"docs", check_docs},
                                              {0}};

/* A deep copy of a checked descriptor (tables, strings, numbers, booleans; depth <= 3). */
static void push_copy(lua_State *L, int v, int depth) {
    if (!lua_istable(L, v) || depth > 3) {
        lua_pushvalue(L, v);
        return;
    }
    lua_newtable(L);
    int out = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, v)) {
        lua_pushvalue(L, -2);
        push_copy(L, lua_gettop(L) - 1, depth + 1);
        lua_rawset(L, out);
        lua_pop(L, 1);
    }
}

/* nim.native.provider_register(descriptor): checks it, registers a copy under its name. */
int nim_l_provider_register(lua_State *L) {
    if (!lua_istable(L, 1))
        return nim_misuse(L, ADD, NULL, "bad argument #1 (table expected, got %s)",
                          luaL_typename(L, 1));
    lua_settop(L, 1);
    check_table(L, 1, "descriptor", descriptor_rules);
    if (raw_field(L, 1, "name") == LUA_TNIL) bad(L, "descriptor.name", "required%s", "");
    const char *name = lua_tostring(L, -1);
    int native = raw_field(L, 1, "native") != LUA_TNIL;
    lua_pop(L, 1);
    if (native != (strcmp(name, "nvidia_nim") == 0))
        bad(L, "descriptor.native", "is NIM's alone, and NIM's descriptor must say it%s", "");
    nim_push_reg(L, nim_key_providers);
    lua_pushvalue(L, 2);
    push_copy(L, 1, 0);
    lua_rawset(L, -3);
    return 0;
}

/* nim.native.provider_get(name) -> a copy of the registered descriptor, or nil */
int nim_l_provider_get(lua_State *L) {
    luaL_checkstring(L, 1);
    nim_push_reg(L, nim_key_providers);
    lua_pushvalue(L, 1);
    if (lua_rawget(L, -2) != LUA_TTABLE) {
        lua_pushnil(L);
        return 1;
    }
    push_copy(L, lua_gettop(L), 0);
    return 1;
}

/* nim.native.provider_names() -> the registered names (unsorted) */
int nim_l_provider_names(lua_State *L) {
    nim_push_reg(L, nim_key_providers);
    lua_newtable(L);
    lua_Integer n = 0;
    lua_pushnil(L);
    while (lua_next(L, -3)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, ++n);
    }
    return 1;
}

/* ---- finding a descriptor ------------------------------------------------------------------ */

int nim_descriptor_push(lua_State *L, const char *model) {
    const char *slash = strchr(model, '/');
    size_t n = slash ? (size_t)(slash - model) : 0;
    if (n == 0 || n > NAME_MAX_LEN) {
        lua_pushnil(L);
        return 0;
    }
    nim_push_reg(L, nim_key_providers);
    lua_pushlstring(L, model, n);
    int t = lua_rawget(L, -2);
    lua_remove(L, -2);
    if (t != LUA_TTABLE) {
        lua_pop(L, 1);
        char prefix[NAME_MAX_LEN + 1];
        memcpy(prefix, model, n);
        prefix[n] = '\0';
        if (in(nim_builtin_providers, prefix) && strcmp(prefix, "nvidia_nim") != 0)
            nim_misuse(L, "nim.rerank", "model",
                       "no descriptor for provider '%s' is registered (the Lua layer, "
                       "lua/nim/providers/%s.lua, is not loaded): not sent anywhere",
                       prefix, prefix);
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
    /* "Bearer " belongs to Authorization; another header carries the bare key by default */
    d->auth_prefix = desc_string(L, auth, n, "prefix",
                                 strcasecmp(d->auth_header, "Authorization") == 0 ? "Bearer " : "");
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

/* The first non-empty variable of the list t[k]; its name in *name (the first of the list
 * when none is set). Leaves the stack as it found it. */
static const char *env_first(lua_State *L, int t, const char *k, const char **name) {
    int top = lua_gettop(L);
    const char *v = NULL;
    *name = NULL;
    if (raw_field(L, t, k) == LUA_TTABLE) {
        for (lua_Integer i = 1; !v && lua_rawgeti(L, top + 1, i) == LUA_TSTRING; i++) {
            const char *var = lua_tostring(L, -1); /* anchored by the descriptor's list */
            const char *val = getenv(var);
            if (!*name) *name = var;
            if (val && *val) {
                v = val;
                *name = var;
            }
            lua_pop(L, 1);
        }
    }
    lua_settop(L, top);
    return v;
}

const char *nim_descriptor_key(lua_State *L, int desc, const char **var) {
    return env_first(L, desc, "key_env", var);
}

/* Pushes "A or B" for the variables of the list t[k] (or "" when there are none). */
void nim_descriptor_env_names(lua_State *L, int desc, const char *k) {
    desc = lua_absindex(L, desc);
    raw_field(L, desc, k); /* below the buffer: the buffer's own slots stay on top */
    int list = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (lua_istable(L, list)) {
        for (lua_Integer i = 1; lua_rawgeti(L, list, i) == LUA_TSTRING; i++) {
            if (i > 1) {
                lua_pop(L, 1);
                luaL_addstring(&b, " or ");
                lua_rawgeti(L, list, i);
            }
            luaL_addvalue(&b);
        }
        lua_pop(L, 1); /* the nil that ended the list */
    }
    luaL_pushresult(&b);
    lua_remove(L, list);
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
    const char *clean = strchr(model, '/') + 1; /* the descriptor was found by this prefix */
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
    int w = snprintf(r->url, sizeof r->url, "%.*s%s", (int)bl, base, path ? path : "");
    if (w < 0 || (size_t)w >= sizeof r->url) {
        snprintf(err, errlen, "api_base: URL longer than %d characters", NIM_URL_MAX - 1);
        return -1;
    }
    if (nim_check_base_url(r->url, r->base_source, err, errlen) != 0) return -1;
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
    size_t qlen;
    const char *q = lua_tolstring(L, query_idx, &qlen);
    if (nim_buf_reserve(b, nim_wire_body_estimate(L, texts, 12, body_model) + qlen)) return -1;
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
