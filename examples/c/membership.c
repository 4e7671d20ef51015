/*
 * A two-node perfplus cluster inside one process, on loopback, from C:
 * configuration builders, NULL arguments refused with useful messages,
 * no thread before perfplus_node_start, the event callback with userdata
 * and its destroy callback, perfplus_node_members, a clean stop.
 *
 * Usage: membership <port1> <port2> <scratch-dir>
 * Prints one line per check and exits 0 only if every check passed.
 * Built and run by `cargo test --test c_membership` (shared, static,
 * valgrind).
 */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
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
    } while (0)

static const char *last_error(void) {
    static char buf[512];
    size_t len = 0;
    if (perfplus_last_error(buf, sizeof buf, &len) != PERFPLUS_RESULT_OK) strcpy(buf, "?");
    return buf;
}

static int thread_count(void) {
    DIR *dir = opendir("/proc/self/task");
    int n = 0;
    struct dirent *e;
    if (!dir) return -1;
    while ((e = readdir(dir)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(dir);
    return n;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* What the callback of one node saw; the callback runs on the node's own
 * event thread, so the counters are behind a mutex. */
struct seen {
    pthread_mutex_t lock;
    int member_up;
    int member_left;
    int quorum_changes;
    int destroyed;
};

static struct seen seen1 = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0};
static struct seen seen2 = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0};

static void on_event(void *userdata, const perfplus_node_event *event) {
    struct seen *s = userdata;
    pthread_mutex_lock(&s->lock);
    switch (event->kind) {
    case PERFPLUS_EVENT_MEMBER_UP: s->member_up++; break;
    case PERFPLUS_EVENT_MEMBER_LEFT: s->member_left++; break;
    case PERFPLUS_EVENT_QUORUM_CHANGED: s->quorum_changes++; break;
    default: break;
    }
    pthread_mutex_unlock(&s->lock);
}

static void destroy(void *userdata) {
    struct seen *s = userdata;
    pthread_mutex_lock(&s->lock);
    s->destroyed++;
    pthread_mutex_unlock(&s->lock);
}

static int read_seen(struct seen *s, int *field) {
    pthread_mutex_lock(&s->lock);
    int v = *field;
    pthread_mutex_unlock(&s->lock);
    return v;
}

static perfplus_node_config *make_config(uint16_t local, uint16_t my_port, uint16_t peer_port) {
    perfplus_node_config *cfg = NULL;
    const unsigned char secret[] = "0123456789abcdef-shared-secret";
    char peer[32];
    snprintf(peer, sizeof peer, "127.0.0.1:%u", peer_port);
    const char *peers[] = {peer};
    if (perfplus_node_config_new("c-example", &cfg) != PERFPLUS_RESULT_OK
        || perfplus_node_config_add_node(cfg, 1, "one", 1) != PERFPLUS_RESULT_OK
        || perfplus_node_config_add_node(cfg, 2, "two", 1) != PERFPLUS_RESULT_OK
        || perfplus_node_config_set_local(cfg, local) != PERFPLUS_RESULT_OK
        || perfplus_node_config_set_key(cfg, secret, sizeof secret - 1) != PERFPLUS_RESULT_OK
        || perfplus_node_config_add_unicast_link(cfg, "127.0.0.1", my_port, peers, 1) != PERFPLUS_RESULT_OK
        || perfplus_node_config_set_fencing(cfg, false) != PERFPLUS_RESULT_OK) {
        printf("FAILED: building the configuration: %s\n", last_error());
        failures++;
    }
    return cfg;
}

static perfplus_member_state state_of(const perfplus_node *node, uint16_t id) {
    perfplus_member members[8];
    size_t count = 0;
    if (perfplus_node_members(node, members, 8, &count) != PERFPLUS_RESULT_OK) return PERFPLUS_MEMBER_UNKNOWN;
    for (size_t i = 0; i < count; i++)
        if (members[i].id == id) return members[i].state;
    return PERFPLUS_MEMBER_UNKNOWN;
}

static int wait_state(const perfplus_node *node, uint16_t id, perfplus_member_state want, int seconds) {
    for (int i = 0; i < seconds * 50; i++) {
        if (state_of(node, id) == want) return 1;
        sleep_ms(20);
    }
    return 0;
}

/* Events reach the callback on the node's event thread, after the members
 * snapshot changed: wait (bounded) for the count instead of racing it. */
static int wait_seen(struct seen *s, int *counter, int at_least, int seconds) {
    for (int i = 0; i < seconds * 50; i++) {
        if (read_seen(s, counter) >= at_least) return 1;
        sleep_ms(20);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s <port1> <port2> <scratch-dir>\n", argv[0]);
        return 2;
    }
    uint16_t port1 = (uint16_t)atoi(argv[1]), port2 = (uint16_t)atoi(argv[2]);
    const char *dir = argv[3];
    perfplus_result rc;

    /* --- NULL arguments: refused, with a message naming function and argument. */
    perfplus_node_config *cfg = NULL;
    rc = perfplus_node_config_new(NULL, &cfg);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT && cfg == NULL, "NULL cluster_name gives %s", perfplus_result_name(rc));
    CHECK(strcmp(last_error(), "perfplus_node_config_new: argument `cluster_name` is NULL") == 0, "last error: %s",
          last_error());
    rc = perfplus_node_config_new("x", NULL);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "NULL out gives %s", perfplus_result_name(rc));
    rc = perfplus_node_config_add_node(NULL, 1, "one", 1);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "NULL config gives %s", perfplus_result_name(rc));
    CHECK(strcmp(last_error(), "perfplus_node_config_add_node: argument `config` is NULL") == 0, "last error: %s",
          last_error());
    perfplus_node *node = NULL;
    struct seen unused = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0};
    rc = perfplus_node_start(NULL, on_event, &unused, destroy, &node);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT && node == NULL, "NULL config to start gives %s", perfplus_result_name(rc));
    CHECK(strcmp(last_error(), "perfplus_node_start: argument `config` is NULL") == 0, "last error: %s", last_error());
    CHECK(unused.destroyed == 1, "a failed start still releases the userdata");
    size_t count = 0;
    perfplus_member members[4];
    rc = perfplus_node_members(NULL, members, 4, &count);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "NULL node to members gives %s", perfplus_result_name(rc));
    CHECK(strcmp(last_error(), "perfplus_node_members: argument `node` is NULL") == 0, "last error: %s", last_error());
    rc = perfplus_node_stop(NULL);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "NULL node to stop gives %s", perfplus_result_name(rc));
    perfplus_node_free(NULL);
    perfplus_node_config_free(NULL);

    /* --- Bad values: refused with the reason. */
    cfg = make_config(1, port1, port2);
    const char *bad_peers[] = {"not-an-address"};
    rc = perfplus_node_config_add_unicast_link(cfg, NULL, port1, bad_peers, 1);
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT, "a bad peer address gives %s", perfplus_result_name(rc));
    CHECK(strstr(last_error(), "`peers[0]` \"not-an-address\" is not an IP address") != NULL, "last error: %s",
          last_error());
    const char *null_peer[] = {NULL};
    rc = perfplus_node_config_add_unicast_link(cfg, NULL, port1, null_peer, 1);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "a NULL peer gives %s: %s", perfplus_result_name(rc), last_error());
    rc = perfplus_node_config_set_key(cfg, (const uint8_t *)"short", 5);
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT, "a 5-byte key gives %s: %s", perfplus_result_name(rc), last_error());
    perfplus_node_config *nokey = NULL;
    perfplus_node_config_new("c-example", &nokey);
    rc = perfplus_node_start(nokey, NULL, NULL, NULL, &node);
    CHECK(rc == PERFPLUS_RESULT_INVALID_CONFIG, "starting without a key gives %s: %s", perfplus_result_name(rc),
          last_error());
    perfplus_node_config_free(nokey);

    /* --- Heartbeat's authkeys must not be readable by others. */
    char ha_cf[512], authkeys[512];
    snprintf(ha_cf, sizeof ha_cf, "%s/ha.cf", dir);
    snprintf(authkeys, sizeof authkeys, "%s/authkeys", dir);
    FILE *f = fopen(ha_cf, "w");
    fputs("keepalive 1\ndeadtime 10\nucast lo 127.0.0.1\nnode one two\n", f);
    fclose(f);
    f = fopen(authkeys, "w");
    fputs("auth 1\n1 sha1 s3cret\n", f);
    fclose(f);
    chmod(authkeys, 0644);
    perfplus_node_config *hb = NULL;
    rc = perfplus_node_config_from_heartbeat(ha_cf, authkeys, "one", &hb);
    CHECK(rc == PERFPLUS_RESULT_INVALID_CONFIG && hb == NULL, "a world-readable authkeys gives %s",
          perfplus_result_name(rc));
    CHECK(strstr(last_error(), "chmod 600") != NULL, "last error: %s", last_error());
    chmod(authkeys, 0600);
    rc = perfplus_node_config_from_heartbeat(ha_cf, authkeys, "one", &hb);
    CHECK(rc == PERFPLUS_RESULT_OK && hb != NULL, "ha.cf + authkeys (mode 600) read: %s", perfplus_result_name(rc));
    rc = perfplus_node_config_set_state_dir(hb, dir);
    CHECK(rc == PERFPLUS_RESULT_OK, "a Heartbeat node takes a state directory: %s", perfplus_result_name(rc));
    rc = perfplus_node_config_set_state_dir(hb, NULL);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "a NULL state directory gives %s", perfplus_result_name(rc));
    rc = perfplus_node_config_set_state_dir(cfg, dir);
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT && strstr(last_error(), "state directory") != NULL,
          "a perfplus-protocol node refuses a state directory: %s", last_error());
    perfplus_node_config_free(hb);

    /* --- No thread before start (Heartbeat forks after loading plugins). */
    int threads_before = thread_count();
    CHECK(threads_before == 1, "one thread before any node starts (%d)", threads_before);

    /* --- Two nodes on loopback. */
    perfplus_node *one = NULL, *two = NULL;
    rc = perfplus_node_start(cfg, on_event, &seen1, destroy, &one);
    CHECK(rc == PERFPLUS_RESULT_OK && one != NULL, "node 1 started: %s", rc ? last_error() : "ok");
    perfplus_node_config_free(cfg);
    perfplus_node_config *cfg2 = make_config(2, port2, port1);
    rc = perfplus_node_start(cfg2, on_event, &seen2, destroy, &two);
    CHECK(rc == PERFPLUS_RESULT_OK && two != NULL, "node 2 started: %s", rc ? last_error() : "ok");
    perfplus_node_config_free(cfg2);
    CHECK(thread_count() > 1, "the nodes run threads now");

    if (one && two) {
        CHECK(wait_state(one, 2, PERFPLUS_MEMBER_ALIVE, 30) && wait_state(two, 1, PERFPLUS_MEMBER_ALIVE, 30),
              "each node sees the other alive");
        size_t n = 0;
        rc = perfplus_node_member_count(one, &n);
        CHECK(rc == PERFPLUS_RESULT_OK && n == 2, "two members");
        rc = perfplus_node_members(one, members, 1, &count);
        CHECK(rc == PERFPLUS_RESULT_BUFFER_TOO_SMALL, "room for one member gives %s: %s", perfplus_result_name(rc),
              last_error());
        rc = perfplus_node_members(one, members, 4, &count);
        CHECK(rc == PERFPLUS_RESULT_OK && count == 2 && members[0].local && strcmp(members[0].name, "one") == 0
                  && members[1].state == PERFPLUS_MEMBER_ALIVE && members[1].incarnation > 0,
              "members: %s (local), %s (alive)", members[0].name, members[1].name);
        bool quorate = false;
        rc = perfplus_node_quorate(one, &quorate);
        CHECK(rc == PERFPLUS_RESULT_OK && quorate, "node 1 is quorate");
        CHECK(wait_seen(&seen1, &seen1.member_up, 1, 30) && wait_seen(&seen1, &seen1.quorum_changes, 1, 30),
              "the callback saw node 2 come up and the quorum");

        rc = perfplus_node_stop(two);
        CHECK(rc == PERFPLUS_RESULT_OK, "node 2 stopped");
        CHECK(read_seen(&seen2, &seen2.destroyed) == 1, "stop released node 2's userdata");
        CHECK(wait_state(one, 2, PERFPLUS_MEMBER_LEFT, 10), "node 1 saw node 2 leave cleanly");
        CHECK(perfplus_node_stop(two) == PERFPLUS_RESULT_OK, "stop is idempotent");
    }
    perfplus_node_free(two);
    perfplus_node_free(one);
    CHECK(read_seen(&seen1, &seen1.destroyed) == 1, "free released node 1's userdata once");
    CHECK(read_seen(&seen1, &seen1.member_left) == 1, "node 1's callback saw the leave");
    CHECK(thread_count() == 1, "every thread joined (%d left)", thread_count());

    printf("%s: %d failed\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}
