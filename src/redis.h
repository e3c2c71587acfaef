/* redis.h: a Redis client on the engine's loop (plain C: no Lua). One connection per client,
 * pipelined: commands are written as they come and their replies come back in order.
 *
 * hiredis (its async API, loaded on first use: hiredis_lazy.h) speaks the protocol. This file is
 * the adapter that puts hiredis's socket into the engine's epoll set as an engine source (so
 * every driver of the engine drives Redis too), and what hiredis 0.14 lacks: connect and command
 * deadlines on the engine's timer, a lazy connection, reconnection with capped exponential
 * backoff, AUTH and SELECT on connect. No callback of hiredis runs Lua: replies are copied into
 * the operation and the binding turns them into Lua values afterwards. */
#ifndef NIM_REDIS_H
#define NIM_REDIS_H

#include <stddef.h>

#include "engine.h"

typedef struct nim_redis nim_redis;
typedef struct nim_redis_op nim_redis_op;

#define NIM_REDIS_LABEL_MAX 272 /* "[host]:port" */

/* A reply, copied out of hiredis (which frees its own when the callback returns). */
typedef enum {
    NIM_RV_STRING,
    NIM_RV_STATUS,
    NIM_RV_INTEGER,
    NIM_RV_NIL,
    NIM_RV_ARRAY,
    NIM_RV_ERROR
} nim_redis_type;

typedef struct nim_redis_value {
    nim_redis_type type;
    long long integer;
    size_t len;
    const char *str; /* STRING, STATUS, ERROR: len bytes and a NUL */
    size_t n;
    struct nim_redis_value **elem; /* ARRAY: n elements */
} nim_redis_value;

typedef struct {
    const char *host;     /* copied */
    int port;             /* 1..65535 */
    const char *username; /* NULL or "": AUTH password alone */
    const char *password; /* NULL or "": no AUTH */
    long long db;         /* 0: no SELECT */
    double timeout;       /* seconds a command may wait for its reply once connected */
    double connect_timeout;
    double backoff, backoff_max; /* seconds: the first wait after a failure, and the cap */
    size_t max_reply_bytes;      /* unparsed reply bytes buffered at most (0: no cap) */
} nim_redis_config;

typedef enum {
    NIM_REDIS_IDLE,       /* no connection: none needed yet, or the last one closed cleanly */
    NIM_REDIS_CONNECTING, /* the TCP connection is being made */
    NIM_REDIS_CONNECTED,
    NIM_REDIS_DOWN /* the last attempt or connection failed: no new attempt before retry_at */
} nim_redis_state;

/* What failed an operation; the binding maps these onto nimrank's error types. */
typedef enum {
    NIM_RF_NONE,
    NIM_RF_CONNECTION,  /* refused, reset, closed, down (retryable) */
    NIM_RF_TIMEOUT,     /* no connection within connect_timeout, no reply within timeout */
    NIM_RF_AUTH,        /* the server refused AUTH */
    NIM_RF_SETUP,       /* the server refused SELECT */
    NIM_RF_UNAVAILABLE, /* hiredis cannot be loaded, out of memory, the client is closed */
    NIM_RF_BAD_REPLY,   /* a reply over max_reply_bytes, one no command asked for, bad RESP */
} nim_redis_failure;

typedef struct {
    nim_redis_state state;
    double since;             /* nim_now() when the state began */
    const char *error;        /* the last failure's message, NULL once connected again */
    unsigned long reconnects; /* connection attempts after the first */
    double retry_in;          /* DOWN: seconds before the next attempt may be made */
    int pending;              /* operations waiting for replies */
    int closed;
} nim_redis_status;

/* Copies the configuration; connects on the first command. NULL: out of memory. */
nim_redis *nim_redis_new(const nim_redis_config *cfg);
/* Closes the connection; what is pending fails (connection, "closed"). Idempotent. */
void nim_redis_close(nim_redis *r);
void nim_redis_free(nim_redis *r); /* closes first; safe on NULL */
int nim_redis_closed(const nim_redis *r);
void nim_redis_get_status(const nim_redis *r, nim_redis_status *st);
/* "host:port" (IPv6 in brackets), for messages. */
const char *nim_redis_label(const nim_redis *r);
/* The password, or NULL: for redaction only (messages never carry it; this makes sure). */
const char *nim_redis_secret(const nim_redis *r);

/* Sends ncmds commands (the ith has argc[i] arguments, taken in turn from argv and lens) in
 * one write, on the connection of the engine e (made now if there is none: lazily), and
 * returns the operation: pending, or already failed (down during the backoff, refused at
 * once). NULL: out of memory. Never blocks, but for the name lookup of a host name that
 * hiredis 0.14 makes (getaddrinfo) when it connects. */
nim_redis_op *nim_redis_send(nim_redis *r, nim_engine *e, int ncmds, const int *argc,
                             const char *const *argv, const size_t *lens);
int nim_redis_op_done(const nim_redis_op *op);
/* A done operation's failure (NIM_RF_NONE: every reply came) and its message. */
nim_redis_failure nim_redis_op_failure(const nim_redis_op *op, const char **message);
int nim_redis_op_count(const nim_redis_op *op);
const nim_redis_value *nim_redis_op_reply(const nim_redis_op *op, int i); /* 0-based */
/* Lets go of the operation: freed if done, else abandoned (its replies are dropped when they
 * come: a reply cannot be taken back from a pipelined connection). Safe on NULL. */
void nim_redis_op_release(nim_redis_op *op);

#endif
