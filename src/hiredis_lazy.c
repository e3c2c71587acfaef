/* hiredis_lazy.c: dlopen hiredis on the first Redis command (see hiredis_lazy.h for why). */
#include "hiredis_lazy.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

nim_hiredis_api nim_hiredis;

#define NIM_STR_(x) #x
#define NIM_STR(x) NIM_STR_(x)
/* hiredis 0.x names its library after major.minor: libhiredis.so.0.14 */
#define SONAME "libhiredis.so." NIM_STR(HIREDIS_MAJOR) "." NIM_STR(HIREDIS_MINOR)

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char load_error[256];
static int loaded;

static void load(void) {
    void *lib = dlopen(SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(load_error, sizeof load_error,
                 "cannot load hiredis (%s): install it with apt-get install libhiredis%d.%d",
                 dlerror(), HIREDIS_MAJOR, HIREDIS_MINOR);
        return;
    }
    /* dlsym returns void *; POSIX guarantees it converts to a function pointer. */
#define NIM_HIREDIS_SYM(ret, name, args)                                                           \
    *(void **)(&nim_hiredis.name) = dlsym(lib, "redis" #name);                                     \
    if (!nim_hiredis.name) {                                                                       \
        snprintf(load_error, sizeof load_error, "%s has no redis%s", SONAME, #name);               \
        return;                                                                                    \
    }
    NIM_HIREDIS_FUNCS(NIM_HIREDIS_SYM)
#undef NIM_HIREDIS_SYM
    loaded = 1; /* the library stays loaded for the life of the process */
}

int nim_hiredis_load(char *err, size_t errlen) {
    pthread_once(&once, load);
    if (loaded) return 0;
    if (err && errlen) snprintf(err, errlen, "%s", load_error);
    return -1;
}
