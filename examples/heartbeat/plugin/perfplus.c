/*
 * perfplus: a Heartbeat 3 HBcomm plugin that carries Heartbeat's packets
 * over the perfplus redundant authenticated medium:
 *
 *  - one Heartbeat medium over several UDP links at once (each packet goes
 *    out on every link; the receiver delivers the first copy and drops the
 *    others), so losing a link loses nothing;
 *  - HMAC-SHA256 on every frame under a cluster key, and replayed frames
 *    dropped, below Heartbeat's own authkeys check;
 *  - each link's health reported in Heartbeat's log when it changes.
 *
 * ha.cf (one line; the key file must be mode 600, at least 16 bytes):
 *
 *     perfplus <port> <keyfile> <peer-ip>[:<port>] [<peer-ip>[:<port>] ...]
 *     perfplus 7940 /etc/ha.d/perfplus.key 10.0.1.2 10.0.2.2
 *
 * Install as /usr/lib/heartbeat/plugins/HBcomm/perfplus.so (see the
 * README beside this file).
 *
 * Heartbeat calls mopen() once in its master process and then forks one
 * read and one write child that inherit the medium. perfplus_medium_open
 * only binds a socket and starts no thread, and both children do plain
 * blocking I/O on their own copy, so nothing is lost in the fork.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include <heartbeat.h>
#include <HBcomm.h>

#define PIL_PLUGINTYPE HB_COMM_TYPE
#define PIL_PLUGINTYPE_S HB_COMM_TYPE_S
#define PIL_PLUGIN perfplus
#define PIL_PLUGIN_S "perfplus"
#define PIL_PLUGINLICENSE LICENSE_LGPL
#define PIL_PLUGINLICENSEURL URL_LGPL
#include <pils/plugin.h>

#include "perfplus.h"

#define LOG PluginImports->log
#define MALLOC PluginImports->alloc
#define STRDUP PluginImports->mstrdup
#define FREE PluginImports->mfree

/* How long one wait for a frame lasts before link health is checked. */
#define HEALTH_CHECK_MS 500
#define MAX_LINKS 8

struct pp_private {
    perfplus_medium_config *config; /* until mopen */
    perfplus_medium *medium;        /* from mopen */
    size_t links;
    int link_up[MAX_LINKS]; /* last state logged: -1 unknown, 0 down, 1 up */
};

static int pp_parse(const char *line);
static int pp_open(struct hb_media *mp);
static int pp_close(struct hb_media *mp);
static void *pp_read(struct hb_media *mp, int *lenp);
static int pp_write(struct hb_media *mp, void *msg, int len);
static int pp_mtype(char **buffer);
static int pp_descr(char **buffer);
static int pp_isping(void);

static struct hb_media_fns ppOps = {
    NULL, /* new: unused, parse() takes the whole line */
    pp_parse, pp_open, pp_close, pp_read, pp_write, pp_mtype, pp_descr, pp_isping,
};

PIL_PLUGIN_BOILERPLATE2("1.0", Debug)
static const PILPluginImports *PluginImports;
static PILPlugin *OurPlugin;
static PILInterface *OurInterface;
static struct hb_media_imports *OurImports;
static void *interfprivate;

/* Heartbeat's media table (resolved from the heartbeat executable). */
extern struct hb_media *sysmedia[];
extern int nummedia;

PIL_rc PIL_PLUGIN_INIT(PILPlugin *us, const PILPluginImports *imports);

PIL_rc PIL_PLUGIN_INIT(PILPlugin *us, const PILPluginImports *imports) {
    PluginImports = imports;
    OurPlugin = us;
    imports->register_plugin(us, &OurPIExports);
    return imports->register_interface(us, PIL_PLUGINTYPE_S, PIL_PLUGIN_S, &ppOps, NULL,
                                       &OurInterface, (void *)&OurImports, interfprivate);
}

/* Log the last perfplus failure with some context. */
static void log_failure(int level, const char *what, perfplus_result rc) {
    char message[512];
    size_t len = 0;
    if (perfplus_last_error(message, sizeof message, &len) != PERFPLUS_RESULT_OK) {
        snprintf(message, sizeof message, "(no message)");
    }
    PILCallLog(LOG, level, "perfplus: %s failed: %s (%s)", what, message,
               perfplus_result_name((uint32_t)rc));
}

static int pp_parse(const char *line) {
    char copy[1024];
    char *save = NULL;
    struct pp_private *pp;
    struct hb_media *mp;
    struct utsname un;
    perfplus_result rc;

    if (strlen(line) >= sizeof copy) {
        PILCallLog(LOG, PIL_CRIT, "perfplus: configuration line too long");
        return HA_FAIL;
    }
    strcpy(copy, line);
    char *port = strtok_r(copy, " \t", &save);
    char *keyfile = strtok_r(NULL, " \t", &save);
    if (port == NULL || keyfile == NULL) {
        PILCallLog(LOG, PIL_CRIT,
                   "perfplus: usage: perfplus <port> <keyfile> <peer-ip>[:port] [<peer-ip>...]");
        return HA_FAIL;
    }
    char *end = NULL;
    long portnum = strtol(port, &end, 10);
    if (*end != '\0' || portnum <= 0 || portnum > 65535) {
        PILCallLog(LOG, PIL_CRIT, "perfplus: bad port [%s]", port);
        return HA_FAIL;
    }
    pp = MALLOC(sizeof *pp);
    mp = MALLOC(sizeof *mp);
    if (pp == NULL || mp == NULL) {
        PILCallLog(LOG, PIL_CRIT, "perfplus: out of memory");
        return HA_FAIL;
    }
    memset(pp, 0, sizeof *pp);
    memset(mp, 0, sizeof *mp);
    for (int i = 0; i < MAX_LINKS; i++) pp->link_up[i] = -1;

    if ((rc = perfplus_medium_config_new(&pp->config)) != PERFPLUS_RESULT_OK) {
        log_failure(PIL_CRIT, "configuration", rc);
        return HA_FAIL;
    }
    /* Heartbeat's node names are `uname -n`. */
    if (uname(&un) != 0 ||
        (rc = perfplus_medium_config_set_node(pp->config, un.nodename)) != PERFPLUS_RESULT_OK) {
        log_failure(PIL_CRIT, "node name", rc);
        return HA_FAIL;
    }
    if ((rc = perfplus_medium_config_set_port(pp->config, (uint16_t)portnum)) != PERFPLUS_RESULT_OK) {
        log_failure(PIL_CRIT, "port", rc);
        return HA_FAIL;
    }
    if ((rc = perfplus_medium_config_set_key_file(pp->config, keyfile)) != PERFPLUS_RESULT_OK) {
        log_failure(PIL_CRIT, "key file", rc);
        return HA_FAIL;
    }
    for (char *peer; (peer = strtok_r(NULL, " \t", &save)) != NULL;) {
        if (pp->links == MAX_LINKS) {
            PILCallLog(LOG, PIL_CRIT, "perfplus: at most %d links", MAX_LINKS);
            return HA_FAIL;
        }
        if ((rc = perfplus_medium_config_add_link(pp->config, peer)) != PERFPLUS_RESULT_OK) {
            log_failure(PIL_CRIT, "link", rc);
            return HA_FAIL;
        }
        pp->links++;
    }
    if (pp->links == 0) {
        PILCallLog(LOG, PIL_CRIT, "perfplus: no peer address given");
        return HA_FAIL;
    }
    mp->pd = pp;
    mp->name = STRDUP(PIL_PLUGIN_S);
    sysmedia[nummedia++] = mp;
    PILCallLog(LOG, PIL_INFO, "perfplus: configured %zu link(s) on port %ld (libperfplus %s)",
               pp->links, portnum, perfplus_version());
    return HA_OK;
}

static int pp_mtype(char **buffer) {
    *buffer = STRDUP(PIL_PLUGIN_S);
    return *buffer ? (int)strlen(*buffer) : 0;
}

static int pp_descr(char **buffer) {
    *buffer = STRDUP("perfplus redundant authenticated UDP");
    return *buffer ? (int)strlen(*buffer) : 0;
}

static int pp_isping(void) { return 0; }

static int pp_open(struct hb_media *mp) {
    struct pp_private *pp = mp->pd;
    perfplus_result rc;
    if (pp->medium != NULL) return HA_OK;
    /* Binds the socket only: no thread exists before Heartbeat forks. */
    if ((rc = perfplus_medium_open(pp->config, &pp->medium)) != PERFPLUS_RESULT_OK) {
        log_failure(PIL_CRIT, "open", rc);
        return HA_FAIL;
    }
    for (size_t i = 0; i < pp->links; i++) {
        char name[64];
        size_t len;
        if (perfplus_medium_link_name(pp->medium, i, name, sizeof name, &len) == PERFPLUS_RESULT_OK)
            PILCallLog(LOG, PIL_INFO, "perfplus: link %zu to %s", i, name);
    }
    return HA_OK;
}

static int pp_close(struct hb_media *mp) {
    struct pp_private *pp = mp->pd;
    perfplus_medium_free(pp->medium);
    pp->medium = NULL;
    return HA_OK;
}

/* Log every change of a link's health (in the read child, which sees it). */
static void report_links(struct pp_private *pp) {
    for (size_t i = 0; i < pp->links; i++) {
        bool up = false;
        uint64_t silent_ms = 0;
        char name[64] = "?";
        size_t len;
        if (perfplus_medium_link_status(pp->medium, i, &up, &silent_ms) != PERFPLUS_RESULT_OK)
            continue;
        if ((int)up == pp->link_up[i]) continue;
        int first = pp->link_up[i] < 0;
        pp->link_up[i] = up;
        if (first && !up) continue; /* not heard from yet: no news */
        perfplus_medium_link_name(pp->medium, i, name, sizeof name, &len);
        if (up) {
            PILCallLog(LOG, PIL_INFO, "perfplus: link %zu (%s) up", i, name);
        } else {
            uint64_t auth = 0;
            perfplus_medium_read_counter(pp->medium, PERFPLUS_MEDIUM_COUNTER_AUTH_FAILURES, &auth);
            PILCallLog(LOG, PIL_WARN,
                       "perfplus: link %zu (%s) down: no authentic frame for %llu ms"
                       " (%llu frames failed authentication so far)",
                       i, name, (unsigned long long)silent_ms, (unsigned long long)auth);
        }
    }
}

static char pp_packet[MAXMSG];

static void *pp_read(struct hb_media *mp, int *lenp) {
    struct pp_private *pp = mp->pd;
    for (;;) {
        size_t len = 0;
        perfplus_result rc = perfplus_medium_recv(pp->medium, (uint8_t *)pp_packet,
                                                  sizeof pp_packet - 1, &len, HEALTH_CHECK_MS);
        report_links(pp);
        switch (rc) {
        case PERFPLUS_RESULT_OK:
            pp_packet[len] = '\0';
            *lenp = (int)len + 1; /* Heartbeat counts the NUL */
            return pp_packet;
        case PERFPLUS_RESULT_TIMEOUT:
            continue; /* a quiet medium is not an error */
        case PERFPLUS_RESULT_INTERRUPTED:
            return NULL; /* let Heartbeat handle the signal, then read again */
        case PERFPLUS_RESULT_BUFFER_TOO_SMALL:
            log_failure(PIL_WARN, "receive", rc);
            continue;
        default:
            log_failure(PIL_CRIT, "receive", rc);
            return NULL;
        }
    }
}

static int pp_write(struct hb_media *mp, void *msg, int len) {
    struct pp_private *pp = mp->pd;
    perfplus_result rc;
    if (len < 0) return HA_FAIL;
    rc = perfplus_medium_send(pp->medium, msg, (size_t)len);
    if (rc != PERFPLUS_RESULT_OK) {
        if (!mp->suppresserrs) log_failure(PIL_CRIT, "send", rc);
        return HA_FAIL;
    }
    return HA_OK;
}
