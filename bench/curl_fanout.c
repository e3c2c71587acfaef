/* curl_fanout: the baseline of bench/fanout.sh. A plain libcurl multi program: N POSTs of one
 * body, C in flight at once, easy handles reused, at most C connections (kept and reused).
 * Prints "seconds peak_rss_kb base_rss_kb": wall time, and the process's peak and starting
 * resident memory (for the memory per request in flight). Usage: curl_fanout URL BODY N C */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench_util.h"

static size_t sink(char *ptr, size_t size, size_t nmemb, void *ud) {
    (void)ptr;
    (void)ud;
    return size * nmemb;
}

static long rss_kb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = 0;
    size_t k = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, k) == 0) kb = atol(line + k + 1);
    if (f) fclose(f);
    return kb;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: curl_fanout URL BODYFILE N C\n");
        return 2;
    }
    long len;
    char *body = bench_read_file(argv[2], &len);
    if (!body) return 1;
    int n = atoi(argv[3]), c = atoi(argv[4]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    long base = rss_kb("VmRSS:");
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)c);
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)c);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    int started = 0, done = 0;
    double t0 = nim_now();
    for (int i = 0; i < c && started < n; i++, started++) {
        CURL *e = curl_easy_init();
        curl_easy_setopt(e, CURLOPT_URL, argv[1]);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink);
        curl_multi_add_handle(m, e);
    }
    while (done < n) {
        int running;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            CURL *e = msg->easy_handle;
            curl_multi_remove_handle(m, e);
            done++;
            if (started < n) { /* the same handle again: its connection goes back to the pool */
                started++;
                curl_multi_add_handle(m, e);
            } else {
                curl_easy_cleanup(e);
            }
        }
        if (done < n) curl_multi_poll(m, NULL, 0, 1000, NULL);
    }
    double took = nim_now() - t0;
    printf("%.3f %ld %ld\n", took, rss_kb("VmHWM:"), base);
    curl_multi_cleanup(m);
    curl_slist_free_all(h);
    curl_global_cleanup();
    free(body);
    return 0;
}
