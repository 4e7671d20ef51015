#!/bin/sh
# /init of the test bed's dom0: start the Xen toolstack, run a guest with
# our memory-writing workload, then the checks. Every result is one line
#   PPBED <what> key=value ...
# on the console (the serial log), which run.sh turns into JSON. Ends with
# `PPBED done` and a reboot (QEMU runs with -no-reboot, so it exits).
# Knobs on the dom0 command line: ppbed.guests=pv:pvh (which guests, in
# turn), ppbed.xl_migrations=N (stock xl migrate, per guest, taking turns
# with perfplus),
# ppbed.pp_migrations=N (perfplus migrate to perfplus migrate-receive, per
# guest), ppbed.steps=... (which of logdirty:control:xl:perfplus:stock:abort
# run; default all).
export PATH=/usr/lib/xen-4.17/bin:/usr/bin:/bin
export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
# libxl takes its domid-history lock in /var/run/xen.
mkdir -p /run/xen /run/xenstored /var/lib/xen /var/log/xen/console /var/lib/xenstored /tmp
exec </dev/console >/dev/console 2>&1

GUESTS=pv,pvh
XL_MIGRATIONS=3
PP_MIGRATIONS=3
STEPS=logdirty:control:xl:perfplus:stock:abort
PP_TARGET_MS=1000
for w in $(cat /proc/cmdline); do
    case "$w" in
    ppbed.guests=*) GUESTS=${w#*=} ;;
    ppbed.xl_migrations=*) XL_MIGRATIONS=${w#*=} ;;
    ppbed.pp_migrations=*) PP_MIGRATIONS=${w#*=} ;;
    ppbed.steps=*) STEPS=${w#*=} ;;
    ppbed.workload_mib=*) WORKLOAD_MIB=${w#*=} ;;
    ppbed.workload_rate=*) GUEST_RATE=${w#*=} ;;
    ppbed.pp_target_ms=*) PP_TARGET_MS=${w#*=} ;;
    esac
done
step() { case ":$STEPS:" in *":$1:"*) return 0 ;; esac; return 1; }
GUEST_PAGES=$((WORKLOAD_MIB * 256))
WORKLOAD_MIB=16 # ppguest.mib in the guest config (build-images.sh)
GUEST_RATE=512  # ppguest.rate

say() { echo "PPBED $*"; }
log() { echo "ppbed[$(cut -d' ' -f1 /proc/uptime)s]: $*"; }
uptime_ms() { awk '{printf "%d", $1 * 1000}' /proc/uptime; }
finish() {
    log "guest console (tail):"
    cat /var/log/xen/console/guest-*.log 2>/dev/null | tr -d '\r' | tail -n 8
    xl list
    log "xl dmesg (tail):"
    xl dmesg | tail -n 25
    say "done status=$1"
    sync
    reboot -f
}

# The guest's status lines from every console log (the domain's name, so
# its log file, changes during a migration), in guest time order.
guest_lines() {
    cat /var/log/xen/console/guest-*.log 2>/dev/null | tr -d '\r' |
        grep -a '^PPGUEST t_ms=' | sort -u -t= -k2 -n
}
status_lines() { guest_lines | grep -a ' writes='; }
field() { echo "$1" | sed -n "s/.* $2=\([0-9]*\).*/\1/p"; }
last_status() { status_lines | tail -n 1; }
# Wait up to $2 s for a status line with t_ms > $1; print it.
wait_status_after() {
    i=0
    while [ $i -lt "$2" ]; do
        l=$(status_lines | awk -v t="$1" '{split($2, a, "="); if (a[2] + 0 > t + 0) {print; exit}}')
        [ -n "$l" ] && { echo "$l"; return 0; }
        sleep 1
        i=$((i + 1))
    done
    return 1
}
# Wait up to $2 s until the guest has written $1 pages in all; print the line.
wait_writes() {
    i=0
    while [ $i -lt "$2" ]; do
        l=$(last_status)
        w=$(field "$l" writes)
        [ -n "$w" ] && [ "$w" -ge "$1" ] && { echo "$l"; return 0; }
        sleep 1
        i=$((i + 1))
    done
    return 1
}
# Largest gap the guest saw in (t_ms $1, t_ms $2].
max_gap() {
    guest_lines | awk -v a="$1" -v b="$2" '
        { t = 0; g = 0
          for (i = 2; i <= NF; i++) { split($i, kv, "=")
              if (kv[1] == "t_ms") t = kv[2] + 0
              if (kv[1] == "maxgap_ms" || kv[1] == "gap_ms") if (kv[2] + 0 > g) g = kv[2] + 0 }
          if (t > a + 0 && t <= b + 0 && g > m) m = g }
        END { print m + 0 }'
}

# After a migration (or an attempt): wait for the guest to go on, for one
# whole lap of its buffer to be re-verified, and report what it saw since
# the status line $1. Prints "downtime_ms corrupt_pages" or fails.
after_migration() {
    before=$1
    t0=$(field "$before" t_ms)
    bad0=$(field "$before" bad)
    now=$(field "$(last_status)" t_ms)
    first=$(wait_status_after "$now" 120) || return 1
    w=$(field "$first" writes)
    final=$(wait_writes $((w + GUEST_PAGES + GUEST_RATE)) 120) || return 1
    echo "$(max_gap "$t0" "$(field "$final" t_ms)") $(($(field "$final" bad) - bad0))"
}

log "dom0 up, kernel $(uname -r)"
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs; do
    insmod /lib/modules/$m.ko || log "insmod $m failed"
done
mount -t xenfs xenfs /proc/xen || finish "no-xenfs"
export XENSTORED_ROOTDIR=/var/lib/xenstored
xenstored --pid-file /run/xenstored.pid || finish "no-xenstored"
i=0
while ! xenstore-read -s / >/dev/null 2>&1 && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
xen-init-dom0 || finish "xen-init-dom0-failed"
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console ||
    finish "no-xenconsoled"
say "toolstack up $(xl info | awk '/^xen_version/ {print "xen=" $3} /^virt_caps/ {c = $3; for (i = 4; i <= NF; i++) c = c "," $i; print "caps=" c}' | tr '\n' ' ')"

# One guest of type $GUEST from creation to the end of its checks; returns
# non-zero when the guest cannot go on.
run_guest() {
    log "creating the $GUEST guest"
    rm -f /var/log/xen/console/guest-*.log
    xl create "/root/ppguest-$GUEST.cfg" || { say "guest type=$GUEST created=0"; return 1; }
    first=$(wait_status_after 0 300) || { say "guest type=$GUEST created=1 running=0"; return 1; }
    say "guest running type=$GUEST domid=$(xl domid ppguest) $first"

    # ---- log-dirty through perfplus's Xen backend ----
    if step logdirty; then
    before=$(last_status)
    if xen_logdirty --domain ppguest --rounds 5 --interval-ms 1000 >/tmp/logdirty.txt 2>&1; then
        cat /tmp/logdirty.txt
        after=$(wait_status_after "$(field "$(last_status)" t_ms)" 30)
        # The guest's own rate over the status lines inside the window.
        grate=$(status_lines | awk -v a="$(field "$before" t_ms)" -v b="$(field "$after" t_ms)" '
            { split($2, t, "="); split($4, r, "=")
              if (t[2] + 0 > a + 1000 && t[2] + 0 < b) { s += r[2]; n++ } }
            END { if (n) printf "%d", s / n; else print 0 }')
        json=$(sed -n 's/^PPXEN-LOGDIRTY-JSON //p' /tmp/logdirty.txt)
        hrate=$(echo "$json" | sed -n 's/.*"pages_per_s":\([0-9]*\).*/\1/p')
        rounds=$(echo "$json" | sed -n 's/.*"rounds":\[\([0-9,]*\)\].*/\1/p')
        say "logdirty guest=$GUEST ran=1 guest_pages_per_s=$grate harvested_pages_per_s=$hrate rounds=$rounds"
    else
        cat /tmp/logdirty.txt
        say "logdirty guest=$GUEST ran=0"
    fi
    fi

    # ---- pause, cap, state and (HVM/PVH) page reads, each undone ----
    if step control; then
    read_all=
    [ "$GUEST" = pv ] || read_all=--read-all
    if xen_logdirty --domain ppguest --rounds 0 $read_all --check-control >/tmp/control.txt 2>&1; then
        cat /tmp/control.txt
        say "control guest=$GUEST ran=1 guest_pages_per_s=${grate:-0} $(sed -n 's/^PPXEN-CONTROL //p; s/^PPXEN-LOGDIRTY read //p' /tmp/control.txt | tr '\n' ' ')"
    else
        cat /tmp/control.txt
        say "control guest=$GUEST ran=0"
    fi
    fi

    # ---- side by side on the same guest: stock xl migrate and perfplus,
    # taking turns, so both see the same load on the host ----
    m=1
    while [ "$m" -le "$XL_MIGRATIONS" ] || [ "$m" -le "$PP_MIGRATIONS" ]; do
        if step xl && [ "$m" -le "$XL_MIGRATIONS" ]; then
            migrate_xl "$m" || return 1
        fi
        if step perfplus && [ "$m" -le "$PP_MIGRATIONS" ]; then
            migrate_perfplus "$m" transcoded || return 1
        fi
        m=$((m + 1))
    done
    # perfplus with nothing of perfplus at the destination (PV).
    if step stock && [ "$GUEST" = pv ]; then
        migrate_perfplus "$m" stock || return 1
    fi

    # ---- destinations that fail ----
    if step abort; then
        if [ "$GUEST" = pv ]; then
            # Dies mid-stream: takes 16 MiB and exits, behind perfplus
            # migrate-receive (whose writes then fail, so it exits too).
            abort_perfplus mid-stream "perfplus migrate-receive --receiver /root/dying-receiver.sh" ""
        else
            # Takes the whole stream and never answers: the guest is
            # suspended when perfplus gives up, and must be resumed.
            abort_perfplus silent "perfplus migrate-receive --receiver /root/silent-receiver.sh" "--reply-timeout-s 10"
        fi
    fi
}

# Stock xl migrate number $1 of the guest, measured.
migrate_xl() {
    before=$(last_status)
    log "xl migrate $1"
    u0=$(uptime_ms)
    # xl -s "" runs its host argument as the transport command; countpipe
    # counts the bytes on the wire on the way to the stock receiver.
    rm -f /tmp/xl-wire.txt
    xl migrate -s "" ppguest "countpipe /tmp/xl-wire.txt | xl migrate-receive" >/tmp/xl-migrate.txt 2>&1
    rc=$?
    u1=$(uptime_ms)
    bytes=$(wire_bytes /tmp/xl-wire.txt)
    if [ $rc -ne 0 ]; then
        cat /tmp/xl-migrate.txt
        say "migration guest=$GUEST tool=xl n=$1 ok=0 total_ms=$((u1 - u0)) bytes_on_wire=$bytes"
        return 1
    fi
    if seen=$(after_migration "$before"); then
        set -- "$1" $seen
        say "migration guest=$GUEST tool=xl n=$1 ok=1 total_ms=$((u1 - u0)) bytes_on_wire=$bytes guest_downtime_ms=$2 corrupt_pages=$3 domid=$(xl domid ppguest)"
    else
        say "migration guest=$GUEST tool=xl n=$1 ok=0 total_ms=$((u1 - u0)) bytes_on_wire=$bytes reason=guest-stopped"
        return 1
    fi
}

# Bytes countpipe counted (it writes its file when the stream ends).
wire_bytes() {
    i=0
    while [ ! -s "$1" ] && [ $i -lt 10 ]; do sleep 1; i=$((i + 1)); done
    cat "$1" 2>/dev/null || echo 0
}

# A number from perfplus's JSON report (one field per line).
json_field() { sed -n "s/^ *\"$2\": *\"*\([^,\"]*\)\"*,*$/\1/p" "$1" | head -n 1; }

# perfplus migrate number $1, to perfplus migrate-receive ($2 = transcoded)
# or to the stock xl migrate-receive ($2 = stock), measured like xl's.
migrate_perfplus() {
    before=$(last_status)
    log "perfplus migrate $1 ($2)"
    rm -f /tmp/pp-wire.txt /tmp/pp.json
    if [ "$2" = stock ]; then
        to="countpipe /tmp/pp-wire.txt | xl migrate-receive"
        mode=--stock-receiver
    else
        to="countpipe /tmp/pp-wire.txt | perfplus migrate-receive"
        mode=
    fi
    u0=$(uptime_ms)
    perfplus migrate --backend xen --domain ppguest --ssh-command '' --to "$to" $mode \
        --downtime-target-ms "$PP_TARGET_MS" --json /tmp/pp.json >/tmp/pp-migrate.txt 2>&1
    rc=$?
    u1=$(uptime_ms)
    grep -a -v "^xc: .*%" /tmp/pp-migrate.txt | tail -n 80
    bytes=$(wire_bytes /tmp/pp-wire.txt)
    pp="pp_downtime_ms=$(json_field /tmp/pp.json downtime_ms) pp_total_ms=$(json_field /tmp/pp.json total_ms)"
    pp="$pp rounds=$(json_field /tmp/pp.json rounds) pages_sent=$(json_field /tmp/pp.json pages_sent)"
    pp="$pp zero_pages=$(json_field /tmp/pp.json zero_pages) delta_pages=$(json_field /tmp/pp.json delta_pages)"
    pp="$pp raw_pages=$(json_field /tmp/pp.json raw_pages) final_pages=$(json_field /tmp/pp.json final_pages)"
    pp="$pp setup_ms=$(json_field /tmp/pp.json setup_ms) gfn_scan_ms=$(json_field /tmp/pp.json gfn_scan_ms)"
    pp="$pp destroy_ms=$(json_field /tmp/pp.json destroy_ms)"
    for k in suspend final_pass state receiver rename start; do
        pp="$pp so_${k}_ms=$(json_field /tmp/pp.json switchover_${k}_ms)"
    done
    pp="$pp so_queued_bytes=$(json_field /tmp/pp.json switchover_queued_bytes)"
    pp="$pp drain_before_stop_ms=$(json_field /tmp/pp.json drain_before_stop_ms)"
    pp="$pp queued_bytes_after_rounds=$(json_field /tmp/pp.json queued_bytes_after_rounds)"
    if [ $rc -ne 0 ]; then
        say "migration guest=$GUEST tool=perfplus mode=$2 n=$1 ok=0 rc=$rc total_ms=$((u1 - u0)) bytes_on_wire=$bytes"
        return 1
    fi
    if seen=$(after_migration "$before"); then
        set -- "$1" "$2" $seen
        say "migration guest=$GUEST tool=perfplus mode=$2 n=$1 ok=1 total_ms=$((u1 - u0)) bytes_on_wire=$bytes guest_downtime_ms=$3 corrupt_pages=$4 $pp domid=$(xl domid ppguest)"
    else
        say "migration guest=$GUEST tool=perfplus mode=$2 n=$1 ok=0 total_ms=$((u1 - u0)) bytes_on_wire=$bytes reason=guest-stopped"
        return 1
    fi
}

# A perfplus migration to a destination that fails ($1 names how) at the
# end of transport command $2 (extra options $3): it must fail, and the
# guest go on running at the source, uncorrupted, same domain.
abort_perfplus() {
    before=$(last_status)
    domid=$(xl domid ppguest)
    log "perfplus migrate to a destination that fails ($1)"
    perfplus migrate --backend xen --domain ppguest --ssh-command '' --to "$2" $3 \
        --downtime-target-ms "$PP_TARGET_MS" --json /tmp/pp-abort.json >/tmp/pp-abort.txt 2>&1
    rc=$?
    tail -n 8 /tmp/pp-abort.txt
    if [ $rc -eq 1 ] && seen=$(after_migration "$before") && [ "$(xl domid ppguest)" = "$domid" ]; then
        set -- "$1" $seen
        say "abort guest=$GUEST tool=perfplus how=$1 guest_running=1 rc=$rc guest_downtime_ms=$2 corrupt_pages=$3"
    else
        say "abort guest=$GUEST tool=perfplus how=$1 guest_running=0 rc=$rc"
    fi
}

failed=
for GUEST in $(echo "$GUESTS" | tr ',:' '  '); do
    run_guest || failed="$failed $GUEST"
    xl destroy ppguest 2>/dev/null
    sleep 1
done
[ -z "$failed" ] || finish "failed:$(echo $failed | tr ' ' ',')"
finish ok
