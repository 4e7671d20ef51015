#!/usr/bin/env bash
# Build what the Xen test bed boots: the hypervisor image, the Debian
# kernel (dom0 and guest), and the dom0 initramfs holding the Debian Xen
# 4.17 toolstack, perfplus's own binaries and the guest's kernel and
# initramfs (busybox + our workload).
#
# Usage: build-images.sh WORK XEN_IMAGE PERFPLUS_BIN...
#   WORK          output folder; writes WORK/out/{xen,vmlinuz,dom0.cpio.gz}
#   XEN_IMAGE     the hypervisor (build-hypervisor.sh)
#   PERFPLUS_BIN  binaries built on this host, copied to dom0's /usr/bin
#                 with their shared-library closure
# Packages come from apt (`apt-get download`, unpacked with dpkg-deb, never
# installed on the host); the toolstack is the version apt offers, the one
# libxen-dev on the host comes from, so perfplus's binaries load the same
# libraries they were checked against.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$1
xen_image=$2
shift 2
mkdir -p "$work"
work=$(cd "$work" && pwd)
t0=$(date +%s)

kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
kver=${kpkg#linux-image-}
xenver=$(dpkg-query -W -f='${Version}' libxen-dev 2>/dev/null || true)
pin=${xenver:+=$xenver}
packages=(
    "xen-utils-4.17$pin" "xen-utils-common$pin" "xenstore-utils$pin"
    "libxenmisc4.17$pin" "libxencall1$pin" "libxendevicemodel1$pin" "libxenevtchn1$pin"
    "libxenforeignmemory1$pin" "libxengnttab1$pin" "libxenhypfs1$pin" "libxenstore4$pin"
    "libxentoollog1$pin" "libxentoolcore1$pin"
    "$kpkg" busybox-static libyajl2
)
rm -rf "$work/debs" "$work/stage" "$work/dom0" "$work/guest" "$work/out"
mkdir -p "$work/debs" "$work/stage" "$work/out"
(cd "$work/debs" && timeout 600 apt-get download "${packages[@]}" >download.log 2>&1) ||
    { cat "$work/debs/download.log" >&2; echo "build-images: apt-get download failed" >&2; exit 1; }
S=$work/stage
for deb in "$work"/debs/*.deb; do
    case "$(basename "$deb")" in
    linux-image-*)
        # Only the kernel and the Xen modules dom0 needs (the rest is 400 MB).
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$S" --wildcards \
            "./boot/vmlinuz-$kver" "./lib/modules/$kver/kernel/drivers/xen/*"
        ;;
    *) dpkg-deb -x "$deb" "$S" ;;
    esac
done
cp "$xen_image" "$work/out/xen"
cp "$S/boot/vmlinuz-$kver" "$work/out/vmlinuz"

# ---- guest initramfs: busybox + our workload ----
G=$work/guest
mkdir -p "$G"/{bin,dev,proc,sys,tmp}
cp "$S/bin/busybox" "$G/bin/busybox"
for a in sh mount cat echo uname; do ln -s busybox "$G/bin/$a"; done
gcc -O2 -Wall -static -o "$G/bin/workload" "$here/guest/workload.c"
cp "$here/guest/init" "$G/init"
(cd "$G" && find . | cpio -o -H newc --quiet | gzip -9) >"$work/guest.cpio.gz"

# ---- dom0 initramfs ----
D=$work/dom0
mkdir -p "$D"/{bin,dev,proc,sys,tmp,root,run,etc/xen,lib64,lib/modules}
mkdir -p "$D"/var/{lib/xen,log/xen} "$D/usr/lib/xen-4.17/bin" "$D/usr/bin"
mkdir -p "$D/usr/lib/x86_64-linux-gnu" "$D/lib/x86_64-linux-gnu"
ln -s ../run "$D/var/run"
cp "$S/bin/busybox" "$D/bin/busybox"
"$D/bin/busybox" --list | while read -r a; do [ -e "$D/bin/$a" ] || ln -s busybox "$D/bin/$a"; done
# libxl looks for libxl-save-helper in the Debian location.
for b in xl xenstored xenconsoled xen-init-dom0 libxl-save-helper; do
    cp "$S/usr/lib/xen-4.17/bin/$b" "$D/usr/lib/xen-4.17/bin/"
done
for b in xenstore xenstore-read xenstore-write xenstore-ls xenstore-list; do
    [ -e "$S/usr/bin/$b" ] && cp -P "$S/usr/bin/$b" "$D/usr/bin/"
done
cp -a "$S"/usr/lib/x86_64-linux-gnu/*.so* "$D/usr/lib/x86_64-linux-gnu/"
cp "$S/etc/xen/xl.conf" "$D/etc/xen/"
for bin in "$@"; do
    # Without debug information: the initramfs stays small.
    strip --strip-debug -o "$D/usr/bin/$(basename "$bin")" "$bin" 2>/dev/null || cp "$bin" "$D/usr/bin/"
done
# Shared-library closure of everything, from this host (same Debian release).
for f in "$D"/usr/lib/xen-4.17/bin/* "$D"/usr/bin/* "$D"/usr/lib/x86_64-linux-gnu/*.so*; do
    [ -f "$f" ] && [ ! -L "$f" ] || continue
    LD_LIBRARY_PATH="$S/usr/lib/x86_64-linux-gnu" ldd "$f" 2>/dev/null |
        awk '/=> \// {print $3}' || true
done | sort -u | while read -r lib; do
    case "$lib" in "$S"/*) continue ;; esac
    cp -L "$lib" "$D/lib/x86_64-linux-gnu/"
done
cp -L /lib64/ld-linux-x86-64.so.2 "$D/lib64/"
# glibc dlopen()s libgcc_s for pthread_cancel: xl's daemonised child aborts
# without it.
cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$D/lib/x86_64-linux-gnu/"
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs; do
    find "$S/lib/modules/$kver" -name "$m.ko" -exec cp {} "$D/lib/modules/" \;
done
# The guest: same kernel, our initramfs.
cp "$S/boot/vmlinuz-$kver" "$D/root/vmlinuz"
cp "$work/guest.cpio.gz" "$D/root/guest.cpio.gz"
for type in pv pvh; do
    cat >"$D/root/ppguest-$type.cfg" <<CFG
name = "ppguest"
type = "$type"
memory = ${PPBED_GUEST_MIB:-96}
vcpus = 1
kernel = "/root/vmlinuz"
ramdisk = "/root/guest.cpio.gz"
extra = "console=hvc0 rdinit=/init loglevel=4 ppguest.mib=${PPBED_WORKLOAD_MIB:-16} ppguest.rate=${PPBED_WORKLOAD_RATE:-512}"
on_crash = "preserve"
CFG
done
gcc -O2 -Wall -static -o "$D/usr/bin/countpipe" "$here/dom0/countpipe.c"
# Destinations that fail, for the abort checks: one dies mid-stream, one
# takes the whole stream and never answers.
cat >"$D/root/dying-receiver.sh" <<'SH'
#!/bin/sh
echo 'xl migration receiver ready, send binary domain data.'
exec head -c 16777216 >/dev/null
SH
cat >"$D/root/silent-receiver.sh" <<'SH'
#!/bin/sh
echo 'xl migration receiver ready, send binary domain data.'
exec cat >/dev/null
SH
chmod +x "$D/root/dying-receiver.sh" "$D/root/silent-receiver.sh"
cp "$here/dom0/init.sh" "$D/init"
chmod +x "$D/init"
(cd "$D" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/out/dom0.cpio.gz"
echo "build-images: done in $(($(date +%s) - t0))s ($(du -h "$work/out/dom0.cpio.gz" | cut -f1) dom0 initramfs)" >&2
