/* curl_baseline: the baseline of bench/overhead.sh. Posts the byte-identical body nim sends,
 * N times on one reused easy handle (one keep-alive connection), keeping each answer in a
 * growing buffer as nimrank does, and prints the CPU (getrusage: user + system) and wall time
 * per call in microseconds. Usage: curl_baseline URL BODYFILE N */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench_util.h"

typedef struct {
    char *p;
    size_t n, cap;
} buf;

static size_t keep(char *ptr, size_t size, size_t nmemb, void *ud) {
    buf *b = ud;
    size_t n = size * nmemb;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return 0;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, ptr, n);
    b->n += n;
    return n;
}

static double cpu_now(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: curl_baseline URL BODYFILE N\n");
        return 2;
    }
    long len;
    char *body = bench_read_file(argv[2], &len);
    if (!body) return 1;
    int n = atoi(argv[3]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *easy = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "Accept: application/json");
    h = curl_slist_append(h, "Expect:");
    buf b = {0};
    curl_easy_setopt(easy, CURLOPT_URL, argv[1]);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, keep);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
    b.n = 0;
    if (curl_easy_perform(easy) != CURLE_OK) return 1; /* warm: the connection is open */
    double c0 = cpu_now(), w0 = nim_now();
    for (int i = 0; i < n; i++) {
        b.n = 0;
        if (curl_easy_perform(easy) != CURLE_OK) return 1;
    }
    double cpu = cpu_now() - c0, wall = nim_now() - w0;
    printf("%.1f %.1f\n", cpu * 1e6 / n, wall * 1e6 / n);
    curl_slist_free_all(h);
    curl_easy_cleanup(easy);
    curl_global_cleanup();
    free(b.p);
    free(body);
    return 0;
}
