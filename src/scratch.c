/* scratch.c: see scratch.h. Written here rather than taken from a library: Debian has no
 * small arena allocator worth a dependency, and this one is forty lines. */
#include "scratch.h"

#include <stdlib.h>

struct nim_scratch_block {
    nim_scratch_block *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
};

#define MIN_BLOCK ((size_t)64 << 10)

void *nim_scratch_alloc(void *ud, size_t size) {
    nim_scratch *s = ud;
    size = (size + 15) & ~(size_t)15;
    nim_scratch_block *b = s->blocks;
    if (!b || b->cap - b->used < size) {
        size_t cap = b ? b->cap * 2 : MIN_BLOCK;
        if (cap < size) cap = size;
        nim_scratch_block *nb = malloc(sizeof *nb + cap);
        if (!nb) return NULL;
        nb->next = b;
        nb->cap = cap;
        nb->used = 0;
        s->blocks = b = nb;
    }
    void *p = b->data + b->used;
    b->used += size;
    return p;
}

void nim_scratch_reset(nim_scratch *s) {
    nim_scratch_block *b = s->blocks;
    if (!b) return;
    if (!b->next && b->cap <= NIM_SCRATCH_KEEP) { /* the steady state: one block that fits */
        b->used = 0;
        return;
    }
    size_t total = 0; /* several blocks: one of their joint size next time, if kept at all */
    for (nim_scratch_block *x = b; x; x = x->next)
        total += x->used;
    nim_scratch_free(s);
    if (total <= NIM_SCRATCH_KEEP && total > 0) {
        nim_scratch_alloc(s, total);
        s->blocks->used = 0;
    }
}

void nim_scratch_free(nim_scratch *s) {
    for (nim_scratch_block *b = s->blocks, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    s->blocks = NULL;
}
