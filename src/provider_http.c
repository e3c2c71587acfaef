/* provider_http.c: a rerank call over HTTP. Starting it (route, body, headers), NVCF 202
 * polling, and turning the answer into a result or an error. Two kinds of provider run here:
 * NVIDIA NIM (its routes are resolve.c's, its body and answer wire.c's, plus NVCF polling and
 * end-of-life notes), and every provider a descriptor describes (descriptor.c: route, body,
 * answer shape, error statuses). This file decides what the HTTP exchange means.
 *
 * The call's user value holds: provider, model, key (for the header and redaction only), url
 * (of the request in flight), route_model, body_model, family, status_url, ca_bundle,
 * dropped, replacement, texts, hlines/hnames (the caller's headers), and for a descriptor's
 * provider: descriptor, params (the values passed through), truncate (its JSON value). */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "clock.h"
#include "nimrank.h"
#include "wire.h"

#define NVCF_REQID "NVCF-REQID"

/* The call's provider name ("nvidia_nim", "cohere", ...): anchored by the user value. */
static const char *provider(lua_State *L, int uv) {
    lua_getfield(L, uv, "provider");
    const char *p = lua_tostring(L, -1);
    lua_pop(L, 1);
    return p ? p : nim_provider_name(NIM_PROVIDER_NVIDIA);
}

static void set_string(lua_State *L, int t, const char *k, const char *v) {
    if (!v) return;
    lua_pushstring(L, v);
    lua_setfield(L, t, k);
}

/* ---- errors --------------------------------------------------------------------------------- */

/* A duration for a message: "0.5", "60", "0.00186" (three significant digits). */
typedef struct {
    char s[32];
} seconds_buf;
static seconds_buf seconds_text(double seconds) {
    seconds_buf b;
    snprintf(b.s, sizeof b.s, "%.3g", seconds);
    return b;
}

/* The call's warning (uv.warning: an API key sent in clear text), if any, as warnings = {w}
 * in the table on top: on its result's meta and on its error alike. */
static void add_warning(lua_State *L, int uv) {
    if (lua_getfield(L, uv, "warning") != LUA_TSTRING) {
        lua_pop(L, 1);
        return;
    }
    lua_createtable(L, 1, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
    nim_mark_array(L, -1);
    lua_setfield(L, -2, "warnings");
}

/* Settles the call at idx with the message on top as an error of this provider. */
static void settle_error(lua_State *L, int idx, int uv, nim_err_type type, long status,
                         int retryable) {
    /* Once NVCF has queued the request, a retry would POST it again and queue a second job:
     * the error says which request it was and is not retryable. */
    if (lua_getfield(L, uv, "nvcf_reqid") == LUA_TSTRING) {
        retryable = 0;
        lua_pushfstring(L, "NVCF request '%s': %s", lua_tostring(L, -1), lua_tostring(L, -2));
        lua_replace(L, -3);
    }
    lua_pop(L, 1);
    nim_redact(L, -1, uv);
    lua_getfield(L, uv, "model");
    nim_error e = {type, status, retryable, provider(L, uv), lua_tostring(L, -1), NULL};
    lua_insert(L, -2); /* message back on top */
    nim_push_error(L, &e);
    add_warning(L, uv);
    if (lua_getfield(L, uv, "nvcf_reqid") == LUA_TSTRING)
        lua_setfield(L, -2, "nvcf_reqid");
    else
        lua_pop(L, 1);
    lua_remove(L, -2);
    nim_call_settle(L, idx, "err");
}

/* ---- starting ------------------------------------------------------------------------------- */

static void complete(lua_State *L, int idx);

/* Fills what every request of the call shares (CA store, limits, the headers to keep) and
 * returns the engine; NULL with a message pushed. Lua is touched here, never in send(). */
static nim_engine *prepare(lua_State *L, int idx, int uv, nim_request *r) {
    char err[512];
    nim_call *c = lua_touserdata(L, idx);
    nim_engine *engine = nim_ctx_engine(L, err, sizeof err);
    if (!engine) {
        lua_pushstring(L, err);
        return NULL;
    }
    static const char *const want[] = {NVCF_REQID};
    int nim = lua_getfield(L, uv, "descriptor") == LUA_TNIL;
    lua_pop(L, 1);
    r->want_headers = nim ? want : NULL; /* NVCF's queue id: NIM's alone */
    r->nwant = nim ? 1 : 0;
    lua_getfield(L, uv, "ca_bundle");
    r->ca_bundle = lua_tostring(L, -1); /* anchored by uv */
    lua_pop(L, 1);
    r->max_response = (size_t)c->max_response;
    if (nim_setting(L, "max_connections") == LUA_TNUMBER)
        nim_engine_set_max_connections(engine, (long)lua_tointeger(L, -1));
    lua_pop(L, 1);
    return engine;
}

/* Starts the prepared request (the engine takes r->body, whatever happens). 0, or -1 with
 * the message in err. Nothing here raises. */
static int send(nim_engine *engine, nim_call *c, nim_request *r, char *err, size_t errlen) {
    c->sent_at = r->not_before > 0 ? r->not_before : nim_now();
    c->t = nim_engine_start(engine, r, err, errlen);
    return c->t ? 0 : -1;
}

/* Fills the user value from the checked arguments and the route. */
static void describe(lua_State *L, int uv, const nim_args *a, const nim_route *route, int entry_idx,
                     const char *name) {
    lua_newtable(L);
    int secrets = lua_gettop(L);
    if (a->api_key) nim_secret_add(L, secrets, a->api_key, strlen(a->api_key));
    nim_secrets_add_url(L, secrets, route->url);
    nim_secrets_add_url(L, secrets, a->nvcf_status_url);
    lua_setfield(L, uv, "secrets");
    set_string(L, uv, "provider", name);
    set_string(L, uv, "model", a->model);
    nim_push_display_url(L, route->url);
    lua_setfield(L, uv, "url");
    if (a->key_from_env && strncmp(route->url, "http://", 7) == 0 &&
        !nim_url_is_loopback(route->url)) {
        lua_pushfstring(L,
                        "%s from the environment was sent over plain http:// to a host "
                        "that is not this machine; use https://, or pass api_key",
                        a->key_source);
        lua_setfield(L, uv, "warning");
    }
    set_string(L, uv, "route_model", route->model);
    set_string(L, uv, "body_model", route->body_model);
    if (!a->desc) set_string(L, uv, "family", nim_family_name(route->family));
    /* NVIDIA's status host is polled (with this call's key) only for NVIDIA's hosted API: a
     * server elsewhere that answers 202 is not followed there unless a status URL is given. */
    if (!a->desc && (route->hosted || !a->nvcf_status_default))
        set_string(L, uv, "status_url", a->nvcf_status_url);
    set_string(L, uv, "ca_bundle", a->ca_bundle);
    set_string(L, uv, "key", a->api_key);
    lua_pushvalue(L, a->dropped);
    lua_setfield(L, uv, "dropped");
    if (entry_idx && lua_getfield(L, entry_idx, "replacement") == LUA_TSTRING)
        lua_setfield(L, uv, "replacement");
    else if (entry_idx)
        lua_pop(L, 1);
}

/* Resolves the route; raises naming the field. Pushes the catalog entry (or nil). */
static lua_Integer route_of(lua_State *L, const nim_args *a, nim_route *route) {
    nim_family family;
    const char *clean;
    char err[512];
    if (nim_model_parse(a->model, &family, &clean, err, sizeof err) != 0)
        nim_misuse(L, "nim.rerank", NULL, "%s", err);
    nim_catalog_entry entry;
    lua_Integer max_passages;
    int has_entry = nim_catalog_lookup(L, clean, &entry, &max_passages);
    if (!has_entry) lua_pushnil(L);
    if (nim_resolve(a->model, a->api_base, has_entry ? &entry : NULL, NULL, NULL, route, err,
                    sizeof err) != 0)
        nim_misuse(L, "nim.rerank", NULL, "%s", err);
    const char *src = a->nvcf_status_source;
    if (nim_check_status_url(a->nvcf_status_url, src, err, sizeof err) != 0) {
        size_t n = strlen(src); /* err is "<source>: why"; misuse names the field itself */
        nim_misuse(L, "nim.rerank", src, "%s", strncmp(err, src, n) == 0 ? err + n + 2 : err);
    }
    return max_passages;
}

/* Checks what can be known before sending; settles the call when the answer is known (too
 * many documents, no key, nothing to rank). Returns 1 when settled. */
static int settled_early(lua_State *L, int call, int uv, const nim_args *a, const nim_route *route,
                         lua_Integer max_passages) {
    if (max_passages > 0 && a->ndocs > max_passages) {
        lua_pushfstring(L,
                        "documents: %I documents exceed the limit of %I passages per request "
                        "for %s; split them into batches of at most %I (nim.rerank does)",
                        a->ndocs, max_passages, route->model, max_passages);
        settle_error(L, call, uv, NIM_ERR_BAD_REQUEST, 0, 0);
        return 1;
    }
    if (!a->api_key && route->hosted && !a->desc) {
        lua_pushliteral(L, "no API key for the hosted NVIDIA API: pass api_key or set "
                           "NVIDIA_NIM_API_KEY");
        settle_error(L, call, uv, NIM_ERR_AUTH, 0, 0);
        return 1;
    }
    if (!a->api_key && route->hosted) {
        nim_descriptor_env_names(L, a->desc, "key_env");
        lua_pushfstring(L, "no API key for %s: pass api_key%s%s", provider(L, uv),
                        lua_rawlen(L, -1) ? " or set " : "", lua_tostring(L, -1));
        lua_remove(L, -2);
        settle_error(L, call, uv, NIM_ERR_AUTH, 0, 0);
        return 1;
    }
    if (a->ndocs == 0) { /* nothing to rank: no network call */
        nim_result_spec s = {NULL, 0, 0, 0, 0, 0, 0, 0};
        nim_push_result(L, &s);
        nim_annotate_meta(L, provider(L, uv), a->desc ? NULL : nim_family_name(route->family),
                          route->body_model, a->dropped, -1);
        nim_call_settle(L, call, "res");
        return 1;
    }
    return 0;
}

/* A descriptor's route (raises naming the field); its params and truncate values kept in uv
 * for the body. Returns its passage limit (0: none). */
static lua_Integer descriptor_route(lua_State *L, const nim_args *a, nim_descriptor *d,
                                    nim_route *route) {
    char err[512];
    nim_descriptor_read(L, a->desc, d);
    if (nim_descriptor_route(L, a->desc, d, a->model, a->api_base, 1, route, err, sizeof err) != 0)
        nim_misuse(L, "nim.rerank", NULL, "%s", err);
    return d->max_passages;
}

/* What a descriptor's call keeps for its body and answer: the descriptor, the values of the
 * parameters it passes through (checked, raising naming one), truncate's JSON value. */
static void keep_descriptor(lua_State *L, int uv, const nim_args *a) {
    lua_pushvalue(L, a->desc);
    lua_setfield(L, uv, "descriptor");
    lua_newtable(L);
    nim_descriptor_params(L, a->desc, 1, lua_gettop(L)); /* the args table is slot 1 */
    lua_setfield(L, uv, "params");
    nim_descriptor_truncate(L, a->desc, a->truncate);
    lua_setfield(L, uv, "truncate");
}

/* Writes the request body (NIM's, or the descriptor's shape). Nothing raises: 0, or -1. */
static int write_body(lua_State *L, int uv, const nim_args *a, const nim_route *route,
                      const nim_descriptor *d, int texts, nim_buf *body) {
    if (!a->desc) {
        lua_Integer top_k = 0;
        if (route->family == NIM_FAMILY_RETRIEVAL && a->top_n > 0)
            top_k = a->top_n < a->ndocs ? a->top_n : a->ndocs;
        return nim_wire_body(L, body, texts, route->family, route->body_model, a->query, top_k,
                             a->truncate);
    }
    lua_getfield(L, uv, "params"); /* raw reads from here: both stay anchored by uv */
    int params = lua_gettop(L);
    lua_getfield(L, uv, "truncate");
    int truncate_v = lua_isnil(L, -1) ? 0 : lua_gettop(L);
    lua_Integer top_n = a->top_n > 0 && a->top_n < a->ndocs ? a->top_n : 0;
    int rc = nim_descriptor_body(L, body, d, texts, a->query, route->body_model, top_n, truncate_v,
                                 params);
    lua_settop(L, params - 1);
    return rc;
}

void nim_http_start(lua_State *L, const nim_args *a) {
    int top = lua_gettop(L);
    nim_route route;
    nim_descriptor d;
    memset(&d, 0, sizeof d);
    lua_Integer max_passages;
    if (a->desc) {
        max_passages = descriptor_route(L, a, &d, &route);
        lua_pushnil(L); /* no catalog entry */
    } else {
        max_passages = route_of(L, a, &route);
    }
    int entry_idx = lua_istable(L, -1) ? lua_gettop(L) : 0;
    nim_call *c = nim_call_new(L, complete);
    int call = lua_gettop(L);
    c->family = route.family;
    c->top_n = a->top_n;
    c->first = a->first;
    c->ndocs = a->ndocs;
    c->return_documents = a->return_documents;
    c->timeout = a->timeout;
    c->connect_timeout = a->connect_timeout;
    c->deadline = nim_now() + a->timeout;
    c->poll_interval = a->nvcf_poll_interval;
    c->max_response = a->max_response;
    lua_getiuservalue(L, call, 1);
    int uv = lua_gettop(L);
    describe(L, uv, a, &route, entry_idx,
             a->desc ? d.name : nim_provider_name(NIM_PROVIDER_NVIDIA));
    if (a->desc) {
        c->described = 1;
        c->shape = d.answer;
        c->billed_as = d.billed_as;
        keep_descriptor(L, uv, a);
        if (d.auth_header) set_string(L, uv, "auth_header", d.auth_header);
        if (d.auth_prefix) set_string(L, uv, "auth_prefix", d.auth_prefix);
    }
    nim_keep_caller_headers(L, a->headers, uv);

    /* Texts and body; every document is checked before anything is sent. */
    nim_push_reg(L, nim_key_encode);
    nim_wire_texts(L, a->documents, a->first, a->ndocs, lua_gettop(L), route.family);
    lua_pushvalue(L, -1);
    lua_setfield(L, uv, "texts");
    int texts = lua_gettop(L);
    if (!settled_early(L, call, uv, a, &route, max_passages)) {
        nim_request r = {0};
        nim_set_headers(L, uv, 0, 0, &r); /* every Lua allocation before the body's malloc */
        r.url = route.url;
        r.timeout_ms = (long)ceil(a->timeout * 1000.0);
        r.connect_timeout_ms = (long)ceil(a->connect_timeout * 1000.0);
        nim_engine *engine = prepare(L, call, uv, &r);
        if (!engine) {
            settle_error(L, call, uv, NIM_ERR_CONNECTION, 0, 1);
        } else {
            nim_buf body = {0};
            char err[512];
            /* From the body's malloc to the engine taking it, nothing raises: no leak. */
            int rc = write_body(L, uv, a, &route, &d, texts, &body);
            if (rc != 0) {
                free(body.p);
                snprintf(err, sizeof err, "out of memory writing the request body");
            } else {
                r.body = body.p;
                r.body_len = body.n;
                rc = send(engine, c, &r, err, sizeof err);
            }
            if (rc != 0) {
                lua_pushstring(L, err);
                settle_error(L, call, uv, NIM_ERR_CONNECTION, 0, 1);
            }
        }
    }
    lua_settop(L, call);
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
}

/* ---- NVCF polling --------------------------------------------------------------------------- */

/* An NVCF request id goes into a URL path: only the characters NVIDIA's ids (UUIDs) use, so
 * no "/", "..", "?" or "#" can move the key to another path. */
static int reqid_ok(const char *s) {
    if (!*s || strlen(s) > 128) return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '-' || *s == '_')) return 0;
    return 1;
}

/* NVCF answered 202 (still running): GET {status_url}/{reqid} with the same key, headers and
 * CA store, asking the server to hold the poll until the result is ready
 * (NVCF-POLL-SECONDS), within the call's own deadline. The poll starts at `start` (not before
 * then) and may take `left` seconds, both decided by poll_window. 0 when under way. */
static int start_poll(lua_State *L, int idx, int uv, const char *reqid, double start, double left) {
    nim_call *c = lua_touserdata(L, idx);
    lua_getfield(L, uv, "status_url");
    size_t blen;
    const char *base = lua_tolstring(L, -1, &blen);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    lua_pushlstring(L, base, blen);
    const char *url = lua_pushfstring(L, "%s/%s", lua_tostring(L, -1), reqid); /* stays pushed */
    nim_push_display_url(L, url);
    lua_setfield(L, uv, "url"); /* what messages show from now on */
    int poll_s = left > 300 ? 300 : (left < 1 ? 1 : (int)left);
    nim_request r = {0};
    nim_set_headers(L, uv, 1, poll_s, &r);
    r.url = url;
    r.get = 1;
    r.timeout_ms = (long)ceil(left * 1000.0);
    r.connect_timeout_ms = (long)ceil(c->connect_timeout * 1000.0);
    if (start > nim_now()) r.not_before = start;
    nim_engine *engine = prepare(L, idx, uv, &r);
    if (!engine) return -1;
    char err[512];
    if (send(engine, c, &r, err, sizeof err) != 0) {
        lua_pushstring(L, err);
        return -1;
    }
    c->polls++;
    return 0;
}

/* ---- finishing ------------------------------------------------------------------------------ */

/* A transfer that ended without an HTTP response. */
static void transport_error(lua_State *L, int idx, int uv, nim_transfer *t) {
    nim_call *c = lua_touserdata(L, idx);
    lua_getfield(L, uv, "url");
    const char *url = lua_tostring(L, -1);
    nim_err_type type = NIM_ERR_CONNECTION;
    int retryable = 1;
    long status = 0;
    switch (nim_transfer_result(t)) {
    case NIM_XFER_TIMEOUT:
        type = NIM_ERR_TIMEOUT;
        lua_pushfstring(L, "no response within %s s (%s)", seconds_text(c->timeout).s,
                        nim_transfer_error(t));
        break;
    case NIM_XFER_TOO_LARGE:
        type = NIM_ERR_BAD_RESPONSE;
        retryable = 0;
        status = nim_transfer_status(t);
        lua_pushfstring(L, "response larger than %I bytes",
                        (lua_Integer)(c->max_response ? c->max_response : NIM_ENGINE_MAX_RESPONSE));
        break;
    case NIM_XFER_HEADERS_TOO_LARGE:
        type = NIM_ERR_BAD_RESPONSE;
        retryable = 0;
        lua_pushfstring(L,
                        "%s: the response's headers are larger than libcurl accepts (100 KB "
                        "a header, 300 KB in all; libcurl says: %s)",
                        url, nim_transfer_error(t));
        break;
    case NIM_XFER_CANCELLED: /* the engine went away under the call */
        lua_pop(L, 1);
        lua_getfield(L, uv, "model");
        nim_push_cancelled(L, provider(L, uv), lua_tostring(L, -1));
        lua_remove(L, -2);
        nim_call_settle(L, idx, "err");
        return;
    case NIM_XFER_CONNECTION:
        if (strstr(nim_transfer_error(t), "Too many open files"))
            lua_pushfstring(L,
                            "%s: out of file descriptors (EMFILE): lower the concurrency or "
                            "nim.settings.max_connections, or raise ulimit -n (%s)",
                            url, nim_transfer_error(t));
        else
            lua_pushfstring(L, "%s: %s", url, nim_transfer_error(t));
        break;
    default: retryable = 0; lua_pushfstring(L, "%s: %s", url, nim_transfer_error(t));
    }
    lua_remove(L, -2);
    settle_error(L, idx, uv, type, status, retryable);
}

/* A 2xx answer: the result, or bad_response. */
static void success(lua_State *L, int idx, int uv, int body, long status, double seconds) {
    nim_call *c = lua_touserdata(L, idx);
    int desc = c->described;
    nim_push_reg(L, nim_key_decode);
    nim_parsed p;
    if (!nim_wire_parse(L, body, lua_gettop(L), c->ndocs, desc ? &c->shape : NULL, &p)) {
        lua_getfield(L, uv, "url");
        lua_pushfstring(L, "malformed response from %s: %s; body: ", lua_tostring(L, -1),
                        lua_tostring(L, -2));
        lua_pushvalue(L, body); /* its first part, escapes decoded, redacted before the cut */
        nim_wire_unescape(L, -1);
        nim_redact(L, -1, uv);
        nim_wire_one_line(L, -1);
        lua_concat(L, 2);
        settle_error(L, idx, uv, NIM_ERR_BAD_RESPONSE, status, 0);
        return;
    }
    int id = lua_gettop(L);
    /* NIM's ranking family and other providers may answer in any order: the one sort rule */
    if (c->family == NIM_FAMILY_RANKING || desc) nim_rankings_sort(p.rk, p.n);
    lua_getfield(L, uv, "texts");
    nim_result_spec s = {
        p.rk, p.n, c->top_n, c->first, lua_gettop(L), c->return_documents, p.tokens, c->partial};
    nim_push_result(L, &s);
    if (!lua_isnil(L, id)) {
        lua_pushvalue(L, id);  /* the provider's id replaces the fresh one */
        nim_redact(L, -1, uv); /* an id that echoes a credential shows none */
        lua_setfield(L, -2, "id");
    }
    lua_getfield(L, uv, "family");
    lua_getfield(L, uv, "body_model");
    lua_getfield(L, uv, "dropped");
    lua_rotate(L, -4, -1); /* the result back on top */
    nim_annotate_meta(L, provider(L, uv), lua_tostring(L, -4), lua_tostring(L, -3),
                      lua_gettop(L) - 1, seconds);
    lua_getfield(L, -1, "meta");
    if (desc && strcmp(c->billed_as, "total_tokens") != 0) { /* e.g. Cohere's search_units */
        lua_getfield(L, -1, "billed_units");
        lua_getfield(L, -1, "total_tokens");
        if (p.counted)
            lua_setfield(L, -2, c->billed_as); /* never a made-up count */
        else
            lua_pop(L, 1);
        lua_pushnil(L);
        lua_setfield(L, -2, "total_tokens");
        lua_pop(L, 1);
    }
    if (c->polls > 0) {
        lua_pushinteger(L, c->polls);
        lua_setfield(L, -2, "nvcf_polls");
    }
    add_warning(L, uv);
    lua_pop(L, 1);
    nim_call_settle(L, idx, "res");
}

/* An HTTP error status: the provider's message, classified. */
static void failure(lua_State *L, int idx, int uv, int body, long status, const char *reqid,
                    double retry_after) {
    int retryable;
    nim_err_type type = nim_err_from_status(status, &retryable);
    /* A descriptor may say what one of its provider's statuses means (errors = {[402] =
     * "rate_limit"}); the retry rule follows the type. */
    int top = lua_gettop(L);
    int is_descriptor = lua_getfield(L, uv, "descriptor") == LUA_TTABLE;
    if (is_descriptor) {
        lua_pushliteral(L, "errors");
        if (lua_rawget(L, -2) == LUA_TTABLE && lua_rawgeti(L, -1, status) == LUA_TSTRING) {
            int t = nim_err_type_parse(lua_tostring(L, -1));
            if (t >= 0) {
                type = (nim_err_type)t;
                retryable = nim_err_retryable(type);
            }
        }
    }
    lua_settop(L, top);
    nim_push_reg(L, nim_key_decode);
    nim_wire_error_message(L, body, lua_gettop(L));
    lua_remove(L, -2);
    nim_redact(L, -1, uv); /* decoded, before the cut: no escaped or cut-off key survives */
    nim_wire_one_line(L, -1);
    if (status == 410 && !is_descriptor) {
        lua_getfield(L, uv, "route_model");
        lua_pushfstring(L, "model %s has reached end of life (410 Gone): %s", lua_tostring(L, -1),
                        lua_tostring(L, -2));
        lua_replace(L, -3);
        lua_pop(L, 1);
        if (lua_getfield(L, uv, "replacement") == LUA_TSTRING) {
            lua_pushfstring(L, "; use %s instead", lua_tostring(L, -1));
            lua_remove(L, -2);
            lua_concat(L, 2);
        } else {
            lua_pop(L, 1);
        }
    } else if (status == 202 && is_descriptor) { /* a queue nimrank cannot follow: no retry */
        const char *name = provider(L, uv);
        lua_getfield(L, uv, "url");
        lua_pushfstring(L,
                        "202 Accepted from %s: a queued answer %s's API does not document; "
                        "not polled and not retried",
                        lua_tostring(L, -1), name);
        lua_replace(L, -3);
        lua_pop(L, 1);
        type = NIM_ERR_BAD_RESPONSE;
        retryable = 0;
    } else if (status == 202) {
        lua_pushfstring(L, "result not ready (202 Accepted, NVCF-REQID '%s'); try again",
                        reqid ? reqid : "");
        lua_remove(L, -2);
    } else if (lua_rawlen(L, -1) == 0) {
        lua_getfield(L, uv, "url");
        lua_pushfstring(L, "HTTP %I from %s", (lua_Integer)status, lua_tostring(L, -1));
        lua_remove(L, -2);
        lua_remove(L, -2);
    } else if (((nim_call *)lua_touserdata(L, idx))->polls > 0) { /* name the poll's URL */
        lua_getfield(L, uv, "url");
        lua_pushfstring(L, "%s: %s", lua_tostring(L, -1), lua_tostring(L, -2));
        lua_replace(L, -3);
        lua_pop(L, 1);
    }
    settle_error(L, idx, uv, type, status, retryable);
    if (retry_after >= 0) { /* the error is the user value's err now */
        lua_getiuservalue(L, idx, 1);
        lua_getfield(L, -1, "err");
        lua_pushnumber(L, retry_after);
        lua_setfield(L, -2, "retry_after");
        lua_pop(L, 2);
    }
}

/* The call's transfer completed: settle it, or start the next NVCF poll. */
static void complete(lua_State *L, int idx) {
    nim_call *c = lua_touserdata(L, idx);
    nim_transfer *t = c->t;
    int top = lua_gettop(L);
    luaL_checkstack(L, NIM_STACK_NEED, NULL);
    lua_getiuservalue(L, idx, 1);
    int uv = lua_gettop(L);
    if (nim_transfer_result(t) != NIM_XFER_OK) {
        transport_error(L, idx, uv, t);
        lua_settop(L, top);
        return;
    }
    /* Take what is needed from the transfer, then release it before any further Lua work. */
    size_t len;
    const char *resp = nim_transfer_body(t, &len);
    lua_pushlstring(L, resp, len);
    int body = lua_gettop(L);
    long status = nim_transfer_status(t);
    double seconds = nim_transfer_seconds(t), retry_after = nim_transfer_retry_after(t);
    const char *id = nim_transfer_header(t, NVCF_REQID);
    lua_pushstring(L, id ? id : "");
    const char *reqid = lua_tostring(L, -1);
    const char *coding = nim_transfer_coding(t);
    int coded = coding != NULL;
    if (coding) { /* asked for none (Accept-Encoding: identity): the bytes are not text */
        lua_pushfstring(L,
                        "the answer came %s-encoded (Content-Encoding), although the request "
                        "asked for none (Accept-Encoding: identity); it is not decoded",
                        coding);
        lua_replace(L, body);
    }
    nim_call_release(c);

    if (status == 202 && *reqid) { /* NVCF: poll for the result */
        /* A status server that answers 202 at once (ignoring NVCF-POLL-SECONDS) is not polled
         * in a tight loop: consecutive requests start at least poll_interval apart; and no
         * poll starts, or lasts, past the call's deadline. */
        double now = nim_now(), start = c->sent_at + c->poll_interval;
        if (start < now) start = now;
        double left = c->deadline - start;
        lua_getfield(L, uv, "status_url");
        int pollable = lua_isstring(L, -1);
        lua_pop(L, 1);
        if (!pollable) {
            lua_pushliteral(L, "202 Accepted (NVCF queued) from a server that is not NVIDIA's "
                               "hosted API: not polled at NVIDIA's status host with this "
                               "call's key (set nvcf_status_url to poll it)");
            settle_error(L, idx, uv, NIM_ERR_BAD_RESPONSE, 202, 0);
        } else if (!reqid_ok(reqid)) {
            lua_pushliteral(L, "202 Accepted with an NVCF-REQID that is not a request id "
                               "(characters outside [A-Za-z0-9_-])");
            settle_error(L, idx, uv, NIM_ERR_BAD_RESPONSE, 202, 0);
        } else {
            lua_pushvalue(L, -1);
            lua_setfield(L, uv, "nvcf_reqid"); /* queued: from now on nothing is retried */
            if (left <= 0 && start > now) {    /* known now: no need to wait for it */
                lua_pushfstring(L,
                                "still queued, and the next poll (nvcf_poll_interval %s s) would "
                                "start after the call's timeout of %s s",
                                seconds_text(c->poll_interval).s, seconds_text(c->timeout).s);
                settle_error(L, idx, uv, NIM_ERR_TIMEOUT, 202, 0);
            } else if (left <= 0) {
                lua_pushfstring(L, "no result within %s s: NVIDIA's queue still holds it",
                                seconds_text(c->timeout).s);
                settle_error(L, idx, uv, NIM_ERR_TIMEOUT, 202, 0);
            } else if (start_poll(L, idx, uv, reqid, start, left) != 0) {
                settle_error(L, idx, uv, NIM_ERR_CONNECTION, 0, 0);
            }
        }
    } else if (status >= 200 && status < 300 && status != 202 && coded) {
        lua_pushvalue(L, body); /* the message above */
        settle_error(L, idx, uv, NIM_ERR_BAD_RESPONSE, status, 0);
    } else if (status >= 200 && status < 300 && status != 202) {
        success(L, idx, uv, body, status, seconds);
    } else {
        failure(L, idx, uv, body, status, *reqid ? reqid : NULL, retry_after);
    }
    lua_settop(L, top);
}

void nim_http_validate(lua_State *L, const nim_args *a) {
    int top = lua_gettop(L);
    nim_route route;
    if (a->desc) {
        nim_descriptor d;
        descriptor_route(L, a, &d, &route);
        lua_newtable(L);
        nim_descriptor_params(L, a->desc, 1, lua_gettop(L));
    } else {
        route_of(L, a, &route);
    }
    lua_newtable(L);
    nim_keep_caller_headers(L, a->headers, lua_gettop(L));
    nim_push_reg(L, nim_key_encode);
    nim_wire_texts(L, a->documents, a->first, a->ndocs, lua_gettop(L), route.family);
    lua_settop(L, top);
}
