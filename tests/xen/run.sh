#!/usr/bin/env bash
# The Xen test bed: a real Xen 4.17 hypervisor under QEMU (TCG), a Debian
# dom0 running perfplus's own binaries, a guest running our workload.
#
#   tests/xen/run.sh [--json FILE]
#
# Steps: rebuild (or take from the cache) the hypervisor with shadow
# paging; build perfplus's binaries on this host; build the dom0 and guest
# images from Debian packages; boot; read the results from the serial log
# (report.py). Exit 0 only if every check passed.
#
# Environment:
#   PERFPLUS_XEN_CACHE   hypervisor cache (default /var/cache/perfplus-xen)
#   PERFPLUS_XEN_WORK    work folder (default target/xen-bed)
#   PPBED_TIMEOUT_S      limit for the whole boot (default 1200)
#   PPBED_GUESTS         guests to run in turn (default pv,pvh)
#   PPBED_XL_MIGRATIONS  stock xl migrations per guest (default 3, taking turns
#                        with perfplus's, so both see the same load)
#   PPBED_PP_MIGRATIONS  perfplus migrations per guest (default 3)
#   PPBED_STEPS          which checks run (default logdirty:control:xl:perfplus:stock:abort)
#   PPBED_PP_TARGET_MS   Perf+'s downtime target in the bed (default 1000: the
#                        link here moves ~3 MB/s, a few hundred times less than a
#                        LAN, so 100 ms would mean 75 pages and pre-copy would
#                        always wait for a quieter moment that never comes)
#   PPBED_GUEST_MIB      guest memory (default 96)
#   PPBED_WORKLOAD_MIB, PPBED_WORKLOAD_RATE
#                        the guest's workload: buffer rewritten, pages per
#                        second (default 16 and 512: it dirties 2 MB/s, about a
#                        third of what dom0 moves under TCG, so pre-copy converges)
# Needs (as root): qemu-system-x86, libxen-dev, cpio, gcc, python3, and for
# the hypervisor rebuild dpkg-dev, flex, bison and a deb-src entry for
# bookworm main (tests/xen/add-deb-src.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
json=
while [ $# -gt 0 ]; do
    case "$1" in
    --json) json=$(realpath -m "$2"); shift 2 ;;
    *) echo "usage: tests/xen/run.sh [--json FILE]" >&2; exit 2 ;;
    esac
done
work=${PERFPLUS_XEN_WORK:-$root/target/xen-bed}
mkdir -p "$work"
missing=()
for tool in qemu-system-x86_64 apt-get dpkg-deb cpio gcc python3 perl cargo; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
dpkg-query -W -f='${Status}' libxen-dev 2>/dev/null | grep -q "install ok installed" ||
    missing+=(libxen-dev)
if ((${#missing[@]})); then
    echo "tests/xen/run.sh: missing ${missing[*]} (apt-get install qemu-system-x86 libxen-dev cpio)" >&2
    exit 2
fi
t0=$(date +%s)
step() { printf '[xen-bed %4ss] %s\n' "$(($(date +%s) - t0))" "$*"; }

step "hypervisor (shadow paging), cached in ${PERFPLUS_XEN_CACHE:-/var/cache/perfplus-xen}"
xen_image=$("$here/build-hypervisor.sh")
t_hv=$(date +%s)
step "perfplus binaries for dom0"
(cd "$root" && cargo build --quiet --release --example xen_logdirty --example perfplus)
bins=("$root/target/release/examples/xen_logdirty" "$root/target/release/examples/perfplus")
t_bins=$(date +%s)
step "images"
"$here/build-images.sh" "$work" "$xen_image" "${bins[@]}"
t_img=$(date +%s)

step "boot (serial log: $work/serial.log)"
xen_args="console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all dom0_mem=768M,max:768M"
dom0_args="console=hvc0 earlyprintk=xen rdinit=/init loglevel=5"
# No commas: QEMU's multiboot -initrd separates modules with them.
guests=${PPBED_GUESTS:-pv,pvh}
dom0_args+=" ppbed.guests=${guests//,/:}"
dom0_args+=" ppbed.xl_migrations=${PPBED_XL_MIGRATIONS:-3}"
dom0_args+=" ppbed.pp_migrations=${PPBED_PP_MIGRATIONS:-3}"
dom0_args+=" ppbed.steps=${PPBED_STEPS:-logdirty:control:xl:perfplus:stock:abort}"
dom0_args+=" ppbed.workload_mib=${PPBED_WORKLOAD_MIB:-16} ppbed.workload_rate=${PPBED_WORKLOAD_RATE:-512}"
dom0_args+=" ppbed.pp_target_ms=${PPBED_PP_TARGET_MS:-1000}"
# TCG with -cpu qemu64: KVM here cannot run Xen, and SMAP emulation under
# TCG (-cpu max) crashes a PV dom0. -no-reboot: dom0's reboot ends QEMU.
set +e
(cd "$work/out" && timeout --kill-after=10 "${PPBED_TIMEOUT_S:-1200}" qemu-system-x86_64 \
    -machine pc -accel tcg,thread=multi -cpu qemu64 -m 2048 -smp 2 \
    -nographic -monitor none -serial stdio -no-reboot -nic none \
    -kernel xen -append "$xen_args" \
    -initrd "vmlinuz $dom0_args,dom0.cpio.gz" </dev/null 2>&1) |
    perl -MTime::HiRes=time -ne 'BEGIN { $| = 1; $t0 = time } s/\r//g; printf "[%7.2f] %s", time - $t0, $_' \
        >"$work/serial.log"
qemu_rc=${PIPESTATUS[0]}
set -e
t_boot=$(date +%s)
step "qemu exited ($qemu_rc); report"
grep -a -E 'PPBED|PPXEN-LOGDIRTY |ppbed\[' "$work/serial.log" || true
rc=0
steps=${PPBED_STEPS:-logdirty:control:xl:perfplus:stock:abort}
case ":$steps:" in *:perfplus:*) want_pp=${PPBED_PP_MIGRATIONS:-3} ;; *) want_pp=0 ;; esac
python3 "$here/report.py" "$work/serial.log" ${json:+"$json"} pp_migrations="$want_pp" \
    hypervisor_s=$((t_hv - t0)) binaries_s=$((t_bins - t_hv)) images_s=$((t_img - t_bins)) \
    boot_s=$((t_boot - t_img)) total_s=$((t_boot - t0)) qemu_rc="$qemu_rc" || rc=$?
if [ $rc -ne 0 ]; then
    echo "--- serial log tail ---"
    tail -n 60 "$work/serial.log"
fi
step "done"
exit $rc
