/* hiredis_lazy.h: hiredis (Debian's libhiredis0.14), loaded on the first Redis command, as
 * curl_lazy.h loads libcurl: nothing links it, so nim.so, libnimrank.a and the programs built
 * on them need no -lhiredis and load on machines without it; only a Redis call then fails,
 * with a message that says what to install. The library is found by the soname of the headers
 * it was built against (the ABI of redisAsyncContext and redisReply is that version's).
 * Include this instead of <hiredis/async.h>. */
#ifndef NIM_HIREDIS_LAZY_H
#define NIM_HIREDIS_LAZY_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

/* X(return type, name without the "redis" prefix, arguments) */
#define NIM_HIREDIS_FUNCS(X)                                                                       \
    X(redisAsyncContext *, AsyncConnect, (const char *, int))                                      \
    X(int, AsyncSetConnectCallback, (redisAsyncContext *, redisConnectCallback *))                 \
    X(void, AsyncFree, (redisAsyncContext *))                                                      \
    X(void, AsyncHandleRead, (redisAsyncContext *))                                                \
    X(void, AsyncHandleWrite, (redisAsyncContext *))                                               \
    X(int, BufferRead, (redisContext *))                                                           \
    X(int, ReaderGetReply, (redisReader *, void **))                                               \
    X(int, AsyncCommandArgv,                                                                       \
      (redisAsyncContext *, redisCallbackFn *, void *, int, const char **, const size_t *))

typedef struct {
#define NIM_HIREDIS_FIELD(ret, name, args) ret(*name) args;
    NIM_HIREDIS_FUNCS(NIM_HIREDIS_FIELD)
#undef NIM_HIREDIS_FIELD
} nim_hiredis_api;

extern nim_hiredis_api nim_hiredis;

/* Loads hiredis once per process (thread-safe). 0, or -1 with a message naming what is
 * missing. */
int nim_hiredis_load(char *err, size_t errlen);

#define redisAsyncConnect nim_hiredis.AsyncConnect
#define redisAsyncSetConnectCallback nim_hiredis.AsyncSetConnectCallback
#define redisAsyncFree nim_hiredis.AsyncFree
#define redisAsyncHandleRead nim_hiredis.AsyncHandleRead
#define redisAsyncHandleWrite nim_hiredis.AsyncHandleWrite
#define redisBufferRead nim_hiredis.BufferRead
#define redisReaderGetReply nim_hiredis.ReaderGetReply
#define redisAsyncCommandArgv nim_hiredis.AsyncCommandArgv

#endif
