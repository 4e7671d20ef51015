/*
 * Perf+'s stop rule (and the baselines') from C: decisions on hand-made
 * round stats, bad stats refused with the field's name, and a C pre-copy
 * loop (as a toolstack's own, e.g. a libxenguest precopy_policy callback)
 * that feeds a perfplus_round_tracker and lets the policy decide when to
 * stop. No migration, no thread: pure functions of the snapshot.
 *
 * Usage: policy
 * Prints one line per check and exits 0 only if every check passed.
 * Built and run by `cargo test --test c_policy` (shared, static, valgrind).
 */
#include <math.h>
#include <stdio.h>
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
    } while (0)

static const char *last_error(void) {
    static char buf[512];
    size_t len = 0;
    if (perfplus_last_error(buf, sizeof buf, &len) != PERFPLUS_RESULT_OK) strcpy(buf, "?");
    return buf;
}

static const char *action_name(perfplus_precopy_action a) {
    switch (a) {
    case PERFPLUS_PRECOPY_CONTINUE: return "CONTINUE";
    case PERFPLUS_PRECOPY_STOP_AND_COPY: return "STOP_AND_COPY";
    case PERFPLUS_PRECOPY_ABORT: return "ABORT";
    }
    return "?";
}

/* A snapshot after 3 rounds of a 1 GiB guest on a 1 GB/s link. */
static perfplus_round_stats base_stats(void) {
    perfplus_round_stats s;
    memset(&s, 0, sizeof s);
    s.iteration = 3;
    s.elapsed_ms = 1200.0;
    s.memory_bytes = 1ull << 30;
    s.page_size = 4096;
    s.pages_sent_total = 300000;
    s.bytes_sent_total = 1ull << 30;
    s.last_round_ms = 100.0;
    s.dirty_pages = 5000;
    s.deferred_pages = 0;
    s.dirty_rate_pages_per_s = 50000.0;
    s.bandwidth_bytes_per_s = 1e9;
    s.wire_bytes_per_page = 4104.0;
    s.switchover_fixed_ms = 20.0;
    s.round_trip_ms = 0.4;
    s.predicted_downtime_ms = 60.0;
    s.predicted_floor_ms = 20.4;
    s.predicted_hot_ms = 0.0; /* no deferred pages */
    s.best_earlier_prediction_ms = 90.0;
    s.decisions_since_best = 0;
    s.ms_since_best = 0.0;
    s.first_round_ms = 1000.0;
    s.cpu_cap_percent = 100;
    return s;
}

static perfplus_policy *policy(const char *name) {
    perfplus_policy *p = NULL;
    if (perfplus_policy_new(name, &p) != PERFPLUS_RESULT_OK) {
        printf("FAILED: perfplus_policy_new(%s): %s\n", name, last_error());
        failures++;
    }
    return p;
}

static perfplus_decision decide(const perfplus_policy *p, const perfplus_round_stats *s) {
    perfplus_decision d;
    memset(&d, 0, sizeof d);
    if (perfplus_policy_decide(p, s, &d) != PERFPLUS_RESULT_OK) {
        printf("FAILED: perfplus_policy_decide: %s\n", last_error());
        failures++;
    }
    return d;
}

/* A C pre-copy loop on a modelled guest: each round sends the dirty pages
 * over a 1 GB/s link while the guest dirties `rate` pages/s (of `hot`
 * pages rewritten faster than any round). Returns the rounds sent; *out
 * gets the last decision. */
static unsigned run_loop(const perfplus_policy *p, double rate, double hot, perfplus_decision *out) {
    const uint64_t pages = 262144; /* 1 GiB */
    perfplus_round_tracker *t = NULL;
    if (perfplus_round_tracker_new(pages * 4096, 4096, 20.0, 0.2, 16384, &t) != PERFPLUS_RESULT_OK) {
        printf("FAILED: perfplus_round_tracker_new: %s\n", last_error());
        failures++;
        return 0;
    }
    double elapsed_ms = 0.0, dirty = (double)pages;
    unsigned rounds = 0;
    for (;;) {
        perfplus_round_stats s;
        perfplus_round_tracker_snapshot(t, elapsed_ms, (uint64_t)dirty, 0, &s);
        *out = decide(p, &s);
        printf("   round %u: %llu dirty, predicted %.2f ms -> %s (%s)\n", rounds,
               (unsigned long long)s.dirty_pages, s.predicted_downtime_ms, action_name(out->action),
               out->reason);
        if (out->action != PERFPLUS_PRECOPY_CONTINUE || rounds > 100) break;
        double bytes = dirty * 4104.0;
        double ms = bytes / 1e6; /* 1 GB/s */
        double wait_ms = out->min_round_ms > ms ? out->min_round_ms - ms : 0.0;
        double dirtied = rate * (ms + wait_ms) / 1000.0;
        if (dirtied > pages) dirtied = (double)pages;
        if (dirtied < hot) dirtied = hot;
        dirtied = (double)(uint64_t)dirtied; /* a dirty log counts whole pages */
        perfplus_round_tracker_round_done(t, (uint64_t)dirty, (uint64_t)bytes, ms + wait_ms, (uint64_t)dirtied);
        elapsed_ms += ms + wait_ms;
        dirty = dirtied;
        rounds++;
    }
    perfplus_round_tracker_free(t);
    return rounds;
}

int main(void) {
    perfplus_result rc;
    perfplus_decision d;
    perfplus_round_stats s = base_stats();

    /* --- NULL arguments. */
    perfplus_policy *p = NULL;
    rc = perfplus_policy_new(NULL, &p);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT && p == NULL, "NULL name gives %s", perfplus_result_name(rc));
    CHECK(strcmp(last_error(), "perfplus_policy_new: argument `name` is NULL") == 0, "last error: %s",
          last_error());
    rc = perfplus_policy_decide(NULL, &s, &d);
    CHECK(strcmp(last_error(), "perfplus_policy_decide: argument `policy` is NULL") == 0, "last error: %s",
          last_error());
    perfplus_policy *perfplus = policy("perfplus");
    rc = perfplus_policy_decide(perfplus, NULL, &d);
    CHECK(strcmp(last_error(), "perfplus_policy_decide: argument `stats` is NULL") == 0, "last error: %s",
          last_error());
    rc = perfplus_policy_decide(perfplus, &s, NULL);
    CHECK(strcmp(last_error(), "perfplus_policy_decide: argument `out` is NULL") == 0, "last error: %s",
          last_error());
    rc = perfplus_round_tracker_snapshot(NULL, 0.0, 1, 0, &s);
    CHECK(strcmp(last_error(), "perfplus_round_tracker_snapshot: argument `tracker` is NULL") == 0,
          "last error: %s", last_error());
    perfplus_policy_free(NULL);
    perfplus_round_tracker_free(NULL);

    /* --- Bad values: refused by name, nothing written. */
    rc = perfplus_policy_new("perf+", &p);
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT && p == NULL, "an unknown policy is refused: %s", last_error());
    s.elapsed_ms = NAN;
    memset(&d, 0x5a, sizeof d);
    rc = perfplus_policy_decide(perfplus, &s, &d);
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT
              && strcmp(last_error(), "perfplus_policy_decide: `stats->elapsed_ms` is NaN") == 0
              && d.min_round_ms != 0.0 && d.reason[0] == 0x5a,
          "a NaN field is refused by name, nothing written");
    s = base_stats();
    s.cpu_cap_percent = 0;
    rc = perfplus_policy_decide(perfplus, &s, &d);
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT, "a CPU cap of 0 is refused: %s", last_error());
    s = base_stats();

    /* --- Perf+: keeps going while the dirty set shrinks, stops when it does not. */
    d = decide(perfplus, &s);
    CHECK(d.action == PERFPLUS_PRECOPY_CONTINUE && strcmp(d.reason, "the dirty set is still shrinking") == 0,
          "perfplus, prediction 60 ms after 90: %s (%s)", action_name(d.action), d.reason);
    s.predicted_downtime_ms = 85.0;
    s.decisions_since_best = 3;
    s.ms_since_best = 60000.0;
    d = decide(perfplus, &s);
    CHECK(d.action == PERFPLUS_PRECOPY_STOP_AND_COPY && strcmp(d.reason, "the dirty set stopped shrinking") == 0,
          "perfplus, prediction 85 ms after 90, for a while: %s (%s)", action_name(d.action), d.reason);
    rc = perfplus_policy_set_downtime_target_ms(perfplus, 30.0);
    CHECK(rc == PERFPLUS_RESULT_OK, "perfplus takes a 30 ms target");
    s.ms_since_best = 500.0;
    d = decide(perfplus, &s);
    CHECK(d.action == PERFPLUS_PRECOPY_CONTINUE && d.min_round_ms > 0.0
              && strstr(d.reason, "watching for a quieter moment") != NULL,
          "perfplus, stalled above a 30 ms target: %s, rounds of at least %.0f ms (%s)", action_name(d.action),
          d.min_round_ms, d.reason);
    s = base_stats();
    s.iteration = 0;
    s.predicted_downtime_ms = INFINITY;
    s.best_earlier_prediction_ms = INFINITY;
    d = decide(perfplus, &s);
    CHECK(d.action == PERFPLUS_PRECOPY_CONTINUE && strcmp(d.reason, "first full pass") == 0,
          "perfplus before anything was sent: %s (%s)", action_name(d.action), d.reason);

    /* --- The baselines, on the same structs. */
    perfplus_policy *xen = policy("xen-default");
    rc = perfplus_policy_set_downtime_target_ms(xen, 30.0);
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT, "xen-default takes no target: %s", last_error());
    s = base_stats();
    s.iteration = 5;
    d = decide(xen, &s);
    CHECK(d.action == PERFPLUS_PRECOPY_STOP_AND_COPY && strcmp(d.reason, "5 rounds done") == 0,
          "xen-default after 5 rounds: %s (%s)", action_name(d.action), d.reason);
    s.iteration = 2;
    s.dirty_pages = 49;
    d = decide(xen, &s);
    CHECK(d.action == PERFPLUS_PRECOPY_STOP_AND_COPY && strcmp(d.reason, "under 50 dirty pages") == 0,
          "xen-default with 49 dirty pages: %s (%s)", action_name(d.action), d.reason);
    perfplus_policy *qemu = policy("qemu-default");
    s = base_stats();
    s.dirty_pages = 73000; /* 299 MB: fits in 300 ms at 1 GB/s */
    d = decide(qemu, &s);
    CHECK(d.action == PERFPLUS_PRECOPY_STOP_AND_COPY, "qemu-default, 73000 pages at 1 GB/s: %s (%s)",
          action_name(d.action), d.reason);
    s.dirty_pages = 80000;
    s.elapsed_ms = 30 * 60 * 1000.0;
    d = decide(qemu, &s);
    CHECK(d.action == PERFPLUS_PRECOPY_ABORT, "qemu-default after 30 minutes above its limit: %s (%s)",
          action_name(d.action), d.reason);
    perfplus_policy *stop = policy("stop-and-copy");
    d = decide(stop, &s);
    CHECK(d.action == PERFPLUS_PRECOPY_STOP_AND_COPY, "stop-and-copy: %s (%s)", action_name(d.action), d.reason);

    /* --- A C pre-copy loop fed through the tracker. */
    perfplus_policy *fresh = policy("perfplus");
    printf("perfplus, 1 GiB guest dirtying 20000 pages/s, 1 GB/s link:\n");
    unsigned rounds = run_loop(fresh, 20000.0, 0.0, &d);
    CHECK(d.action == PERFPLUS_PRECOPY_STOP_AND_COPY && rounds >= 3 && rounds < 20,
          "perfplus stops once more rounds cannot lower the downtime (%u rounds: %s)", rounds, d.reason);
    printf("xen-default, same guest:\n");
    rounds = run_loop(xen, 20000.0, 0.0, &d);
    CHECK(d.action == PERFPLUS_PRECOPY_STOP_AND_COPY && rounds <= 5,
          "xen-default stops by its rule (%u rounds: %s)", rounds, d.reason);
    printf("perfplus, 1 GiB guest with 8000 pages rewritten faster than any round:\n");
    rounds = run_loop(fresh, 20000.0, 8000.0, &d);
    CHECK(d.action == PERFPLUS_PRECOPY_STOP_AND_COPY && rounds < 20,
          "perfplus stops when the dirty set stops shrinking (%u rounds: %s)", rounds, d.reason);

    perfplus_policy_free(fresh);
    perfplus_policy_free(stop);
    perfplus_policy_free(qemu);
    perfplus_policy_free(xen);
    perfplus_policy_free(perfplus);
    printf("%s: %d failed\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}
