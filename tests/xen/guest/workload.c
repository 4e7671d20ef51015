/*
 * The guest's workload in the Xen test bed: writes memory at a steady rate,
 * checks every page it rewrites for corruption, and measures the largest
 * gap in its own progress (the downtime it experienced).
 *
 *   workload BUFFER_MIB PAGES_PER_S
 *
 * Each write fills a whole page with a pattern of (page, lap); before it,
 * the page must still hold the pattern of the previous lap, else it counts
 * as corrupt (a write lost by a migration). Pages are written in order,
 * round the buffer, so the distinct pages dirtied in a window shorter than
 * a lap equal the pages written in it: the dirty rate is PAGES_PER_S.
 *
 * Progress is checked every 10 ms tick on CLOCK_BOOTTIME, which keeps
 * counting while the guest is suspended for migration (CLOCK_MONOTONIC
 * does not). Output, on stdout (the Xen console), one line per second:
 *   PPGUEST t_ms=T writes=W rate=R bad=B maxgap_ms=G
 * where R is pages written per second over the last line's interval and G
 * the largest tick gap in it, and at once for any gap over 100 ms:
 *   PPGUEST t_ms=T gap_ms=G mono_gap_ms=M
 * (M, the same gap on CLOCK_MONOTONIC, shows how much of it was suspend).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096
#define WORDS (PAGE / 8)
#define TICK_NS 10000000LL

static int64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t pattern(uint64_t page, uint64_t lap, uint64_t word)
{
    uint64_t x = (page << 20) ^ (lap << 44) ^ word ^ 0x9e3779b97f4a7c15ULL;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static void fill(uint64_t *p, uint64_t page, uint64_t lap)
{
    p[0] = page;
    p[1] = lap;
    for (uint64_t i = 2; i < WORDS; i++)
        p[i] = pattern(page, lap, i);
}

static int intact(const uint64_t *p, uint64_t page, uint64_t lap)
{
    if (p[0] != page || p[1] != lap)
        return 0;
    for (uint64_t i = 2; i < WORDS; i++)
        if (p[i] != pattern(page, lap, i))
            return 0;
    return 1;
}

int main(int argc, char **argv)
{
    uint64_t mib = argc > 1 ? strtoull(argv[1], 0, 0) : 32;
    uint64_t rate = argc > 2 ? strtoull(argv[2], 0, 0) : 2048;
    uint64_t pages = mib * 1024 * 1024 / PAGE;
    if (pages == 0 || rate == 0) {
        fprintf(stderr, "usage: workload BUFFER_MIB PAGES_PER_S\n");
        return 2;
    }
    uint64_t *buf = mmap(0, pages * PAGE, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (buf == MAP_FAILED) {
        perror("PPGUEST: mmap");
        return 1;
    }
    for (uint64_t p = 0; p < pages; p++)
        fill(buf + p * WORDS, p, 0);
    printf("PPGUEST ready pages=%llu rate=%llu\n", (unsigned long long)pages,
           (unsigned long long)rate);
    fflush(stdout);

    uint64_t next = 0, lap = 1, writes = 0, bad = 0;
    uint64_t line_writes = 0;
    int64_t start = now_ns(CLOCK_BOOTTIME);
    int64_t last = start, last_mono = now_ns(CLOCK_MONOTONIC), line_at = start;
    int64_t max_gap = 0;
    int64_t credit_ns = 0; /* time owed in writes, capped at 100 ms */
    struct timespec tick = {0, TICK_NS};
    for (;;) {
        nanosleep(&tick, 0);
        int64_t t = now_ns(CLOCK_BOOTTIME), mono = now_ns(CLOCK_MONOTONIC);
        int64_t gap = t - last;
        if (gap > max_gap)
            max_gap = gap;
        if (gap > 100000000LL) {
            printf("PPGUEST t_ms=%lld gap_ms=%lld mono_gap_ms=%lld\n",
                   (long long)((t - start) / 1000000), (long long)(gap / 1000000),
                   (long long)((mono - last_mono) / 1000000));
            fflush(stdout);
        }
        last = t;
        last_mono = mono;
        /* Pages due this tick; after a stall, catch up at most 100 ms. */
        credit_ns += gap;
        if (credit_ns > 100000000LL)
            credit_ns = 100000000LL;
        uint64_t due = (uint64_t)credit_ns * rate / 1000000000ULL;
        credit_ns -= (int64_t)(due * 1000000000ULL / rate);
        for (uint64_t i = 0; i < due; i++) {
            uint64_t *p = buf + next * WORDS;
            if (!intact(p, next, lap - 1)) {
                if (bad < 5)
                    printf("PPGUEST corrupt page=%llu lap=%llu\n", (unsigned long long)next,
                           (unsigned long long)lap);
                bad++;
            }
            fill(p, next, lap);
            writes++;
            line_writes++;
            if (++next == pages) {
                next = 0;
                lap++;
            }
        }
        if (t - line_at >= 1000000000LL) {
            printf("PPGUEST t_ms=%lld writes=%llu rate=%llu bad=%llu maxgap_ms=%lld\n",
                   (long long)((t - start) / 1000000), (unsigned long long)writes,
                   (unsigned long long)(line_writes * 1000000000ULL / (uint64_t)(t - line_at)),
                   (unsigned long long)bad, (long long)(max_gap / 1000000));
            fflush(stdout);
            line_at = t;
            line_writes = 0;
            max_gap = 0;
        }
    }
}
