/*
 * Live migration from C: a receiver and a sender in one process migrate a
 * small simulated guest over loopback TCP with the real Perf+ engine,
 * printing its progress; the report is checked against the receiver's (the
 * guest memory digests must match). Also: NULL and bad arguments refused
 * with useful messages, no thread before the receiver starts one, a
 * progress callback that cancels (the guest stays at the source, the
 * receiver sees the abort), a receiver that refuses a guest too large for
 * it, and a baseline policy through the same API.
 *
 * Usage: migration <workload.toml> <scale-down> <scratch-dir> [--no-baseline]
 * (the guest is the workload at 1/<scale-down> of its size and rates;
 * --no-baseline skips the xen-default migration, e.g. under valgrind).
 * Prints one line per check and exits 0 only if every check passed.
 * Built and run by `cargo test --test c_migration` (shared, static,
 * valgrind).
 */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static const char *action_name(perfplus_precopy_action a) {
    switch (a) {
    case PERFPLUS_PRECOPY_CONTINUE: return "CONTINUE";
    case PERFPLUS_PRECOPY_STOP_AND_COPY: return "STOP_AND_COPY";
    case PERFPLUS_PRECOPY_ABORT: return "ABORT";
    }
    return "?";
}

/* What the progress callback saw; it runs on the migrating (this) thread. */
struct progress_log {
    int rounds, sent, paused, verified, resumed;
    int out_of_order;           /* a phase after a later one (batches aside) */
    int bad_batch;              /* a batch count beyond its round's */
    perfplus_migration_phase last_phase;
    int cancel_at_batch;        /* 1: ask to cancel at the first batch sent */
    int cancelled;
};

static int32_t on_progress(void *userdata, const perfplus_migration_progress *p) {
    struct progress_log *log = userdata;
    if (p->phase != PERFPLUS_MIGRATION_SENT) {
        if (p->phase < log->last_phase) log->out_of_order++;
        log->last_phase = p->phase;
    }
    switch (p->phase) {
    case PERFPLUS_MIGRATION_SENT:
        /* Many per round: a progress bar's numbers. */
        log->sent++;
        if (p->round_pages_sent == 0 || p->round_pages_sent > p->round_pages) log->bad_batch++;
        if (log->cancel_at_batch && !log->cancelled) {
            printf("progress: cancelling after %llu of %llu pages of round %u\n",
                   (unsigned long long)p->round_pages_sent, (unsigned long long)p->round_pages, p->round);
            log->cancelled++;
            return 1;
        }
        break;
    case PERFPLUS_MIGRATION_ROUND:
        log->rounds++;
        printf("progress: round %u: %llu dirty, %llu deferred, %.0f pages/s dirtied, %.1f MB/s, "
               "predicted downtime %.2f ms -> %s (%s)\n",
               p->round, (unsigned long long)p->dirty_pages, (unsigned long long)p->deferred_pages,
               p->dirty_rate_pages_per_s, p->bandwidth_bytes_per_s / 1e6, p->predicted_downtime_ms,
               action_name(p->decision.action), p->decision.reason);
        break;
    case PERFPLUS_MIGRATION_PAUSED:
        log->paused++;
        printf("progress: paused at %.1f ms, final pass of %llu pages\n", p->elapsed_ms,
               (unsigned long long)p->final_pages);
        break;
    case PERFPLUS_MIGRATION_VERIFIED:
        log->verified++;
        printf("progress: the receiver verified the stream at %.1f ms\n", p->elapsed_ms);
        break;
    case PERFPLUS_MIGRATION_RESUMED:
        log->resumed++;
        printf("progress: the guest runs at the receiver, downtime %.2f ms\n", p->downtime_ms);
        break;
    }
    fflush(stdout);
    return 0;
}

static perfplus_receiver *new_receiver(char *address, size_t size) {
    perfplus_receiver *rx = NULL;
    size_t len = 0;
    if (perfplus_receiver_new("127.0.0.1:0", &rx) != PERFPLUS_RESULT_OK
        || perfplus_receiver_set_io_timeout_ms(rx, 20000) != PERFPLUS_RESULT_OK
        || perfplus_receiver_local_address(rx, address, size, &len) != PERFPLUS_RESULT_OK || len >= size) {
        printf("FAILED: making a receiver: %s\n", last_error());
        failures++;
    }
    return rx;
}

/* perfplus_receiver_accept on a thread of the caller's own. */
struct accept_job {
    perfplus_receiver *rx;
    perfplus_result rc;
    char error[1024];
    perfplus_receiver_report report;
};

static void *accept_thread(void *arg) {
    struct accept_job *job = arg;
    job->rc = perfplus_receiver_accept(job->rx, &job->report);
    if (job->rc != PERFPLUS_RESULT_OK) snprintf(job->error, sizeof job->error, "%s", last_error());
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4 && !(argc == 5 && strcmp(argv[4], "--no-baseline") == 0)) {
        fprintf(stderr, "usage: %s <workload.toml> <scale-down> <scratch-dir> [--no-baseline]\n", argv[0]);
        return 2;
    }
    int baseline = argc == 4;
    const char *workload = argv[1];
    uint32_t scale = (uint32_t)atoi(argv[2]);
    const char *dir = argv[3];
    perfplus_result rc;
    perfplus_migration_report report;
    struct progress_log quiet = {0, 0, 0, 0, 0, 0, 0, PERFPLUS_MIGRATION_ROUND, 0, 0};

    /* --- NULL arguments: refused, with a message naming function and argument. */
    rc = perfplus_migration_config_new(NULL);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "NULL out gives %s", perfplus_result_name(rc));
    CHECK(strcmp(last_error(), "perfplus_migration_config_new: argument `out` is NULL") == 0, "last error: %s",
          last_error());
    perfplus_migration_config *cfg = NULL;
    rc = perfplus_migration_config_new(&cfg);
    CHECK(rc == PERFPLUS_RESULT_OK && cfg != NULL, "a configuration with the defaults");
    rc = perfplus_migration_send_sim(NULL, workload, scale, "127.0.0.1:1", on_progress, &quiet, &report);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "NULL config gives %s", perfplus_result_name(rc));
    CHECK(strcmp(last_error(), "perfplus_migration_send_sim: argument `config` is NULL") == 0, "last error: %s",
          last_error());
    rc = perfplus_migration_send_sim(cfg, NULL, scale, "127.0.0.1:1", on_progress, &quiet, &report);
    CHECK(strcmp(last_error(), "perfplus_migration_send_sim: argument `workload_path` is NULL") == 0,
          "last error: %s", last_error());
    rc = perfplus_migration_send_sim(cfg, workload, scale, NULL, on_progress, &quiet, &report);
    CHECK(strcmp(last_error(), "perfplus_migration_send_sim: argument `to_address` is NULL") == 0,
          "last error: %s", last_error());
    rc = perfplus_migration_send_sim(cfg, workload, scale, "127.0.0.1:1", on_progress, &quiet, NULL);
    CHECK(strcmp(last_error(), "perfplus_migration_send_sim: argument `out` is NULL") == 0, "last error: %s",
          last_error());
    rc = perfplus_migration_config_set_policy(NULL, "perfplus");
    CHECK(strcmp(last_error(), "perfplus_migration_config_set_policy: argument `config` is NULL") == 0,
          "last error: %s", last_error());
    perfplus_receiver *rx = NULL;
    rc = perfplus_receiver_new(NULL, &rx);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT && rx == NULL, "NULL listen address gives %s",
          perfplus_result_name(rc));
    CHECK(strcmp(last_error(), "perfplus_receiver_new: argument `listen_address` is NULL") == 0, "last error: %s",
          last_error());
    char address[64];
    size_t len = 0;
    rc = perfplus_receiver_local_address(NULL, address, sizeof address, &len);
    CHECK(strcmp(last_error(), "perfplus_receiver_local_address: argument `receiver` is NULL") == 0,
          "last error: %s", last_error());
    rc = perfplus_receiver_wait(NULL, NULL);
    CHECK(strcmp(last_error(), "perfplus_receiver_wait: argument `receiver` is NULL") == 0, "last error: %s",
          last_error());
    perfplus_migration_config_free(NULL);
    perfplus_receiver_free(NULL);

    /* --- Bad values: refused with the reason, nothing changed. */
    rc = perfplus_migration_config_set_policy(cfg, "perf+");
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT
              && strstr(last_error(), "unknown policy \"perf+\": expected one of perfplus, xen-default") != NULL,
          "an unknown policy is refused: %s", last_error());
    /* Generous: a debug build under valgrind on a loaded machine is slow,
     * and above its target Perf+ watches the guest for a quieter moment. */
    rc = perfplus_migration_config_set_downtime_target_ms(cfg, 300.0);
    CHECK(rc == PERFPLUS_RESULT_OK, "perfplus takes a 300 ms downtime target");
    rc = perfplus_migration_config_set_policy(cfg, "xen-default");
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT && strstr(last_error(), "xen-default has no downtime target"),
          "xen-default cannot keep the target: %s", last_error());
    rc = perfplus_migration_config_set_io_timeout_ms(cfg, 0);
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT, "a 0 ms timeout is refused: %s", last_error());
    perfplus_migration_config_set_io_timeout_ms(cfg, 20000);
    rc = perfplus_migration_send_sim(cfg, workload, 0, "127.0.0.1:1", NULL, NULL, &report);
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT, "scale_down 0 is refused: %s", last_error());
    char bad[512];
    snprintf(bad, sizeof bad, "%s/bad.toml", dir);
    FILE *f = fopen(bad, "w");
    fputs("name = \"bad\"\nmemory_mib = \"lots\"\n", f);
    fclose(f);
    rc = perfplus_migration_send_sim(cfg, bad, 1, "127.0.0.1:1", NULL, NULL, &report);
    CHECK(rc == PERFPLUS_RESULT_INVALID_CONFIG && strstr(last_error(), "memory_mib") != NULL,
          "a bad workload file gives %s naming the field", perfplus_result_name(rc));
    printf("   (%s)\n", last_error());

    /* --- Nothing listens: the sender says so, nothing was sent. */
    perfplus_receiver *closed = new_receiver(address, sizeof address);
    perfplus_receiver_free(closed); /* its port is free again: nobody listens there */
    rc = perfplus_migration_send_sim(cfg, workload, scale, address, NULL, NULL, &report);
    CHECK(rc == PERFPLUS_RESULT_CONNECTION_LOST && strstr(last_error(), "cannot connect to the receiver"),
          "no receiver gives %s", perfplus_result_name(rc));
    printf("   (%s)\n", last_error());

    /* --- No thread yet: configurations and a bound receiver start none. */
    rx = new_receiver(address, sizeof address);
    CHECK(thread_count() == 1, "one thread before the receiver starts (%d)", thread_count());
    perfplus_receiver_report rreport;
    rc = perfplus_receiver_wait(rx, &rreport);
    CHECK(rc == PERFPLUS_RESULT_INVALID_STATE, "waiting for a receive never started gives %s",
          perfplus_result_name(rc));

    /* --- A live migration over loopback, with progress. */
    rc = perfplus_receiver_start(rx);
    CHECK(rc == PERFPLUS_RESULT_OK && thread_count() == 2, "the receiver runs on its own thread");
    rc = perfplus_receiver_set_max_memory_mib(rx, 8);
    CHECK(rc == PERFPLUS_RESULT_INVALID_STATE, "a started receiver keeps its settings: %s", last_error());
    struct progress_log log = {0, 0, 0, 0, 0, 0, 0, PERFPLUS_MIGRATION_ROUND, 0, 0};
    memset(&report, 0, sizeof report);
    rc = perfplus_migration_send_sim(cfg, workload, scale, address, on_progress, &log, &report);
    CHECK(rc == PERFPLUS_RESULT_OK, "the guest moved: %s", rc ? last_error() : "ok");
    CHECK(log.rounds >= 2 && log.paused == 1 && log.verified == 1 && log.resumed == 1 && log.out_of_order == 0,
          "progress: rounds, then paused, verified, resumed, in order");
    CHECK(log.sent >= 1 && log.bad_batch == 0, "progress: every batch sent, counted within its round");
    printf("   report: policy %s, %u rounds, downtime %.2f ms, total %.1f ms, %llu bytes, "
           "%llu pages (%llu zero, %llu raw, %llu delta), %llu in the final pass, stopped: %s\n",
           report.policy, report.rounds, report.downtime_ms, report.total_ms,
           (unsigned long long)report.bytes_on_wire, (unsigned long long)report.pages_sent,
           (unsigned long long)report.zero_pages, (unsigned long long)report.raw_pages,
           (unsigned long long)report.delta_pages, (unsigned long long)report.final_pages, report.stop_reason);
    CHECK(strcmp(report.policy, "perfplus") == 0 && report.verified && report.converged,
          "the report: perfplus, converged, verified");
    CHECK(report.rounds >= 1 && report.downtime_ms > 0 && report.total_ms >= report.downtime_ms
              && report.pages_sent == report.zero_pages + report.raw_pages + report.delta_pages
              && report.bytes_on_wire > report.raw_pages * 4096,
          "the report's numbers add up");
    memset(&rreport, 0, sizeof rreport);
    rc = perfplus_receiver_wait(rx, &rreport);
    CHECK(rc == PERFPLUS_RESULT_OK, "the receiver received: %s", rc ? last_error() : "ok");
    CHECK(rreport.pages_applied == report.pages_sent && rreport.bytes_received == report.bytes_on_wire,
          "the receiver applied every page record the sender sent (%llu)",
          (unsigned long long)rreport.pages_applied);
    CHECK(report.guest_memory_digest != 0 && rreport.guest_memory_digest == report.guest_memory_digest,
          "the receiver's guest memory equals the source's, page for page");
    rc = perfplus_receiver_wait(rx, &rreport);
    CHECK(rc == PERFPLUS_RESULT_INVALID_STATE, "a receiver takes one migration: %s", last_error());
    perfplus_receiver_free(rx);
    CHECK(thread_count() == 1, "the receiver's thread ended (%d left)", thread_count());

    /* --- A progress callback that cancels (in the middle of a round: at the
     * end of that round): the guest stays at the source. */
    rx = new_receiver(address, sizeof address);
    struct accept_job job;
    memset(&job, 0, sizeof job);
    job.rx = rx;
    pthread_t t;
    pthread_create(&t, NULL, accept_thread, &job);
    struct progress_log cancel = {0, 0, 0, 0, 0, 0, 0, PERFPLUS_MIGRATION_ROUND, 1, 0};
    memset(&report, 0x5a, sizeof report);
    rc = perfplus_migration_send_sim(cfg, workload, scale, address, on_progress, &cancel, &report);
    CHECK(rc == PERFPLUS_RESULT_MIGRATION_ABORTED && cancel.cancelled == 1 && cancel.paused == 0,
          "cancelling gives %s", perfplus_result_name(rc));
    CHECK(strstr(last_error(), "migration aborted during pre-copy round 1; the guest is running at the source: "
                               "cancelled by the caller") != NULL,
          "last error: %s", last_error());
    CHECK(report.rounds == 0x5a5a5a5a, "no report is written on failure");
    pthread_join(t, NULL);
    CHECK(job.rc == PERFPLUS_RESULT_MIGRATION_ABORTED && strstr(job.error, "the sender aborted the migration"),
          "the receiver saw the abort: %s", job.error);
    perfplus_receiver_free(rx);

    /* --- A receiver that refuses a guest larger than it takes (4 MiB). */
    rx = new_receiver(address, sizeof address);
    rc = perfplus_receiver_set_max_memory_mib(rx, 1);
    CHECK(rc == PERFPLUS_RESULT_OK, "a receiver for guests up to 1 MiB");
    perfplus_receiver_start(rx);
    rc = perfplus_migration_send_sim(cfg, workload, 1024, address, NULL, NULL, &report);
    CHECK(rc == PERFPLUS_RESULT_MIGRATION_ABORTED && strstr(last_error(), "this receiver takes at most 1 MiB"),
          "the sender is told why the receiver refused: %s", last_error());
    rc = perfplus_receiver_wait(rx, &rreport);
    CHECK(rc == PERFPLUS_RESULT_MIGRATION_ABORTED, "the receiver refused: %s", last_error());
    perfplus_receiver_free(rx);

    /* --- A baseline through the same API: libxenguest's rule, raw pages only. */
    if (baseline) {
        perfplus_migration_config *xen = NULL;
        perfplus_migration_config_new(&xen);
        rc = perfplus_migration_config_set_policy(xen, "xen-default");
        CHECK(rc == PERFPLUS_RESULT_OK, "xen-default chosen");
        rx = new_receiver(address, sizeof address);
        perfplus_receiver_start(rx);
        struct progress_log xlog = {0, 0, 0, 0, 0, 0, 0, PERFPLUS_MIGRATION_ROUND, 0, 0};
        rc = perfplus_migration_send_sim(xen, workload, scale, address, on_progress, &xlog, &report);
        CHECK(rc == PERFPLUS_RESULT_OK && strcmp(report.policy, "xen-default") == 0 && report.delta_pages == 0
                  && report.zero_pages == 0,
              "xen-default moved the guest with raw pages only: %s", rc ? last_error() : "ok");
        rc = perfplus_receiver_wait(rx, &rreport);
        CHECK(rc == PERFPLUS_RESULT_OK && rreport.guest_memory_digest == report.guest_memory_digest,
              "and the receiver holds the same memory");
        perfplus_receiver_free(rx);
        perfplus_migration_config_free(xen);
    }
    perfplus_migration_config_free(cfg);
    CHECK(thread_count() == 1, "every thread joined (%d left)", thread_count());
    printf("%s: %d failed\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}
