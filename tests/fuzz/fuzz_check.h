/*
 * fuzz_check: the fuzz targets' invariant check. A violated invariant aborts with the
 * condition and the line, which libFuzzer reports as a crash (and saves the input).
 */
#ifndef GW_FUZZ_CHECK_H
#define GW_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed: %s (line %d)\n", #cond, __LINE__);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
