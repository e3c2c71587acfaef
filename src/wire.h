/* wire.h: the NIM wire format (LITELLM_COMPAT.md sections 2-3).
 * JSON goes through lua-cjson, which is a Lua library, so the encoders and decoders here work
 * on a lua_State; the classification helpers are plain C. */
#ifndef NIM_WIRE_H
#define NIM_WIRE_H

#include <lua.h>
#include <lauxlib.h>

#include "resolve.h"

/* Error types of DESIGN.md "Errors". */
typedef enum {
    NIM_ERR_AUTH,
    NIM_ERR_BAD_REQUEST,
    NIM_ERR_NOT_FOUND,
    NIM_ERR_RATE_LIMIT,
    NIM_ERR_TIMEOUT,
    NIM_ERR_CONNECTION,
    NIM_ERR_PROVIDER,
    NIM_ERR_BAD_RESPONSE
} nim_err_type;

const char *nim_err_type_name(nim_err_type t);
/* HTTP status (>= 300, or 202) -> error type and whether a retry may help. */
nim_err_type nim_err_from_status(long status, int *retryable);

/* Checks every document and pushes texts: texts[i] = the text of document i, or false for
 * an image-only passage (ranking family). encode_idx holds cjson.encode (for table documents
 * without text). Raises, naming documents[i], on a document of the wrong type. */
void nim_wire_texts(lua_State *L, int docs_idx, int encode_idx, nim_family family);

/* A growable byte buffer in C memory. Whoever holds the struct owns p (free it). */
typedef struct {
    char *p;
    size_t n, cap;
} nim_buf;

int nim_buf_reserve(nim_buf *b, size_t extra); /* 0, or -1 when out of memory */
/* Appends s as a JSON string literal. 0, or -1 when out of memory. */
int nim_buf_json_string(nim_buf *b, const char *s, size_t n);

/* Writes the request body into b, keys in the documented order. top_k <= 0 and truncate
 * NULL mean "not sent". Returns 0, or -1 when out of memory (b keeps what it has: its owner
 * frees it). Reads only strings anchored in texts and documents; raises nothing itself. */
int nim_wire_body(lua_State *L, nim_buf *b, int docs_idx, int texts_idx, nim_family family,
                  const char *body_model, int query_idx, lua_Integer top_k, const char *truncate);

typedef struct {
    nim_family family;
    lua_Integer top_n; /* 0 = all */
    int return_documents;
    lua_Integer npassages;
} nim_parse_opts;

/* Decodes a 2xx body (string at body_idx) into the result table. On success pushes the result
 * and returns 1. On a body that is not JSON or has the wrong shape, pushes a message string
 * and returns 0. decode_idx holds cjson.decode, texts_idx the table from nim_wire_request,
 * array_mt_idx the array marker metatable. */
typedef struct {
    lua_Integer index;
    double score;
} nim_ranking;

/* Pushes {id = fresh UUID, results = rk[0..top_n) with documents from texts,
 * meta = {billed_units = {total_tokens = tokens}}}. rk is in final order. */
void nim_wire_results(lua_State *L, const nim_ranking *rk, lua_Integer n, lua_Integer tokens,
                      int texts_idx, int array_mt_idx, const nim_parse_opts *o);

int nim_wire_parse(lua_State *L, int body_idx, int decode_idx, int texts_idx, int array_mt_idx,
                   const nim_parse_opts *o);

/* Pushes a short human message taken from an error body (JSON detail/message/error or text).
 * decode_idx 0: the body's raw text only. */
void nim_wire_error_message(lua_State *L, int body_idx, int decode_idx);

/* A fresh UUID4 string into out (37 bytes). */
void nim_uuid4(char out[37]);

#endif
