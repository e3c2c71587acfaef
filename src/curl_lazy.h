/* curl_lazy.h: libcurl, loaded on first use. Debian's libcurl pulls in ~35 shared libraries
 * (TLS, LDAP, SSH, Kerberos...), which cost most of a 10 ms start-up budget; a script that
 * never touches the network (the offline reranker) should not pay it. Include this instead of
 * <curl/curl.h>: the curl_* calls below go through a table filled by nim_curl_load(). */
#ifndef NIM_CURL_LAZY_H
#define NIM_CURL_LAZY_H

#define CURL_DISABLE_TYPECHECK 1 /* the type-checking macros would bypass the table */
#include <curl/curl.h>

/* clang-format off: hand-aligned */
#define NIM_CURL_FUNCS(X)                                                                          \
    X(CURLcode, global_init, (long))                                                               \
    X(void, global_cleanup, (void))                                                                \
    X(CURL *, easy_init, (void))                                                                   \
    X(void, easy_cleanup, (CURL *))                                                                \
    X(void, easy_reset, (CURL *))                                                                  \
    X(CURLcode, easy_setopt, (CURL *, CURLoption, ...))                                            \
    X(CURLcode, easy_getinfo, (CURL *, CURLINFO, ...))                                             \
    X(const char *, easy_strerror, (CURLcode))                                                     \
    X(CURLM *, multi_init, (void))                                                                 \
    X(CURLMcode, multi_cleanup, (CURLM *))                                                         \
    X(CURLMcode, multi_setopt, (CURLM *, CURLMoption, ...))                                        \
    X(CURLMcode, multi_add_handle, (CURLM *, CURL *))                                              \
    X(CURLMcode, multi_remove_handle, (CURLM *, CURL *))                                           \
    X(CURLMcode, multi_socket_action, (CURLM *, curl_socket_t, int, int *))                        \
    X(CURLMcode, multi_assign, (CURLM *, curl_socket_t, void *))                                   \
    X(CURLMcode, multi_timeout, (CURLM *, long *))                                                 \
    X(CURLMsg *, multi_info_read, (CURLM *, int *))                                                \
    X(const char *, multi_strerror, (CURLMcode))                                                   \
    X(struct curl_slist *, slist_append, (struct curl_slist *, const char *))                      \
    X(void, slist_free_all, (struct curl_slist *))                                                 \
    X(time_t, getdate, (const char *, const time_t *))                                             \
    X(curl_version_info_data *, version_info, (CURLversion))
/* clang-format on */

typedef struct {
#define NIM_CURL_FIELD(ret, name, args) ret(*name) args;
    NIM_CURL_FUNCS(NIM_CURL_FIELD)
#undef NIM_CURL_FIELD
} nim_curl_api;

extern nim_curl_api nim_curl;

/* Loads libcurl and runs curl_global_init once per process (thread-safe). 0, or -1 with a
 * message naming what is missing. */
int nim_curl_load(char *err, size_t errlen);
int nim_curl_loaded(void);
/* "libcurl/7.88.1" once loaded. */
const char *nim_curl_version(void);

#define curl_global_init nim_curl.global_init
#define curl_global_cleanup nim_curl.global_cleanup
#define curl_easy_init nim_curl.easy_init
#define curl_easy_cleanup nim_curl.easy_cleanup
#define curl_easy_reset nim_curl.easy_reset
#undef curl_easy_setopt
#define curl_easy_setopt nim_curl.easy_setopt
#undef curl_easy_getinfo
#define curl_easy_getinfo nim_curl.easy_getinfo
#define curl_easy_strerror nim_curl.easy_strerror
#define curl_multi_init nim_curl.multi_init
#define curl_multi_cleanup nim_curl.multi_cleanup
#undef curl_multi_setopt
#define curl_multi_setopt nim_curl.multi_setopt
#define curl_multi_add_handle nim_curl.multi_add_handle
#define curl_multi_remove_handle nim_curl.multi_remove_handle
#define curl_multi_socket_action nim_curl.multi_socket_action
#define curl_multi_assign nim_curl.multi_assign
#define curl_multi_timeout nim_curl.multi_timeout
#define curl_multi_info_read nim_curl.multi_info_read
#define curl_multi_strerror nim_curl.multi_strerror
#define curl_slist_append nim_curl.slist_append
#define curl_slist_free_all nim_curl.slist_free_all
#define curl_getdate nim_curl.getdate
#define curl_version_info nim_curl.version_info

#endif
