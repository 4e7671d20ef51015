/*
 * HA orchestration from C: two HA nodes ("alpha" in this process, "beta"
 * in a forked child: two hosts, each with its own OCF state directory) on
 * loopback keep one ocf:heartbeat:Dummy resource running, and this program
 * prints every event alpha delivers, each orchestrator decision with its
 * reason: the cold start of the resource on alpha, the evacuation to beta
 * when alpha is put in standby, and its restart on alpha when beta leaves.
 * Also: NULL and bad arguments refused with useful messages (a failed start
 * still releases the userdata), no thread before the node starts, status
 * as JSON, stop refused from inside the callback, a clean stop.
 *
 * Usage: ha_events <scratch-dir> <hb-port-alpha> <hb-port-beta> <control-port-alpha> <control-port-beta>
 * Needs resource-agents (ocf:heartbeat:Dummy). Prints one line per check
 * and exits 0 only if every check passed. Built and run by
 * `cargo test --test c_ha_events` (shared, static, valgrind).
 */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "perfplus.h"

static int failures = 0;
static const char *me = "alpha";

/* One whole line per check, even while the event thread prints (the
 * condition is evaluated first: it may wait for that thread). */
#define CHECK(cond, ...)                                            \
    do {                                                            \
        int passed_ = (cond);                                       \
        flockfile(stdout);                                          \
        if (passed_) {                                              \
            printf("ok: " __VA_ARGS__);                             \
        } else {                                                    \
            printf("FAILED (%s, %s:%d): ", me, __FILE__, __LINE__); \
            printf(__VA_ARGS__);                                    \
            failures++;                                             \
        }                                                           \
        printf("\n");                                               \
        funlockfile(stdout);                                        \
    } while (0)

static const char *last_error(void) {
    static char buf[1024];
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

/* What alpha's callback saw; it runs on the node's event thread. */
struct seen {
    pthread_mutex_t lock;
    perfplus_ha_node *node;   /* set once the start returned */
    int events, membership, cold_start, destroyed;
    int evacuation_decided;   /* DECISION migrate svc 1 -> 2, reason STANDBY of 1 */
    int evacuation_done;      /* ACTION_FINISHED migrate, ok */
    int restart_decided;      /* DECISION start svc on 1 after node 2 left */
    int stop_tried;
    perfplus_result stop_rc;
    char stop_error[256];
    int status_from_callback;
};

static struct seen seen = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, "", 0};

static void on_event(void *userdata, const perfplus_ha_event *e) {
    struct seen *s = userdata;
    flockfile(stdout);
    printf("%s event: %s\n", me, e->text);
    if (e->kind == PERFPLUS_HA_EVENT_DECISION)
        printf("%s   decision: resource %s, host %u -> %u, reason %d about node %u: %s\n", me, e->resource,
               e->from_host, e->to_host, (int)e->reason, e->reason_host, e->reason_text);
    funlockfile(stdout);
    pthread_mutex_lock(&s->lock);
    s->events++;
    switch (e->kind) {
    case PERFPLUS_HA_EVENT_MEMBERSHIP:
        if (e->membership != NULL) s->membership++;
        break;
    case PERFPLUS_HA_EVENT_COLD_START: s->cold_start++; break;
    case PERFPLUS_HA_EVENT_DECISION:
        if (e->action == PERFPLUS_HA_ACTION_MIGRATE && strcmp(e->resource, "svc") == 0 && e->from_host == 1
            && e->to_host == 2 && e->reason == PERFPLUS_HA_REASON_STANDBY && e->reason_host == 1)
            s->evacuation_decided++;
        if (e->action == PERFPLUS_HA_ACTION_START && strcmp(e->resource, "svc") == 0 && e->to_host == 1)
            s->restart_decided++;
        break;
    case PERFPLUS_HA_EVENT_ACTION_FINISHED:
        if (e->action == PERFPLUS_HA_ACTION_MIGRATE && e->ok && e->to_host == 2) s->evacuation_done++;
        break;
    default: break;
    }
    perfplus_ha_node *node = s->node;
    int try_stop = node != NULL && !s->stop_tried;
    if (try_stop) s->stop_tried = 1;
    pthread_mutex_unlock(&s->lock);
    if (try_stop) {
        /* Stopping from here would wait for this very callback: refused. */
        perfplus_result rc = perfplus_ha_node_stop(node);
        char json[4096];
        size_t len = 0;
        perfplus_result status = perfplus_ha_node_status_json(node, json, sizeof json, &len);
        pthread_mutex_lock(&s->lock);
        s->stop_rc = rc;
        snprintf(s->stop_error, sizeof s->stop_error, "%s", last_error());
        s->status_from_callback = status == PERFPLUS_RESULT_OK && len > 0;
        pthread_mutex_unlock(&s->lock);
    }
    fflush(stdout);
}

static void destroy(void *userdata) {
    struct seen *s = userdata;
    pthread_mutex_lock(&s->lock);
    s->destroyed++;
    pthread_mutex_unlock(&s->lock);
}

static int read_seen(int *field) {
    pthread_mutex_lock(&seen.lock);
    int v = *field;
    pthread_mutex_unlock(&seen.lock);
    return v;
}

/* Whether the node's status JSON contains `needle`. */
static int status_has(const perfplus_ha_node *node, const char *needle) {
    char json[8192];
    size_t len = 0;
    if (perfplus_ha_node_status_json(node, json, sizeof json, &len) != PERFPLUS_RESULT_OK) return 0;
    return strstr(json, needle) != NULL;
}

static int wait_status(const perfplus_ha_node *node, const char *needle, int seconds) {
    for (int i = 0; i < seconds * 20; i++) {
        if (status_has(node, needle)) return 1;
        sleep_ms(50);
    }
    return 0;
}

static int wait_seen(int *field, int seconds) {
    for (int i = 0; i < seconds * 20; i++) {
        if (read_seen(field) > 0) return 1;
        sleep_ms(50);
    }
    return 0;
}

static void write_config(const char *path, const char *node, int hb_me, int hb_peer, int ctl_alpha, int ctl_beta) {
    FILE *f = fopen(path, "w");
    fprintf(f,
            "cluster = \"c-ha-events\"\n"
            "node = \"%s\"\n"
            "key = \"70657266706c75732d632d6162692d7465737421\"\n"
            "interval_ms = 100\n"
            "initial_wait_ms = 2000\n"
            "[fencing]\nrequired = false\n"
            "[[nodes]]\nid = 1\nname = \"alpha\"\ncontrol = \"127.0.0.1:%d\"\n"
            "[[nodes]]\nid = 2\nname = \"beta\"\ncontrol = \"127.0.0.1:%d\"\n"
            "[[links]]\nkind = \"unicast\"\nbind = \"127.0.0.1\"\nport = %d\npeers = [\"127.0.0.1:%d\"]\n"
            "[orchestrator]\nmin_move_interval_ms = 1000\nmigration_retry_ms = 1000\n"
            "[[resources]]\nname = \"svc\"\nmemory_mib = 64\nhome = \"alpha\"\ndriver = \"ocf:heartbeat:Dummy\"\n",
            node, ctl_alpha, ctl_beta, hb_me, hb_peer);
    fclose(f);
}

/* The child: host "beta", until the parent closes the pipe. */
static int run_beta(const char *dir, const char *config, int stop_fd) {
    me = "beta";
    char rsctmp[512];
    snprintf(rsctmp, sizeof rsctmp, "%s/beta", dir);
    setenv("HA_RSCTMP", rsctmp, 1);
    perfplus_ha_node *beta = NULL;
    perfplus_result rc = perfplus_ha_node_start(config, "beta", NULL, NULL, NULL, &beta);
    CHECK(rc == PERFPLUS_RESULT_OK, "beta started: %s", rc ? last_error() : "ok");
    char byte;
    while (read(stop_fd, &byte, 1) > 0) {
    }
    /* Stopping beta stops svc there; alpha restarts it. */
    if (beta) CHECK(perfplus_ha_node_stop(beta) == PERFPLUS_RESULT_OK, "beta stopped");
    perfplus_ha_node_free(beta);
    close(stop_fd);
    return failures ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s <scratch-dir> <hb-port-alpha> <hb-port-beta> <control-alpha> <control-beta>\n",
                argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *dir = argv[1];
    int hb_a = atoi(argv[2]), hb_b = atoi(argv[3]), ctl_a = atoi(argv[4]), ctl_b = atoi(argv[5]);
    char alpha_cfg[512], beta_cfg[512], rsctmp[512];
    snprintf(alpha_cfg, sizeof alpha_cfg, "%s/alpha.toml", dir);
    snprintf(beta_cfg, sizeof beta_cfg, "%s/beta.toml", dir);
    write_config(alpha_cfg, "alpha", hb_a, hb_b, ctl_a, ctl_b);
    write_config(beta_cfg, "beta", hb_b, hb_a, ctl_a, ctl_b);
    snprintf(rsctmp, sizeof rsctmp, "%s/alpha", dir);
    mkdir(rsctmp, 0700);
    snprintf(rsctmp, sizeof rsctmp, "%s/beta", dir);
    mkdir(rsctmp, 0700);
    perfplus_result rc;

    /* --- NULL and bad arguments: refused, the userdata still released. */
    struct seen unused = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, "", 0};
    perfplus_ha_node *node = NULL;
    rc = perfplus_ha_node_start(NULL, NULL, on_event, &unused, destroy, &node);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT && node == NULL, "NULL config path gives %s", perfplus_result_name(rc));
    CHECK(strcmp(last_error(), "perfplus_ha_node_start: argument `config_path` is NULL") == 0, "last error: %s",
          last_error());
    CHECK(unused.destroyed == 1, "a failed start still releases the userdata");
    rc = perfplus_ha_node_start(alpha_cfg, NULL, NULL, NULL, NULL, NULL);
    CHECK(strcmp(last_error(), "perfplus_ha_node_start: argument `out` is NULL") == 0, "last error: %s",
          last_error());
    char json[64];
    size_t len = 0;
    rc = perfplus_ha_node_status_json(NULL, json, sizeof json, &len);
    CHECK(strcmp(last_error(), "perfplus_ha_node_status_json: argument `node` is NULL") == 0, "last error: %s",
          last_error());
    rc = perfplus_ha_node_standby(NULL, 1, true);
    CHECK(strcmp(last_error(), "perfplus_ha_node_standby: argument `node` is NULL") == 0, "last error: %s",
          last_error());
    rc = perfplus_ha_node_stop(NULL);
    CHECK(strcmp(last_error(), "perfplus_ha_node_stop: argument `node` is NULL") == 0, "last error: %s",
          last_error());
    perfplus_ha_node_free(NULL);
    char missing[512];
    snprintf(missing, sizeof missing, "%s/missing.toml", dir);
    rc = perfplus_ha_node_start(missing, NULL, NULL, NULL, NULL, &node);
    CHECK(rc == PERFPLUS_RESULT_IO && strstr(last_error(), "missing.toml") != NULL,
          "a missing configuration gives %s naming the file", perfplus_result_name(rc));
    rc = perfplus_ha_node_start(alpha_cfg, "gamma", NULL, NULL, NULL, &node);
    CHECK(rc == PERFPLUS_RESULT_UNKNOWN_NODE && strstr(last_error(), "(alpha, beta)") != NULL,
          "an unknown node name gives %s listing the nodes", perfplus_result_name(rc));
    printf("   (%s)\n", last_error());

    /* --- No thread until a node starts (Heartbeat forks after loading plugins). */
    CHECK(thread_count() == 1, "one thread before any node starts (%d)", thread_count());

    /* --- beta: another host, in a child process with its own OCF state. */
    int pipefd[2];
    if (pipe(pipefd) != 0) return 2;
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        close(pipefd[1]);
        exit(run_beta(dir, beta_cfg, pipefd[0]));
    }
    close(pipefd[0]);

    /* --- alpha, here. */
    snprintf(rsctmp, sizeof rsctmp, "%s/alpha", dir);
    setenv("HA_RSCTMP", rsctmp, 1);
    rc = perfplus_ha_node_start(alpha_cfg, NULL, on_event, &seen, destroy, &node);
    CHECK(rc == PERFPLUS_RESULT_OK && node != NULL, "alpha started: %s", rc ? last_error() : "ok");
    if (node == NULL) {
        close(pipefd[1]);
        waitpid(child, NULL, 0);
        printf("FAILED: %d failed\n", failures);
        return 1;
    }
    pthread_mutex_lock(&seen.lock);
    seen.node = node;
    pthread_mutex_unlock(&seen.lock);

    rc = perfplus_ha_node_status_json(node, json, 8, &len);
    CHECK(rc == PERFPLUS_RESULT_OK && len >= 8 && strlen(json) == 7,
          "status JSON in a small buffer is cut, with its whole length (%zu bytes)", len);
    rc = perfplus_ha_node_standby(node, 9, true);
    CHECK(rc == PERFPLUS_RESULT_UNKNOWN_NODE, "standby of node 9 gives %s: %s", perfplus_result_name(rc),
          last_error());

    CHECK(wait_status(node, "\"name\":\"svc\",\"state\":\"running\",\"host\":1,\"to\":null,\"confirmed\":true", 30)
              && wait_status(node, "\"decider\":true", 10),
          "svc runs on alpha, which decides");
    CHECK(read_seen(&seen.cold_start) == 1, "alpha took the cold start of its home resource");
    CHECK(read_seen(&seen.membership) > 0, "membership events carry their fields");
    CHECK(read_seen(&seen.stop_tried) == 1 && seen.stop_rc == PERFPLUS_RESULT_INVALID_STATE,
          "stopping from the callback gives %s", perfplus_result_name(seen.stop_rc));
    printf("   (%s)\n", seen.stop_error);
    CHECK(read_seen(&seen.status_from_callback) == 1, "the callback may read the status");

    /* --- Standby: alpha is evacuated by live migration. */
    rc = perfplus_ha_node_standby(node, 1, true);
    CHECK(rc == PERFPLUS_RESULT_OK, "alpha put in standby");
    CHECK(wait_seen(&seen.evacuation_decided, 30), "alpha decided to migrate svc to beta because alpha is in standby");
    CHECK(wait_seen(&seen.evacuation_done, 30), "the migration finished");
    CHECK(wait_status(node, "\"name\":\"svc\",\"state\":\"running\",\"host\":2", 30), "svc runs on beta");
    rc = perfplus_ha_node_standby(node, 1, false);
    CHECK(rc == PERFPLUS_RESULT_OK, "alpha out of standby");
    CHECK(wait_status(node, "\"standby\":false", 10), "alpha takes resources again");

    /* --- beta leaves (it stops svc first): alpha restarts svc. */
    close(pipefd[1]);
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "beta stopped cleanly (exit status %d)",
          WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    CHECK(wait_seen(&seen.restart_decided, 30), "alpha decided to start svc again on alpha");
    CHECK(wait_status(node, "\"name\":\"svc\",\"state\":\"running\",\"host\":1", 30), "svc runs on alpha again");

    /* --- A clean stop: svc stopped here, userdata released, threads joined. */
    rc = perfplus_ha_node_stop(node);
    CHECK(rc == PERFPLUS_RESULT_OK, "alpha stopped");
    CHECK(read_seen(&seen.destroyed) == 1, "stop released the userdata once");
    CHECK(perfplus_ha_node_stop(node) == PERFPLUS_RESULT_OK, "stop is idempotent");
    rc = perfplus_ha_node_standby(node, 1, true);
    CHECK(rc == PERFPLUS_RESULT_INVALID_STATE, "a stopped node takes no requests: %s", last_error());
    perfplus_ha_node_free(node);
    CHECK(read_seen(&seen.destroyed) == 1, "free did not release it again");
    CHECK(thread_count() == 1, "every thread joined (%d left)", thread_count());
    printf("%s: %d failed\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}
