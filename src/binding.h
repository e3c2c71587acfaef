/* binding.h: what the files of the `nim` Lua binding share. Only these files (and server
 * code) touch the Lua API; below them resolve.c, answer.c, scratch.c, engine.c, bm25.c and
 * ranking.c are plain C. One file per kind of thing:
 *   module.c          luaopen_nim: registration, metatables, the per-state context
 *   args.c            argument checking; misuse errors at the caller's line
 *   error.c           error objects (error.h)
 *   call.c            nim.native.rerank/start/validate/resolve: dispatch to a provider
 *   transfer.c        the nim.Transfer userdata; blocking, yielding and awaiting
 *   provider_http.c   HTTP providers: NVIDIA NIM (its routes, NVCF polling) and every
 *                     provider a descriptor describes: start, finish, errors
 *   descriptor.c      provider descriptors (lua/nim/providers/): route, body, answer shape
 *   wire.c            the NIM wire format: request body, documents' texts, reading answers
 *   headers.c         a call's HTTP headers: the caller's checked, ours added
 *   secrets.c         a call's credentials, redacted from every message
 *   provider_local.c  local/bm25
 *   result.c          the result envelope, for every provider and for batching
 *   encode.c          results as JSON text, fast (the gateway's answers); UTF-8 checks
 *   catalog.c         the model catalog bridge (keys, limits, entries)
 *   layer.c           finding and loading the Lua layer (lua/nim)
 *   hostloop.c        the C API for a host's own event loop (nimrank.h)
 *   redis_binding.c   nim.Redis (nim.native.redis_*): Redis commands that yield like transfers;
 *                     below it redis.c (the client on the engine's loop), redis_url.c,
 *                     digest.c (Nettle)
 *   util.c            nim.now, nim.sleep, nim.isatty, nim.terminal_width, nim.array */
#ifndef NIM_BINDING_H
#define NIM_BINDING_H

#include <limits.h>

#include <lauxlib.h>
#include <lua.h>

#include "engine.h"
#include "error.h"
#include "ranking.h"
#include "resolve.h"
#include "scratch.h"
#include "wire.h"

/* Registry keys: the addresses of these, so no other library's key can collide. */
extern const char nim_key_ctx, nim_key_module, nim_key_managed, nim_key_transfer_mt,
    nim_key_error_mt, nim_key_misuse_mt, nim_key_request_mt, nim_key_await_mt, nim_key_array_mt,
    nim_key_encode, nim_key_decode, nim_key_catalog, nim_key_settings, nim_key_rankings_mt,
    nim_key_providers, nim_key_redis_mt, nim_key_redis_null;

/* Pushes the registry value stored under key. */
#define nim_push_reg(L, key) lua_rawgetp((L), LUA_REGISTRYINDEX, &(key))
void nim_setmeta(lua_State *L, const char *key); /* sets registry[key] as top's metatable */
void *nim_checkudata(lua_State *L, int idx, const char *key, const char *tname);

/* Pushes nim.settings[field] and returns its type. */
int nim_setting(lua_State *L, const char *field);

#define NIM_DEFAULT_MAX_PASSAGES 512
#define NIM_DEFAULT_TIMEOUT_S 60.0
#define NIM_DEFAULT_CONNECT_TIMEOUT_S 10.0
/* What a server is asked to accept in request headers (libcurl sends larger; servers answer
 * 431 or cut): a caller's header value and the API key alike, and the caller's in all. */
#define NIM_HEADER_VALUE_MAX 8192
#define NIM_HEADERS_TOTAL_MAX 65536
/* Stack slots a C entry point may use beyond its arguments (luaL_checkstack). */
#define NIM_STACK_NEED 48

/* ---- the per-state context (module.c) ---------------------------------------------------- */
typedef struct {
    nim_engine *engine;
    char lib_source[PATH_MAX + 8];    /* "@<dir>/nim/": chunk names of the Lua layer's frames */
    unsigned long long uuid_state[2]; /* seeded from getrandom once: fresh ids need no syscall */
    nim_scratch scratch;              /* the answer reader's working memory, reused */
    nim_buf out;                      /* encode.c's output buffer, reused */
} nim_ctx;

nim_ctx *nim_ctx_get(lua_State *L);
/* The state's engine, created (and libcurl loaded) on the first network call: scripts that
 * never reach the network start fast. NULL with err filled on failure. */
nim_engine *nim_ctx_engine(lua_State *L, char *err, size_t errlen);
/* Frees the state's engine, if it has one (`nimrank serve` before it forks: a worker must not
 * share the supervisor's sockets and epoll set). */
void nim_ctx_drop_engine(lua_State *L);

/* ---- arguments (args.c) --------------------------------------------------------------------
 * Misuse raises "<position>fn: field: what", the position being the first stack frame outside
 * nimrank's own code (never inside lua/nim/). Inside nim.native.protect it raises a table
 * {fn =, field =, message =} instead, which protect returns as nil, err. */
int nim_misuse(lua_State *L, const char *fn, const char *field, const char *fmt, ...);
int nim_header_value_ok(const char *s, size_t n); /* no control characters but tab */
int nim_header_name_ok(const char *s);            /* an HTTP token (headers.c) */
int nim_framing_header(const char *name);         /* Content-Length, Host, ...: not settable */
int nim_args_known_key(const char *k);            /* a key of nimrank's own (args.c lists) */
/* The one rule for a number of seconds (a timeout) at stack slot idx: a number > 0 and < 1e7;
 * raises naming fn and field. */
double nim_check_seconds(lua_State *L, const char *fn, const char *field, int idx);

/* The checked arguments of one call. Strings point into the args table (slot 1), which stays
 * on the stack for the whole call. */
typedef struct {
    const char *model;
    int query;         /* stack slot of the query string */
    int documents;     /* stack slot of the documents table */
    lua_Integer first; /* 0-based offset of the first document sent (batches) */
    lua_Integer ndocs; /* documents sent */
    int dropped;       /* stack slot of the sorted dropped-parameter names */
    int headers;       /* stack slot of the headers table, or 0 */
    lua_Integer top_n;
    const char *truncate;
    int return_documents;
    double timeout, connect_timeout;
    const char *ca_bundle;
    lua_Integer max_response;
    const char *api_base;
    const char *api_key;
    int key_from_env;       /* api_key came from the environment */
    const char *key_source; /* "api_key", or the variable it came from */
    int desc;               /* stack slot of the provider descriptor, or 0 (NIM, local) */
    const char *nvcf_status_url;
    const char *nvcf_status_source; /* "nvcf_status_url" or the variable it came from */
    int nvcf_status_default;        /* neither gave one: NVIDIA's own, for its hosted API */
    double nvcf_poll_interval;
    int bm25; /* stack slot of the bm25 options table, or 0 */
} nim_args;

/* Checks everything common to every provider; raises on misuse naming the field. Expects the
 * args table at slot 1 and optional (first, count) at 2 and 3; leaves slots 1 (args),
 * 2 (anchor: the strings the struct points to), 3 (dropped), 4 (query), 5 (documents),
 * 6 (headers or nil), 7 (bm25 or nil), 8 (the model's provider descriptor or nil). */
void nim_check_args(lua_State *L, nim_args *a);
/* The result count a call asks for: top_n, or its alias top_k; 0 = all. */
lua_Integer nim_args_top_n(lua_State *L, int args);
int nim_l_misuse(lua_State *L);       /* nim.native.misuse(fn, field, message) */
int nim_l_seconds(lua_State *L);      /* nim.native.seconds(value, fn, field) */
int nim_l_call_timeout(lua_State *L); /* nim.native.call_timeout(args) -> total seconds */
int nim_l_protect(lua_State *L);      /* nim.native.protect(fn, ...) */
void nim_push_keys(lua_State *L);     /* nim.native.keys = {request =, transport =, policy =} */

/* ---- providers ------------------------------------------------------------------------------ */
typedef enum { NIM_PROVIDER_NVIDIA, NIM_PROVIDER_LOCAL, NIM_PROVIDER_API } nim_provider;
/* The provider of a model string; raises naming the model when it cannot be served. */
nim_provider nim_provider_of(lua_State *L, const char *model);
const char *nim_provider_name(nim_provider p);

/* Pushes a nim.Transfer that is pending, or already settled (no documents, too many, no key,
 * engine failure) for NIM or, when a->desc is set, the provider it describes. Raises on
 * misuse. Never blocks. */
void nim_http_start(lua_State *L, const nim_args *a);
/* Checks what starting would check (route, headers, documents) without sending. */
void nim_http_validate(lua_State *L, const nim_args *a);

/* ---- provider descriptors (descriptor.c) --------------------------------------------------
 * A descriptor is a Lua table (lua/nim/providers/<name>.lua) registered in
 * nim.native.providers under its name, the model prefix. Its strings are anchored by it. */
typedef struct {
    const char *name;                      /* the prefix: "cohere" for "cohere/<model>" */
    const char *path;                      /* appended to the base URL: "/v2/rerank" */
    const char *default_base;              /* NULL: api_base (or a base variable) is required */
    const char *auth_header, *auth_prefix; /* "Authorization", "Bearer " */
    int key_required;
    lua_Integer max_passages;                  /* 0: no limit */
    const char *model_field;                   /* NULL: the model is not sent */
    const char *query_field, *documents_field; /* "query", "documents" */
    const char *top_n_field;                   /* NULL: top_n applied here only */
    const char *truncate_field;                /* NULL: truncate is unsupported */
    int document_objects;                      /* {"text": ...} rather than strings */
    nim_answer_shape answer;
    const char *billed_as; /* the meta.billed_units key of the count read: "total_tokens" */
} nim_descriptor;

extern const char *const nim_builtin_providers[]; /* lua/nim/providers/<name>.lua */
int nim_l_provider_register(lua_State *L);        /* nim.native.provider_register(descriptor) */
int nim_l_provider_get(lua_State *L);             /* nim.native.provider_get(name) -> copy | nil */
int nim_l_provider_names(lua_State *L);           /* nim.native.provider_names() -> list */
/* Pushes the descriptor a model string's prefix names (1), or nil (0: NIM, local or none).
 * Raises for a built-in provider's prefix whose descriptor is not registered. */
int nim_descriptor_push(lua_State *L, const char *model);
void nim_descriptor_read(lua_State *L, int idx, nim_descriptor *d); /* raises naming a field */
/* The key from the descriptor's key_env variables (NULL if none is set); *var names the one
 * used, or the first when none is. */
const char *nim_descriptor_key(lua_State *L, int desc, const char **var);
void nim_descriptor_env_names(lua_State *L, int desc, const char *k); /* pushes "A or B" */
/* The route of a model; args: the call's arguments (slot, or 0), for path_params. 0, or -1
 * with err naming the field. */
int nim_descriptor_route(lua_State *L, int desc, const nim_descriptor *d, const char *model,
                         const char *api_base, int args, nim_route *r, char *err, size_t errlen);
/* Checks the call's values of the parameters the provider takes (raises naming one) and
 * copies them into the table at out. */
void nim_descriptor_params(lua_State *L, int desc, int args, int out);
int nim_descriptor_supports(lua_State *L, int desc, const char *key); /* a params key */
int nim_descriptor_has_truncate(lua_State *L, int desc);
/* Pushes the JSON value truncate ("NONE"/"END") maps to, or nil (0). */
int nim_descriptor_truncate(lua_State *L, int desc, const char *truncate);
/* Writes the request body. Raw reads only, nothing raises: 0, or -1 out of memory. */
int nim_descriptor_body(lua_State *L, nim_buf *b, const nim_descriptor *d, int texts, int query_idx,
                        const char *body_model, lua_Integer top_n, int truncate_v, int params);
/* Ranks with the embedded scorer and pushes the result. */
void nim_local_rerank(lua_State *L, const nim_args *a);
/* Checks a local model's own options (bm25 = {...}) and its documents, without ranking. */
void nim_local_validate(lua_State *L, const nim_args *a);

/* ---- a call's headers and secrets (headers.c, secrets.c) -----------------------------------
 * Both work on the call's user value (uv): uv.secrets (a sequence of strings), uv.hlines and
 * uv.hnames (the caller's header lines and lower-case names), uv.key. */
void nim_secret_add(lua_State *L, int secrets, const char *s, size_t n); /* n < 4: ignored */
void nim_secrets_add_url(lua_State *L, int secrets, const char *url);    /* its userinfo, if any */
void nim_push_display_url(lua_State *L, const char *url); /* userinfo shown as "***" */
void nim_redact(lua_State *L, int idx, int uv); /* replaces uv's secrets in the string at idx */
int nim_url_is_loopback(const char *url);       /* a key sent there in clear text stays here */
/* Checks the caller's headers table (stack slot, or 0 for none); raises naming the header. */
void nim_keep_caller_headers(lua_State *L, int headers, int uv);
/* Points r->headers at the lines to send (a poll is a GET with NVCF-POLL-SECONDS: poll_s);
 * pushes what holds them: keep it until the engine has copied them. */
void nim_set_headers(lua_State *L, int uv, int poll, int poll_s, nim_request *r);

/* ---- the nim.Transfer userdata (transfer.c) ------------------------------------------------ */
enum { NIM_CALL_PENDING, NIM_CALL_FINISHED, NIM_CALL_CANCELLED };
typedef void (*nim_complete_fn)(lua_State *L, int call_idx);
/* What a call may wait on besides an HTTP transfer (a Redis operation): done(op) says when it
 * is ready for the call's complete function; release(op) lets go of it, pending or not. */
typedef struct {
    int (*done)(const void *op);
    void (*release)(void *op);
} nim_op_kind;
/* One call in flight. Everything malloc'ed for it hangs here, so a raise never leaks: __gc
 * (and __close, cancel) frees it. Its user value is a table with what finishing needs (the
 * provider's strings, texts, dropped names) and, once settled, res or err. */
typedef struct {
    nim_transfer *t;
    void *op; /* instead of t: another protocol's operation, of kind op_kind */
    const nim_op_kind *op_kind;
    int state;
    nim_complete_fn complete; /* the provider's: turns the completed transfer into res/err */
    nim_family family;
    lua_Integer top_n, first, ndocs, max_response;
    int return_documents;
    double timeout, connect_timeout;
    double deadline; /* monotonic: the call's timeout covers NVCF status polls too */
    int polls;       /* NVCF status polls made so far */
    double sent_at;  /* when the request in flight started */
    double poll_interval;
    int partial; /* a batch: settle with a partial result (nim_result_spec.partial) */
    /* A descriptor's call: how its answer reads, taken when it starts (the strings belong to
     * the registered copy it holds in its user value, which nothing changes). */
    int described;
    nim_answer_shape shape;
    const char *billed_as;
} nim_call;

nim_call *nim_call_new(lua_State *L, nim_complete_fn complete); /* pushes it, pending */
/* Stores the value on top (popped) as res or err in the user value; the call is settled. */
void nim_call_settle(lua_State *L, int idx, const char *field);
/* Settles an already-known outcome (on top, popped) in a new finished nim.Transfer. */
void nim_call_push_settled(lua_State *L, const char *field);
int nim_call_poll(lua_State *L, int idx); /* settles if its transfer completed; 1 if settled */
int nim_call_push_outcome(lua_State *L, int idx); /* res | nil, err; returns the count */
void nim_call_release(nim_call *c);
/* Returns the outcome of the call at idx: yields inside a managed coroutine, else blocks. */
int nim_call_finish(lua_State *L, int idx);
int nim_l_manage(lua_State *L);
int nim_l_await(lua_State *L);
int nim_l_step(lua_State *L);
void nim_transfer_methods(lua_State *L); /* fills the metatable on top */

/* ---- the result envelope (result.c) ------------------------------------------------------ */
typedef struct {
    const nim_ranking *rk; /* in final order */
    size_t n;
    lua_Integer top_n;  /* 0 = all */
    lua_Integer offset; /* added to every index (a batch's first document) */
    int texts;          /* stack slot of the texts table (texts[i] = document i's text) */
    int return_documents;
    lua_Integer tokens;
    int partial; /* a batch's answer for nim.native.merge: rankings in C, no result tables */
} nim_result_spec;

/* Pushes {id = fresh UUID, results = [...], meta = {billed_units = {total_tokens}}}; a partial
 * result instead holds rankings (a userdata of nrankings nim_ranking, indices the caller's),
 * texts and offset, for nim.native.merge. */
void nim_push_result(lua_State *L, const nim_result_spec *s);
/* Adds provider, family (NULL: none), model, latency_ms (seconds < 0: none) and
 * dropped_params (the list at slot dropped) to res.meta (res on top). */
void nim_annotate_meta(lua_State *L, const char *provider, const char *family, const char *model,
                       int dropped, double seconds);
void nim_mark_array(lua_State *L, int idx);
int nim_l_merge(lua_State *L); /* nim.native.merge(results, top_n) */

/* ---- catalog (catalog.c) ------------------------------------------------------------------ */
/* Looks the cleaned model up in nim.catalog: fills entry and max_passages; the entry table
 * stays pushed (its strings anchored) when found (returns 1); nothing pushed otherwise.
 * A malformed entry raises: lookups never fall open to the derived rules. */
int nim_catalog_lookup(lua_State *L, const char *clean, nim_catalog_entry *entry,
                       lua_Integer *max_passages);
void nim_push_catalog(lua_State *L);
int nim_l_catalog_key(lua_State *L);
int nim_l_catalog_entry(lua_State *L);
int nim_l_max_passages(lua_State *L);
int nim_l_provider_of(lua_State *L);
int nim_l_encode_results(lua_State *L); /* encode.c */
int nim_l_utf8_error(lua_State *L);
int nim_l_sha256(lua_State *L); /* digest.c */

/* ---- the rest ------------------------------------------------------------------------------ */
int nim_l_rerank(lua_State *L);
int nim_l_start(lua_State *L);
int nim_l_validate(lua_State *L);
int nim_l_resolve(lua_State *L);
int nim_l_now(lua_State *L);
int nim_l_sleep(lua_State *L);
int nim_l_isatty(lua_State *L);
int nim_l_terminal_width(lua_State *L);
int nim_l_array(lua_State *L);
int nim_l_handle(lua_State *L);
int nim_l_task_of(lua_State *L);
int nim_l_budget(lua_State *L);
/* ---- Redis (redis_binding.c) --------------------------------------------------------------- */
/* Creates nim.Redis's metatable and redis.null (registry keys above); called by luaopen_nim. */
void nim_redis_open(lua_State *L);
int nim_l_redis_new(lua_State *L); /* nim.native.redis_new(options) */
int nim_l_sha1(lua_State *L);      /* nim.native.sha1(s) -> 40 hex digits */

/* Finds the Lua layer and loads it into the module at mod (layer.c). */
void nim_layer_load(lua_State *L, int mod);

#endif
