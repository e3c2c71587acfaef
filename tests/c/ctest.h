/* ctest.h: a tiny table-friendly test runner. Each TEST is a function; CHECK records a
 * failure and carries on so one run shows every broken expectation. */
#ifndef CTEST_H
#define CTEST_H
#include <stdio.h>
#include <string.h>

static int ctest_failed_checks;
static int ctest_passed, ctest_failed;

/* clang-format off: hand-aligned */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);             \
            ctest_failed_checks++;                                                                 \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                                   \
            fprintf(stderr, "  %s:%d: %s\n    got:  %s\n    want: %s\n", __FILE__, __LINE__, #a,   \
                    a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                       \
            ctest_failed_checks++;                                                                 \
        }                                                                                          \
    } while (0)

#define CHECK_NEAR(a, b, eps)                                                                      \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        if (!(a_ - b_ <= (eps) && b_ - a_ <= (eps))) {                                             \
            fprintf(stderr, "  %s:%d: %s = %.9g, want %.9g\n", __FILE__, __LINE__, #a, a_, b_);    \
            ctest_failed_checks++;                                                                 \
        }                                                                                          \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        int before_ = ctest_failed_checks;                                                         \
        fn();                                                                                      \
        if (ctest_failed_checks == before_) {                                                      \
            ctest_passed++;                                                                        \
            printf("ok   %s\n", #fn);                                                              \
        } else {                                                                                   \
            ctest_failed++;                                                                        \
            printf("FAIL %s\n", #fn);                                                              \
        }                                                                                          \
    } while (0)

#define CTEST_SUMMARY(suite)                                                                       \
    (printf("%s: %d passed, %d failed\n", suite, ctest_passed, ctest_failed), ctest_failed ? 1 : 0)
/* clang-format on */
#endif
