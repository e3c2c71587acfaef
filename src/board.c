/* board.c: the shared notice board (board.h). Each slot is written by one worker only and
 * read by any, under a sequence lock: the writer makes the sequence odd, copies, makes it even
 * again; a reader retries while it is odd or changed under it. No lock a dead worker could
 * leave held. */
#include "board.h"

#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

typedef struct {
    _Atomic unsigned long seq;
    _Atomic size_t len;
    char text[NIM_BOARD_SLOT_BYTES];
} slot;

struct nim_board {
    int nslots;
    size_t bytes;
    slot *slots;
};

nim_board *nim_board_new(int slots) {
    if (slots < 1) return NULL;
    size_t bytes = sizeof(slot) * (size_t)slots;
    void *mem = mmap(NULL, bytes + sizeof(nim_board), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return NULL;
    nim_board *b = (nim_board *)((char *)mem + bytes);
    b->nslots = slots;
    b->bytes = bytes + sizeof(nim_board);
    b->slots = mem; /* mmap's pages are zero: every slot empty, sequence even */
    return b;
}

void nim_board_free(nim_board *b) {
    if (b) munmap(b->slots, b->bytes);
}

int nim_board_slots(const nim_board *b) { return b ? b->nslots : 0; }

void nim_board_pin(nim_board *b, int i, const char *text, size_t len) {
    if (!b || i < 0 || i >= b->nslots) return;
    slot *s = &b->slots[i];
    if (len > sizeof s->text) { /* keep whole lines only */
        len = sizeof s->text;
        while (len > 0 && text[len - 1] != '\n')
            len--;
    }
    /* odd: being written (a slot left odd by a writer that died is made even first) */
    unsigned long seq = atomic_load_explicit(&s->seq, memory_order_relaxed) | 1;
    atomic_store_explicit(&s->seq, seq, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    memcpy(s->text, text, len);
    atomic_store_explicit(&s->len, len, memory_order_relaxed);
    atomic_store_explicit(&s->seq, seq + 1, memory_order_release); /* even: whole again */
}

size_t nim_board_read(nim_board *b, int i, char *buf, size_t cap) {
    if (!b || i < 0 || i >= b->nslots) return 0;
    slot *s = &b->slots[i];
    for (int tries = 0; tries < 100; tries++) {
        unsigned long before = atomic_load_explicit(&s->seq, memory_order_acquire);
        if (before & 1) continue;
        size_t len = atomic_load_explicit(&s->len, memory_order_relaxed);
        if (len > cap) len = cap;
        memcpy(buf, s->text, len);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&s->seq, memory_order_relaxed) == before) return len;
    }
    return 0; /* a writer that never finishes (it died mid-copy): nothing to show */
}

void nim_board_clear(nim_board *b, int i) { nim_board_pin(b, i, "", 0); }
