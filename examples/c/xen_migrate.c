/*
 * The error paths of perfplus_xen_migrate and its options, on a host
 * without Xen (the normal test run): NULL and invalid arguments are
 * refused with a message naming them, and a migration on a host without a
 * hypervisor fails with PERFPLUS_RESULT_HYPERVISOR_UNAVAILABLE, before any
 * progress event and without touching the report.
 *
 * Prints one line per check and exits 0 only if every check passed.
 * Built and run by `cargo test --test c_programs` (shared, static, valgrind).
 */
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
    if (perfplus_last_error(buf, sizeof buf, &len) != PERFPLUS_RESULT_OK)
        return "(no message)";
    return buf;
}

static int events = 0;

static int on_progress(void *userdata, const perfplus_xen_migration_event *event) {
    (void)event;
    events++;
    return *(int *)userdata;
}

int main(void) {
    perfplus_xen_migrate_options *options = NULL;
    perfplus_result rc;

    rc = perfplus_xen_migrate_options_new(NULL);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "options_new(NULL) gives PERFPLUS_RESULT_NULL_ARGUMENT");
    rc = perfplus_xen_migrate_options_new(&options);
    CHECK(rc == PERFPLUS_RESULT_OK && options != NULL, "options_new gives options");

    rc = perfplus_xen_migrate_options_set_policy(options, "fastest");
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT, "an unknown policy gives PERFPLUS_RESULT_INVALID_ARGUMENT");
    CHECK(strstr(last_error(), "perfplus, xen-default, qemu-default, stop-and-copy") != NULL,
          "its message lists the policies");
    rc = perfplus_xen_migrate_options_set_policy(options, NULL);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "a NULL policy gives PERFPLUS_RESULT_NULL_ARGUMENT");
    rc = perfplus_xen_migrate_options_set_policy(NULL, "perfplus");
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "NULL options give PERFPLUS_RESULT_NULL_ARGUMENT");
    CHECK(strcmp(last_error(), "perfplus_xen_migrate_options_set_policy: argument `options` is NULL") == 0,
          "last error: %s", last_error());
    rc = perfplus_xen_migrate_options_set_receiver(options, "  ");
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT, "an empty receiver gives PERFPLUS_RESULT_INVALID_ARGUMENT");
    rc = perfplus_xen_migrate_options_set_reply_timeout_ms(options, 0);
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT, "a zero timeout gives PERFPLUS_RESULT_INVALID_ARGUMENT");
    rc = perfplus_xen_migrate_options_set_downtime_target_ms(options, -1.0);
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT, "a negative downtime target gives PERFPLUS_RESULT_INVALID_ARGUMENT");
    rc = perfplus_xen_migrate_options_set_downtime_target_ms(options, 500.0);
    CHECK(rc == PERFPLUS_RESULT_OK, "Perf+ takes a downtime target");
    CHECK(perfplus_xen_migrate_options_set_policy(options, "xen-default") == PERFPLUS_RESULT_OK &&
              perfplus_xen_migrate_options_set_downtime_target_ms(options, 500.0) ==
                  PERFPLUS_RESULT_INVALID_ARGUMENT,
          "xen-default has no downtime target");
    CHECK(perfplus_xen_migrate_options_set_policy(options, "xen-default") == PERFPLUS_RESULT_OK &&
              perfplus_xen_migrate_options_set_ssh_command(options, "") == PERFPLUS_RESULT_OK &&
              perfplus_xen_migrate_options_set_stock_receiver(options, true) == PERFPLUS_RESULT_OK &&
              perfplus_xen_migrate_options_set_keep_source(options, true) == PERFPLUS_RESULT_OK &&
              perfplus_xen_migrate_options_set_reply_timeout_ms(options, 5000) == PERFPLUS_RESULT_OK,
          "valid options are taken");

    perfplus_xen_migration_report report;
    memset(&report, 0x5a, sizeof report);
    unsigned char untouched[sizeof report];
    memcpy(untouched, &report, sizeof report);
    int go_on = 0;

    rc = perfplus_xen_migrate(NULL, "host2", options, on_progress, &go_on, &report);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "a NULL domain gives PERFPLUS_RESULT_NULL_ARGUMENT");
    CHECK(strcmp(last_error(), "perfplus_xen_migrate: argument `domain` is NULL") == 0,
          "last error: %s", last_error());
    rc = perfplus_xen_migrate("web1", NULL, options, on_progress, &go_on, &report);
    CHECK(rc == PERFPLUS_RESULT_NULL_ARGUMENT, "a NULL destination gives PERFPLUS_RESULT_NULL_ARGUMENT");
    rc = perfplus_xen_migrate("\xff\xfe", "host2", options, on_progress, &go_on, &report);
    CHECK(rc == PERFPLUS_RESULT_INVALID_UTF8, "a domain that is not UTF-8 gives PERFPLUS_RESULT_INVALID_UTF8");
    rc = perfplus_xen_migrate("", "host2", NULL, NULL, NULL, NULL);
    CHECK(rc == PERFPLUS_RESULT_INVALID_ARGUMENT, "an empty domain gives PERFPLUS_RESULT_INVALID_ARGUMENT");

    rc = perfplus_xen_migrate("web1", "host2", options, on_progress, &go_on, &report);
    CHECK(rc == PERFPLUS_RESULT_HYPERVISOR_UNAVAILABLE,
          "without Xen: PERFPLUS_RESULT_HYPERVISOR_UNAVAILABLE (got %s)", perfplus_result_name(rc));
    CHECK(strcmp(last_error(), "no Xen hypervisor on this host (cannot open /dev/xen/privcmd)") == 0,
          "last error: %s", last_error());
    rc = perfplus_xen_migrate("web1", "host2", NULL, NULL, NULL, NULL);
    CHECK(rc == PERFPLUS_RESULT_HYPERVISOR_UNAVAILABLE, "with default options and no report too");
    CHECK(events == 0, "no progress event before anything started");
    CHECK(memcmp(&report, untouched, sizeof report) == 0, "the report is untouched after failures");

    perfplus_xen_migrate_options_free(options);
    perfplus_xen_migrate_options_free(NULL);
    printf("PASSED: %d failed\n", failures);
    return failures != 0;
}
