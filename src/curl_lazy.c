/* curl_lazy.c: dlopen libcurl on the first network call (see curl_lazy.h for why). */
#include "curl_lazy.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

nim_curl_api nim_curl;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char load_error[256];
static int loaded;
static char version[64]; /* "libcurl/x.y.z", written once by load() */

static void load(void) {
    static const char *const names[] = {"libcurl.so.4", "libcurl-gnutls.so.4", "libcurl.so"};
    void *lib = NULL;
    for (size_t i = 0; !lib && i < sizeof names / sizeof names[0]; i++)
        lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(load_error, sizeof load_error,
                 "cannot load libcurl (%s): install it with apt-get install libcurl4", dlerror());
        return;
    }
    /* dlsym returns void *; POSIX guarantees it converts to a function pointer. */
#define NIM_CURL_SYM(ret, name, args)                                                              \
    *(void **)(&nim_curl.name) = dlsym(lib, "curl_" #name);                                        \
    if (!nim_curl.name) {                                                                          \
        snprintf(load_error, sizeof load_error, "libcurl has no curl_%s: too old", #name);         \
        return;                                                                                    \
    }
    NIM_CURL_FUNCS(NIM_CURL_SYM)
#undef NIM_CURL_SYM
    if (nim_curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(load_error, sizeof load_error, "curl_global_init failed");
        return;
    }
    snprintf(version, sizeof version, "libcurl/%s",
             nim_curl.version_info(CURLVERSION_NOW)->version);
    loaded = 1; /* the library stays loaded for the life of the process */
}

int nim_curl_load(char *err, size_t errlen) {
    pthread_once(&once, load);
    if (loaded) return 0;
    if (err && errlen) snprintf(err, errlen, "%s", load_error);
    return -1;
}

int nim_curl_loaded(void) { return loaded; }

const char *nim_curl_version(void) { return loaded ? version : "libcurl/none"; }
