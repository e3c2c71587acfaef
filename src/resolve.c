/* resolve.c: the routing rules of LITELLM_COMPAT.md section 1, in plain C. */
#include "resolve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const nim_catalog_builtin nim_catalog_builtins[] = {
    {"nvidia/rerank-qa-mistral-4b",
     {"/v1/retrieval/nvidia/reranking", "nv-rerank-qa-mistral-4b:1"},
     512,
     512,
     NULL,
     NULL},
    {"nv-rerank-qa-mistral-4b:1",
     {"/v1/retrieval/nvidia/reranking", "nv-rerank-qa-mistral-4b:1"},
     512,
     512,
     NULL,
     NULL},
    {"nvidia/nv-rerankqa-mistral-4b-v3", {NULL, NULL}, 512, 512, NULL, NULL},
    {"nvidia/llama-3_2-nv-rerankqa-1b-v1", {NULL, NULL}, 512, 8192, NULL, NULL},
    {"nvidia/llama-3_2-nv-rerankqa-1b-v2",
     {NULL, NULL},
     512,
     8192,
     "the hosted endpoint answers 410 Gone since 2026-05-18",
     "nvidia/llama-nemotron-rerank-1b-v2"},
    {"nvidia/llama-nemotron-rerank-1b-v2", {NULL, NULL}, 512, 8192, NULL, NULL},
    {"nvidia/llama-nemotron-rerank-vl-1b-v2", {NULL, NULL}, 512, 8192, NULL, NULL},
    {NULL, {NULL, NULL}, 0, 0, NULL, NULL},
};

const char *nim_family_name(nim_family f) {
    return f == NIM_FAMILY_RANKING ? "ranking" : "retrieval";
}

static void seterr(char *err, size_t errlen, const char *fmt, const char *a) {
    if (err && errlen) snprintf(err, errlen, fmt, a);
}

static int starts_with(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

static int ends_with(const char *s, size_t n, const char *suffix) {
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* Characters a model name may hold: anything else would change the URL's meaning. */
static int model_char_ok(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == ':' || c == '/' || c == '@' || c == '+';
}

/* A "." or ".." segment (or ".." anywhere): in a URL path it would name another model. */
static int has_dot_segment(const char *m) {
    if (strstr(m, "..")) return 1;
    for (const char *seg = m; seg; seg = strchr(seg, '/') ? strchr(seg, '/') + 1 : NULL)
        if (seg[0] == '.' && (seg[1] == '/' || seg[1] == '\0')) return 1;
    return 0;
}

int nim_model_parse(const char *model, nim_family *family, const char **clean, char *err,
                    size_t errlen) {
    if (!model || !*model) {
        seterr(err, errlen, "%smodel: must be a non-empty string", "");
        return -1;
    }
    const char *m = model;
    if (starts_with(m, "nvidia_nim/")) m += strlen("nvidia_nim/");
    nim_family f = NIM_FAMILY_RETRIEVAL;
    if (starts_with(m, "ranking/")) {
        m += strlen("ranking/");
        f = NIM_FAMILY_RANKING;
    }
    if (!*m) {
        seterr(err, errlen, "model: '%s' names no model after its prefix", model);
        return -1;
    }
    size_t n = strlen(m);
    if (n >= NIM_MODEL_MAX) {
        seterr(err, errlen, "model: longer than %s characters", "255");
        return -1;
    }
    if (m[0] == '/' || m[n - 1] == '/' || strstr(m, "//") || has_dot_segment(m)) {
        seterr(err, errlen, "model: '%s' has an empty or relative path segment", model);
        return -1;
    }
    for (const char *p = m; *p; p++) {
        if (!model_char_ok((unsigned char)*p)) {
            seterr(err, errlen, "model: '%s' has a character outside [A-Za-z0-9._:/@+-]", model);
            return -1;
        }
    }
    *family = f;
    *clean = m;
    return 0;
}

static const char *env_get(nim_getenv_fn fn, void *ud, const char *name) {
    const char *v = fn ? fn(name, ud) : getenv(name);
    return (v && *v) ? v : NULL;
}

/* A base URL nimrank will send a key to: http(s)://, a host, a port in 1..65535 when given,
 * and no byte that would change the request line (controls, spaces, '#'). field names it. */
static int check_base(const char *base, const char *field, char *err, size_t errlen) {
    const char *why = NULL;
    const char *h = strstr(base, "://");
    if (!starts_with(base, "http://") && !starts_with(base, "https://")) {
        why = "must start with http:// or https://";
    } else {
        for (const unsigned char *p = (const unsigned char *)base; *p && !why; p++)
            if (*p <= ' ' || *p == 0x7f || *p == '#') why = "has a space, control byte or '#'";
    }
    if (!why) {
        h += 3;
        size_t n = strcspn(h, "/?");
        const char *at = memchr(h, '@', n); /* userinfo@host */
        if (at) {
            n -= (size_t)(at + 1 - h);
            h = at + 1;
        }
        const char *end = h + n, *colon = NULL;
        if (*h == '[') { /* [IPv6]:port */
            const char *close = memchr(h, ']', n);
            if (!close)
                why = "has an unclosed '[' in its host";
            else if (close + 1 < end && close[1] == ':')
                colon = close + 1;
        } else {
            colon = memchr(h, ':', n);
        }
        if (!why && (n == 0 || colon == h)) why = "has no host";
        if (!why && colon) {
            long port = 0;
            const char *p = colon + 1;
            if (p == end) why = "has an empty port";
            for (; p < end && !why; p++) {
                if (*p < '0' || *p > '9')
                    why = "has a port that is not a number";
                else if ((port = port * 10 + (*p - '0')) > 65535)
                    why = "has a port above 65535";
            }
            if (!why && port == 0) why = "has port 0";
        }
    }
    if (!why) return 0;
    if (err && errlen) snprintf(err, errlen, "%s: %s", field, why);
    return -1;
}

int nim_check_base_url(const char *url, const char *field, char *err, size_t errlen) {
    return check_base(url, field, err, errlen);
}

int nim_check_status_url(const char *url, const char *field, char *err, size_t errlen) {
    if (check_base(url, field, err, errlen) != 0) return -1;
    if (strchr(url, '?')) { /* the request id is appended as a path segment */
        snprintf(err, errlen, "%s: has a query ('?'): the request id is appended to its path",
                 field);
        return -1;
    }
    return 0;
}

/* Why a catalog endpoint path cannot be appended to a base URL, or NULL: a path ("/v1/...";
 * the leading '/' may be left out) of the characters a model path uses, with no empty, "."
 * or ".." segment (which would move the request elsewhere on the server). */
static const char *endpoint_path_problem(const char *path) {
    const char *seg = path + (path[0] == '/');
    if (!*seg) return "empty";
    for (const char *p = seg; *p; p++)
        if (!model_char_ok((unsigned char)*p)) return "has a character outside [A-Za-z0-9._:/@+-]";
    for (;; seg++) {
        size_t n = strcspn(seg, "/");
        if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return "has an empty, '.' or '..' segment";
        seg += n;
        if (!*seg) return NULL;
    }
}

/* Copy base into buf without trailing slashes. */
static int copy_base(char *buf, size_t cap, const char *base, size_t *len) {
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    if (n + 1 > cap) return -1;
    memcpy(buf, base, n);
    buf[n] = '\0';
    *len = n;
    return 0;
}

/* Host part of an http(s) URL, for the hosted-API check. */
static int url_is_hosted(const char *url) {
    const char *h = strstr(url, "://");
    if (!h) return 0;
    h += 3;
    size_t n = strcspn(h, "/:?#");
    const char *at = memchr(h, '@', n); /* userinfo@host */
    if (at) {
        n -= (size_t)(at + 1 - h);
        h = at + 1;
    }
    return (n == 10 && strncmp(h, "nvidia.com", 10) == 0) || ends_with(h, n, ".nvidia.com");
}

int nim_resolve(const char *model, const char *api_base, const nim_catalog_entry *entry,
                nim_getenv_fn getenv_fn, void *ud, nim_route *out, char *err, size_t errlen) {
    const char *clean;
    nim_family fam;
    memset(out, 0, sizeof *out);
    if (nim_model_parse(model, &fam, &clean, err, errlen) != 0) return -1;
    out->family = fam;
    snprintf(out->model, sizeof out->model, "%s", clean);

    const char *why =
        entry && entry->endpoint_path ? endpoint_path_problem(entry->endpoint_path) : NULL;
    if (why) {
        if (err && errlen) snprintf(err, errlen, "catalog['%s'].endpoint_path: %s", clean, why);
        return -1;
    }
    /* Body model: catalog, else underscores become dots. */
    if (entry && entry->body_model) {
        if (strlen(entry->body_model) >= sizeof out->body_model || !*entry->body_model) {
            seterr(err, errlen, "catalog['%s'].body_model: empty or too long", clean);
            return -1;
        }
        for (const unsigned char *p = (const unsigned char *)entry->body_model; *p; p++)
            if (*p < 0x20 || *p == 0x7f) {
                seterr(err, errlen, "catalog['%s'].body_model: has a control byte", clean);
                return -1;
            }
        snprintf(out->body_model, sizeof out->body_model, "%s", entry->body_model);
    } else {
        snprintf(out->body_model, sizeof out->body_model, "%s", clean);
        for (char *p = out->body_model; *p; p++)
            if (*p == '_') *p = '.';
    }

    /* Base URL precedence. */
    const char *base = NULL;
    if (api_base && *api_base) {
        base = api_base;
        out->base_source = "api_base";
    } else if ((base = env_get(getenv_fn, ud, "NVIDIA_NIM_RERANK_API_BASE"))) {
        out->base_source = "NVIDIA_NIM_RERANK_API_BASE";
    } else if ((base = env_get(getenv_fn, ud, "NVIDIA_NIM_API_BASE")) &&
               !strstr(base, "integrate.api.nvidia.com")) {
        out->base_source = "NVIDIA_NIM_API_BASE";
    } else {
        base = NIM_DEFAULT_BASE;
        out->base_source = "default";
    }
    if (check_base(base, strcmp(out->base_source, "api_base") == 0 ? "api_base" : out->base_source,
                   err, errlen) != 0)
        return -1;

    char b[NIM_URL_MAX];
    size_t n;
    if (copy_base(b, sizeof b, base, &n) != 0) goto too_long;
    int w;
    if (fam == NIM_FAMILY_RANKING) {
        if (ends_with(b, n, "/ranking")) {
            w = snprintf(out->url, sizeof out->url, "%s", b);
        } else {
            if (ends_with(b, n, "/v1")) b[n -= 3] = '\0';
            w = snprintf(out->url, sizeof out->url, "%s/v1/ranking", b);
        }
    } else if (strstr(b, "/retrieval/")) {
        w = snprintf(out->url, sizeof out->url, "%s", b); /* a full URL: used as given */
    } else {
        if (ends_with(b, n, "/v1")) b[n -= 3] = '\0';
        if (entry && entry->endpoint_path) {
            const char *p = entry->endpoint_path; /* checked above */
            w = snprintf(out->url, sizeof out->url, "%s/%s", b, p + (p[0] == '/'));
        } else {
            w = snprintf(out->url, sizeof out->url, "%s/v1/retrieval/%s/reranking", b, clean);
        }
    }
    if (w < 0 || (size_t)w >= sizeof out->url) goto too_long;
    out->hosted = url_is_hosted(out->url);
    return 0;
too_long:
    seterr(err, errlen, "api_base: URL longer than %s characters", "2047");
    return -1;
}
