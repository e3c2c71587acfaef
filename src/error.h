/* error.h: nimrank's error taxonomy (DESIGN.md "Errors") and the one constructor of error
 * objects. The enum and its names are plain C; nim_push_error builds the Lua object. */
#ifndef NIM_ERROR_H
#define NIM_ERROR_H

#include <lua.h>

typedef enum {
    NIM_ERR_AUTH,
    NIM_ERR_BAD_REQUEST,
    NIM_ERR_NOT_FOUND,
    NIM_ERR_RATE_LIMIT,
    NIM_ERR_TIMEOUT,
    NIM_ERR_CONNECTION,
    NIM_ERR_PROVIDER,
    NIM_ERR_BAD_RESPONSE,
    NIM_ERR_CANCELLED,
    NIM_ERR_COUNT
} nim_err_type;

const char *nim_err_type_name(nim_err_type t);
int nim_err_type_parse(const char *name); /* the enum value, or -1 */
/* Whether a retry may help, when nothing more specific is known. */
int nim_err_retryable(nim_err_type t);
/* HTTP status (>= 300, or 202) -> error type and whether a retry may help. */
nim_err_type nim_err_from_status(long status, int *retryable);

/* `provider` names who the failing call was for, with the spelling of res.meta.provider
 * ("nvidia_nim", "local"), or "nimrank" when nimrank itself decided (the router found no
 * deployment, a configured name is unknown, an item of a batch was misused). */
#define NIM_PROVIDER_NIMRANK "nimrank"

typedef struct {
    nim_err_type type;
    long status; /* HTTP status, or 0 */
    int retryable;
    const char *provider;
    const char *model;  /* NULL: none */
    const char *secret; /* redacted from the message wherever it appears; NULL: none */
} nim_error;

/* Replaces the message on top of the stack with an error object (nim.Error). */
void nim_push_error(lua_State *L, const nim_error *e);
/* Pushes the one error every cancelled call gets. */
void nim_push_cancelled(lua_State *L, const char *provider, const char *model);
int nim_l_cancelled(lua_State *L); /* nim.native.cancelled(model) */

/* nim.native.error{type =, message =, status =, retryable =, provider =, model =, ...} ->
 * an error object: the same constructor for the Lua layer. Other fields are kept. */
int nim_l_error(lua_State *L);
int nim_error_tostring(lua_State *L);

#endif
