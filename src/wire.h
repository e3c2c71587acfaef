/* wire.h: the NIM wire format (LITELLM_COMPAT.md sections 2-3).
 * Responses are decoded by lua-cjson, a Lua library, so the readers here work on a lua_State;
 * the request body is written in C. */
#ifndef NIM_WIRE_H
#define NIM_WIRE_H

#include <lua.h>
#include <lauxlib.h>

#include "answer.h"
#include "ranking.h"
#include "resolve.h"

/* Checks documents first+1 .. first+n and pushes texts: texts[i] = the text of document
 * first+i, or false for an image-only passage (ranking family), and (ranking family) texts[-i]
 * its image. encode_idx holds cjson.encode (for table documents without text). Raises, naming
 * documents[k], on a document of the wrong type. */
void nim_wire_texts(lua_State *L, int docs_idx, lua_Integer first, lua_Integer n, int encode_idx,
                    nim_family family);

/* A growable byte buffer in C memory. Whoever holds the struct owns p (free it). */
typedef struct {
    char *p;
    size_t n, cap;
} nim_buf;

int nim_buf_reserve(nim_buf *b, size_t extra);        /* 0, or -1 when out of memory */
int nim_buf_add(nim_buf *b, const char *s, size_t n); /* the same */
/* Appends s as a JSON string literal. 0, or -1 when out of memory. */
int nim_buf_json_string(nim_buf *b, const char *s, size_t n);

/* What a request body of these texts takes, about: their bytes, per_text of JSON around each,
 * and room for the rest. One allocation in the common case; raw reads only. */
size_t nim_wire_body_estimate(lua_State *L, int texts, size_t per_text, const char *body_model);

/* Writes the request body into b, keys in the documented order, the passages from texts (as
 * nim_wire_texts made it). top_k <= 0 and truncate NULL mean "not sent". Returns 0, or -1 when
 * out of memory (b keeps what it has: its owner frees it). Only raw reads of texts: it raises
 * nothing, so b cannot leak. */
int nim_wire_body(lua_State *L, nim_buf *b, int texts_idx, nim_family family,
                  const char *body_model, int query_idx, lua_Integer top_k, const char *truncate);

/* A 2xx answer's rankings, read into C. */
typedef struct {
    nim_ranking *rk; /* in the provider's order; owned by a userdata the parser pushed */
    size_t n;
    lua_Integer tokens; /* usage.total_tokens when > 0, else the number of rankings */
    int counted;        /* the answer carried the count (tokens is not the fallback) */
} nim_parsed;

/* Decodes a 2xx body (string at body_idx) sent with npassages passages, in the provider's
 * shape (NULL: NIM's). On success pushes two
 * values (the scratch that owns out->rk, and the provider's id or nil) and returns 1. On a
 * body that is not JSON or has the wrong shape pushes a message and returns 0. */
int nim_wire_parse(lua_State *L, int body_idx, int decode_idx, lua_Integer npassages,
                   const nim_answer_shape *shape, nim_parsed *out);

/* Pushes the message of an error body: its JSON detail/message/error/title, decoded, or else
 * the body's text; whole, so that secrets can be redacted before nim_wire_one_line cuts it. */
void nim_wire_error_message(lua_State *L, int body_idx, int decode_idx);
/* Replaces the string at idx with its JSON escapes (\\n, \\/, \\uXXXX, pairs) decoded, others
 * left as they are: what a reader would see, so that redaction sees it too. */
void nim_wire_unescape(lua_State *L, int idx);
/* Replaces the string at idx with one line of at most 300 bytes, no control characters, valid
 * UTF-8 (a byte that is not becomes "?"). */
void nim_wire_one_line(lua_State *L, int idx);

#endif
