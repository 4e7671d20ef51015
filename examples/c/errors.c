/*
 * The error path of the perfplus C ABI: version checks, NULL arguments,
 * last-error messages (per thread, truncation), result names.
 *
 * Prints one line per check and exits 0 only if every check passed.
 * Built and run by `cargo test --test c_programs`, linked against the shared
 * and the static library, and under valgrind when it is installed.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "perfplus.h"

static int failures = 0;

#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (cond) {                                       \
            printf("ok: " __VA_ARGS__);                   \
        } else {                                          \
            printf("FAILED (%s:%d): ", __FILE__, __LINE__); \
            printf(__VA_ARGS__);                          \
            failures++;                                   \
        }                                                 \
        printf("\n");                                     \
    } while (0)

static void *other_thread(void *arg) {
    char buf[128];
    size_t len = 99;
    perfplus_result rc = perfplus_last_error(buf, sizeof buf, &len);
    int *empty = arg;
    *empty = rc == PERFPLUS_RESULT_OK && len == 0 && buf[0] == '\0';
    return NULL;
}

int main(void) {
    char expected[64];
    snprintf(expected, sizeof expected, "%d.%d.%d", PERFPLUS_VERSION_MAJOR, PERFPLUS_VERSION_MINOR,
             PERFPLUS_VERSION_PATCH);
    CHECK(strcmp(perfplus_version(), expected) == 0, "library version %s matches header %s",
          perfplus_version(), expected);

    char buf[256];
    size_t len = 12345;

    /* No failure yet on this thread: the message is empty. */
    perfplus_result rc = perfplus_last_error(buf, sizeof buf, &len);
    CHECK(rc == PERFPLUS_RESULT_OK && len == 0 && buf[0] == '\0', "no failure yet, empty message");

    /* NULL buffer: refused, and the refusal is the new last error. */
    rc = perfplus_last_error(NULL, sizeof buf, &len);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "NULL buf gives %s", perfplus_result_name(rc));
    rc = perfplus_last_error(buf, sizeof buf, &len);
    CHECK(rc == PERFPLUS_RESULT_OK && strcmp(buf, "perfplus_last_error: argument `buf` is NULL") == 0
              && len == strlen(buf),
          "last error: %s", buf);

    /* NULL out_len: refused, out-parameters untouched. */
    memset(buf, 'x', sizeof buf);
    rc = perfplus_last_error(buf, sizeof buf, NULL);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT && buf[0] == 'x', "NULL out_len gives %s, buf untouched",
          perfplus_result_name(rc));
    rc = perfplus_last_error(buf, sizeof buf, &len);
    CHECK(rc == PERFPLUS_RESULT_OK
              && strcmp(buf, "perfplus_last_error: argument `out_len` is NULL") == 0,
          "last error: %s", buf);

    /* Zero length: too small, len untouched. */
    len = 777;
    rc = perfplus_last_error(buf, 0, &len);
    CHECK(rc == PERFPLUS_RESULT_BUFFER_TOO_SMALL && len == 777, "len 0 gives %s, out_len untouched",
          perfplus_result_name(rc));

    /* Truncation: snprintf-like, NUL-terminated, full length reported. */
    char small[8];
    rc = perfplus_last_error(small, sizeof small, &len);
    CHECK(rc == PERFPLUS_RESULT_OK && strlen(small) == sizeof small - 1 && len >= sizeof small,
          "cut message \"%s\", full length %zu", small, len);

    /* The last error belongs to the thread that failed. */
    pthread_t t;
    int empty = 0;
    pthread_create(&t, NULL, other_thread, &empty);
    pthread_join(t, NULL);
    CHECK(empty, "another thread sees no last error");

    /* Result names. */
    CHECK(strcmp(perfplus_result_name(PERFPLUS_RESULT_NULL_ARGUMENT), "PERFPLUS_RESULT_NULL_ARGUMENT") == 0,
          "name of 100 is %s", perfplus_result_name(PERFPLUS_RESULT_NULL_ARGUMENT));
    CHECK(strcmp(perfplus_result_name(PERFPLUS_RESULT_PANIC), "PERFPLUS_RESULT_PANIC") == 0,
          "name of 9000 is %s", perfplus_result_name(PERFPLUS_RESULT_PANIC));
    CHECK(strcmp(perfplus_result_name(4242), "PERFPLUS_RESULT_UNKNOWN") == 0, "name of 4242 is %s",
          perfplus_result_name(4242));

    printf("%s: %d failed\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}
