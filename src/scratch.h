/* scratch.h: memory that lives for one step of plain C work (reading an answer), reused from
 * step to step: a chain of blocks, bump-allocated, kept between steps so that a steady stream
 * of answers allocates nothing. Pure C. Not for anything that must outlive the step. */
#ifndef NIM_SCRATCH_H
#define NIM_SCRATCH_H

#include <stddef.h>

typedef struct nim_scratch_block nim_scratch_block;
typedef struct {
    nim_scratch_block *blocks; /* the newest first */
} nim_scratch;

/* size bytes (16-aligned) until the next reset, or NULL when memory is out. The signature is
 * nim_alloc_fn's: ud is the nim_scratch. */
void *nim_scratch_alloc(void *ud, size_t size);
/* Ends a step: everything allocated is given back. What the step needed stays reserved as one
 * block (up to NIM_SCRATCH_KEEP bytes), so the next step of the same size allocates nothing. */
void nim_scratch_reset(nim_scratch *s);
void nim_scratch_free(nim_scratch *s);

#define NIM_SCRATCH_KEEP ((size_t)16 << 20)

#endif
