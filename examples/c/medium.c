/*
 * The redundant authenticated medium through the C ABI, the way the
 * Heartbeat plugin uses it: NULL and bad arguments, open without threads,
 * fork, one process sends while the other receives, duplicates from the
 * second link suppressed, a wrong key counted, link health and names.
 *
 * Usage: medium <port-a> <port-b> <keyfile>   (ports free on 127.0.0.1)
 * Prints one line per check and exits 0 only if every check passed.
 */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perfplus.h"

static int failures = 0;

#define CHECK(cond, ...)                                    \
    do {                                                    \
        if (cond) {                                         \
            printf("ok: " __VA_ARGS__);                     \
        } else {                                            \
            printf("FAILED (%s:%d): ", __FILE__, __LINE__); \
            printf(__VA_ARGS__);                            \
            failures++;                                     \
        }                                                   \
        printf("\n");                                       \
        fflush(stdout);                                     \
    } while (0)

static const char *last_error(void) {
    static char buf[512];
    size_t len;
    if (perfplus_last_error(buf, sizeof buf, &len) != PERFPLUS_RESULT_OK) return "?";
    return buf;
}

static int thread_count(void) {
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *e;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static const uint8_t KEY[] = "sixteen bytes or more of key";

/* A medium for `node` on `port`, with two links that both lead to 127.0.0.1
 * (on loopback every frame comes from 127.0.0.1, so the two-link test sends
 * each frame twice to the same peer: the second copy is a duplicate). */
static perfplus_medium *open_medium(const char *node, int port, int peer_port, const uint8_t *key,
                                    size_t key_len, int links) {
    perfplus_medium_config *cfg = NULL;
    perfplus_medium *m = NULL;
    char peer[64];
    if (perfplus_medium_config_new(&cfg) != PERFPLUS_RESULT_OK) return NULL;
    perfplus_medium_config_set_node(cfg, node);
    perfplus_medium_config_set_key(cfg, key, key_len);
    perfplus_medium_config_set_port(cfg, (uint16_t)port);
    perfplus_medium_config_set_link_timeout_ms(cfg, 500);
    snprintf(peer, sizeof peer, "127.0.0.1:%d", peer_port);
    perfplus_medium_config_add_link(cfg, peer);
    if (links > 1) {
        /* A second link to the same address is refused; use 127.0.0.2,
         * which the kernel answers from 127.0.0.1: frames still arrive. */
        snprintf(peer, sizeof peer, "127.0.0.2:%d", peer_port);
        perfplus_medium_config_add_link(cfg, peer);
    }
    if (perfplus_medium_open(cfg, &m) != PERFPLUS_RESULT_OK) m = NULL;
    perfplus_medium_config_free(cfg);
    return m;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: medium <port-a> <port-b> <keyfile>\n");
        return 2;
    }
    int port_a = atoi(argv[1]), port_b = atoi(argv[2]);
    const char *keyfile = argv[3];
    perfplus_result rc;

    /* NULL arguments are refused with a message naming the argument. */
    rc = perfplus_medium_config_new(NULL);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "config_new(NULL) is NULL_ARGUMENT");
    CHECK(strcmp(last_error(), "perfplus_medium_config_new: argument `out` is NULL") == 0,
          "last error: %s", last_error());
    perfplus_medium_config *cfg = NULL;
    CHECK(perfplus_medium_config_new(&cfg) == PERFPLUS_RESULT_OK && cfg, "config_new");
    rc = perfplus_medium_config_set_node(cfg, NULL);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "set_node(NULL) is NULL_ARGUMENT");
    rc = perfplus_medium_config_set_key(cfg, NULL, 16);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "set_key(NULL) is NULL_ARGUMENT");
    rc = perfplus_medium_config_set_key(cfg, KEY, 8);
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT, "an 8-byte key is refused: %s", last_error());
    rc = perfplus_medium_config_add_link(cfg, "not-an-address");
    CHECK(rc == PERFPLUS_RESULT_ADDRESS, "a bad link address is refused: %s", last_error());
    rc = perfplus_medium_config_set_key_file(cfg, "/nonexistent/key");
    CHECK(rc == PERFPLUS_RESULT_INVALID_CONFIG, "a missing key file is refused: %s", last_error());
    rc = perfplus_medium_config_set_key_file(cfg, keyfile);
    CHECK(rc == PERFPLUS_RESULT_OK, "the key file is read: %s", rc ? last_error() : "");
    perfplus_medium *m = NULL;
    rc = perfplus_medium_open(cfg, &m);
    CHECK(rc == PERFPLUS_RESULT_INVALID_CONFIG && m == NULL,
          "open without node and links fails, out untouched: %s", last_error());
    CHECK(perfplus_medium_open(NULL, &m) == PERFPLUS_RESULT_NULL_ARGUMENT, "open(NULL config)");
    perfplus_medium_config_free(cfg);
    perfplus_medium_config_free(NULL);
    perfplus_medium_free(NULL);
    CHECK(perfplus_medium_send(NULL, KEY, 4) == PERFPLUS_RESULT_NULL_ARGUMENT, "send(NULL)");
    size_t n = 0;
    CHECK(perfplus_medium_recv(NULL, (uint8_t *)&n, 1, &n, 0) == PERFPLUS_RESULT_NULL_ARGUMENT,
          "recv(NULL)");

    /* Open: a bound socket and still one thread, so fork() is safe. */
    perfplus_medium *a = open_medium("nodea", port_a, port_b, KEY, sizeof KEY - 1, 2);
    perfplus_medium *b = open_medium("nodeb", port_b, port_a, KEY, sizeof KEY - 1, 1);
    CHECK(a && b, "two media open: %s", (a && b) ? "" : last_error());
    if (!a || !b) return 1;
    CHECK(thread_count() == 1, "no thread started by open (%d threads)", thread_count());
    size_t links = 0;
    CHECK(perfplus_medium_link_count(a, &links) == PERFPLUS_RESULT_OK && links == 2,
          "a has 2 links");
    char name[64];
    size_t name_len = 0;
    rc = perfplus_medium_link_name(a, 1, name, sizeof name, &name_len);
    char expected[64];
    snprintf(expected, sizeof expected, "127.0.0.2:%d", port_b);
    CHECK(rc == PERFPLUS_RESULT_OK && strcmp(name, expected) == 0, "link 1 is %s", name);
    bool up = true;
    uint64_t silent = 0;
    rc = perfplus_medium_link_status(b, 0, &up, &silent);
    CHECK(rc == PERFPLUS_RESULT_OK && !up && silent == UINT64_MAX, "b's link is down before any frame");
    rc = perfplus_medium_link_status(b, 5, &up, &silent);
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT, "link 5 does not exist: %s", last_error());

    /* Fork like Heartbeat: the child writes, the parent reads. Only one
     * process may send on a medium (each copy counts its own sequence). */
    pid_t child = fork();
    if (child == 0) {
        int ok = 1;
        for (int i = 0; i < 3; i++) {
            char msg[32];
            int len = snprintf(msg, sizeof msg, "message %d", i);
            ok &= perfplus_medium_send(a, (const uint8_t *)msg, (size_t)len) == PERFPLUS_RESULT_OK;
        }
        ok &= perfplus_medium_send(a, (const uint8_t *)"a longer message", 16) == PERFPLUS_RESULT_OK;
        perfplus_medium_free(a);
        perfplus_medium_free(b);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the forked child sent 4 messages");
    uint8_t buf[256];
    int got = 0;
    for (int i = 0; i < 3; i++) {
        size_t len = 0;
        char want[32];
        snprintf(want, sizeof want, "message %d", i);
        rc = perfplus_medium_recv(b, buf, sizeof buf, &len, 2000);
        if (rc == PERFPLUS_RESULT_OK && len == strlen(want) && memcmp(buf, want, len) == 0) got++;
    }
    CHECK(got == 3, "the parent received the 3 messages in order, once each");
    size_t len = 12345;
    /* The 4th is larger than the buffer: dropped with BUFFER_TOO_SMALL. */
    rc = perfplus_medium_recv(b, buf, 4, &len, 2000);
    CHECK(rc == PERFPLUS_RESULT_BUFFER_TOO_SMALL && len == 12345, "too small a buffer: %s",
          last_error());
    rc = perfplus_medium_recv(b, buf, sizeof buf, &len, 300);
    CHECK(rc == PERFPLUS_RESULT_TIMEOUT && len == 12345, "then nothing: TIMEOUT, len untouched");
    uint64_t dups = 0, delivered = 0;
    perfplus_medium_read_counter(b, PERFPLUS_MEDIUM_COUNTER_DUPLICATES, &dups);
    perfplus_medium_read_counter(b, PERFPLUS_MEDIUM_COUNTER_DELIVERED, &delivered);
    CHECK(delivered == 3 && dups == 4, "3 delivered, 4 duplicates from the second link (%llu, %llu)",
          (unsigned long long)delivered, (unsigned long long)dups);
    rc = perfplus_medium_link_status(b, 0, &up, &silent);
    CHECK(rc == PERFPLUS_RESULT_OK && up && silent < 500, "b's link is up (silent %llu ms)",
          (unsigned long long)silent);
    uint64_t v;
    CHECK(perfplus_medium_read_counter(b, 99, &v) == PERFPLUS_RESULT_INVALID_ARGUMENT,
          "counter 99 does not exist");

    /* A node with another key: its frames are counted and never delivered. */
    static const uint8_t OTHER[] = "another key, also sixteen+ bytes";
    perfplus_medium *x = open_medium("nodex", port_a + 2, port_b, OTHER, sizeof OTHER - 1, 1);
    CHECK(x != NULL, "a medium with another key opens");
    if (x) {
        perfplus_medium_send(x, (const uint8_t *)"forged", 6);
        rc = perfplus_medium_recv(b, buf, sizeof buf, &len, 300);
        uint64_t auth = 0;
        perfplus_medium_read_counter(b, PERFPLUS_MEDIUM_COUNTER_AUTH_FAILURES, &auth);
        CHECK(rc == PERFPLUS_RESULT_TIMEOUT && auth == 1, "the forged frame is counted, not delivered");
        perfplus_medium_free(x);
    }

    perfplus_medium_free(a);
    perfplus_medium_free(b);
    printf("PASSED: %d failed\n", failures);
    return failures ? 1 : 0;
}
