/* fuzz.h: what the fuzz targets share. Each target defines LLVMFuzzerTestOneInput; built with
 * clang -fsanitize=fuzzer it is a libFuzzer binary (make fuzz, make fuzz-smoke), built with
 * driver.c it replays files (the regressions and seeds, in make test). A broken invariant
 * aborts, so the fuzzer records the input. */
#ifndef NIM_FUZZ_H
#define NIM_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz invariant broken: %s (%s:%d)\n", #cond, __FILE__, __LINE__);     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
