/* Engine sources (engine.h): another protocol's socket and deadline on the engine's loop, seen
 * by every way of driving it: a blocking step, the one descriptor of the simple host loop, and
 * a host's socket and timer callbacks. */
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../src/clock.h"
#include "../../src/engine.h"
#include "ctest.h"

typedef struct {
    nim_source *src;
    int fd; /* read on readiness, as a real owner would */
    int in, out, due, gone;
    int free_on_gone;
} owner;

static void on(void *ud, int events) {
    owner *o = ud;
    if (events & NIM_WATCH_IN) {
        char b[16];
        o->in++;
        if (o->fd > 0 && read(o->fd, b, sizeof b) <= 0) o->fd = -1;
    }
    if (events & NIM_WATCH_OUT) o->out++;
    if (events & NIM_SOURCE_DUE) o->due++;
    if (events & NIM_SOURCE_GONE) {
        o->gone++;
        if (o->free_on_gone) {
            nim_source_free(o->src);
            o->src = NULL;
        }
    }
}

static nim_engine *engine(void) {
    char err[256];
    nim_engine *e = nim_engine_new(err, sizeof err);
    if (!e) fprintf(stderr, "  %s\n", err);
    return e;
}

static void a_blocking_step_wakes_for_a_source_socket(void) {
    nim_engine *e = engine();
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    owner o = {0};
    o.fd = sv[0];
    o.src = nim_source_new(e, on, &o);
    CHECK(nim_source_watch(o.src, sv[0], NIM_WATCH_IN) == 0);
    nim_source_busy(o.src, 2);
    CHECK(nim_engine_running(e) == 2); /* no transfer runs, but the source has work */
    CHECK(nim_engine_step(e, 0) == 2 && o.in == 0);
    CHECK(write(sv[1], "x", 1) == 1);
    struct pollfd p = {nim_engine_fd(e), POLLIN, 0}; /* the one descriptor says so too */
    CHECK(poll(&p, 1, 1000) == 1);
    double t0 = nim_now();
    CHECK(nim_engine_step(e, 1000) == 2);
    CHECK(o.in == 1 && nim_now() - t0 < 0.5);
    nim_source_busy(o.src, 0);
    t0 = nim_now();
    CHECK(nim_engine_step(e, 1000) == 0); /* an idle source: nothing to wait for */
    CHECK(nim_now() - t0 < 0.5);
    CHECK(write(sv[1], "y", 1) == 1);
    CHECK(nim_engine_step(e, 0) == 0 && o.in == 2); /* but what is ready is handled */
    nim_source_free(o.src);
    CHECK(nim_engine_running(e) == 0);
    CHECK(nim_engine_step(e, 1000) == 0); /* no source: returns at once */
    nim_engine_free(e);
    close(sv[0]);
    close(sv[1]);
}

static void a_source_deadline_is_the_engines_timer(void) {
    nim_engine *e = engine();
    owner o = {0};
    o.src = nim_source_new(e, on, &o);
    CHECK(nim_engine_timeout(e) == -1);
    nim_source_due(o.src, nim_now() + 0.05);
    long ms = nim_engine_timeout(e);
    CHECK(ms > 30 && ms <= 50); /* counted although no transfer runs */
    double t0 = nim_now();
    while (o.due == 0 && nim_now() - t0 < 2)
        nim_engine_step(e, 1000);
    double took = nim_now() - t0;
    CHECK(o.due == 1 && took >= 0.04 && took < 0.5);
    CHECK(nim_engine_timeout(e) == -1); /* cleared before on() ran */
    nim_source_free(o.src);
    nim_engine_free(e);
}

typedef struct {
    int fd, events, calls;
    void *socketp;
    long timer_ms;
} host;

static void watch(void *ud, int fd, int events, void *socketp) {
    host *h = ud;
    h->fd = fd;
    h->events = events;
    h->socketp = socketp;
    h->calls++;
}

static void timer(void *ud, long ms) { ((host *)ud)->timer_ms = ms; }

static void a_hosts_callbacks_see_sources_like_curls_sockets(void) {
    nim_engine *e = engine();
    host h = {-1, 0, 0, NULL, -2};
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    owner o = {0};
    o.src = nim_source_new(e, on, &o);
    CHECK(nim_source_watch(o.src, sv[0], NIM_WATCH_IN) == 0);
    nim_engine_set_watchers(e, watch, timer, &h); /* joining late: announced */
    CHECK(h.fd == sv[0] && h.events == NIM_WATCH_IN && h.calls == 1);
    static int mine;
    CHECK(nim_engine_assign(e, sv[0], &mine) == 0);
    CHECK(nim_source_watch(o.src, sv[0], NIM_WATCH_IN | NIM_WATCH_OUT) == 0);
    CHECK(h.events == (NIM_WATCH_IN | NIM_WATCH_OUT) && h.socketp == &mine);
    CHECK(nim_engine_socket_action(e, sv[0], NIM_WATCH_OUT) == 0);
    CHECK(o.out == 1 && o.in == 0);
    nim_source_due(o.src, nim_now() + 0.02);
    CHECK(h.timer_ms >= 0 && h.timer_ms <= 20);
    usleep(25000);
    nim_engine_socket_action(e, -1, 0); /* the host's timer fired */
    CHECK(o.due == 1);
    CHECK(nim_source_watch(o.src, -1, 0) == 0); /* before closing: the host stops too */
    CHECK(h.fd == sv[0] && h.events == 0);
    CHECK(nim_engine_assign(e, sv[0], &mine) == -1);
    nim_source_free(o.src);
    nim_engine_free(e);
    close(sv[0]);
    close(sv[1]);
}

static void freeing_the_engine_tells_each_source(void) {
    nim_engine *e = engine();
    owner a = {0}, b = {0};
    a.free_on_gone = 1;
    a.src = nim_source_new(e, on, &a);
    b.src = nim_source_new(e, on, &b); /* does not free its own: the engine does */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(nim_source_watch(a.src, sv[0], NIM_WATCH_IN) == 0);
    nim_engine_free(e);
    CHECK(a.gone == 1 && b.gone == 1 && a.src == NULL);
    close(sv[0]);
    close(sv[1]);
}

int main(void) {
    RUN(a_blocking_step_wakes_for_a_source_socket);
    RUN(a_source_deadline_is_the_engines_timer);
    RUN(a_hosts_callbacks_see_sources_like_curls_sockets);
    RUN(freeing_the_engine_tells_each_source);
    return CTEST_SUMMARY("test_sources");
}
