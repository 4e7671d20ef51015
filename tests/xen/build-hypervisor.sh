#!/usr/bin/env bash
# Rebuild the Xen hypervisor from Debian's source package with
# CONFIG_SHADOW_PAGING=y, and cache it outside the checkout.
#
# Why: PV guests need shadow paging for log-dirty (live migration), and so do
# PVH guests on a CPU without nested paging (QEMU's TCG qemu64). Debian's
# bookworm-security hypervisor is built without it (XSA-495), so the stock
# binary fails `xc_shadow_control(ENABLE_LOGDIRTY)` with EOPNOTSUPP. The
# toolstack (xl, libxenctrl, libxenguest) stays Debian's own: the domctl
# interface is the same across 4.17.x.
#
# Usage: build-hypervisor.sh      prints the path of the cached image
#   PERFPLUS_XEN_CACHE   cache root (default /var/cache/perfplus-xen)
# The image is keyed by the source version: <cache>/<version>/xen-shadow
# (uncompressed multiboot ELF). Needs a deb-src entry for bookworm main
# (tests/xen/add-deb-src.sh), dpkg-dev, gcc, make, flex, bison, python3.
set -euo pipefail
cache=${PERFPLUS_XEN_CACHE:-/var/cache/perfplus-xen}
version=$(apt-get source --print-uris xen 2>/dev/null | awk '/\.dsc/ {print $2; exit}' |
    sed -e 's/^xen_//' -e 's/\.dsc$//')
if [ -z "$version" ]; then
    echo "build-hypervisor: apt has no source for xen; run tests/xen/add-deb-src.sh (as root)" >&2
    exit 1
fi
out=$cache/$version/xen-shadow
if [ -s "$out" ]; then
    echo "$out"
    exit 0
fi
mkdir -p "$cache/$version"
work=$(mktemp -d "$cache/$version/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "build-hypervisor: building Xen $version with shadow paging (about 2-4 min)" >&2
timeout 600 apt-get source --download-only "xen=$version" >download.log 2>&1 ||
    { cat download.log >&2; exit 1; }
dpkg-source -x "xen_$version.dsc" src >extract.log 2>&1 || { cat extract.log >&2; exit 1; }
# Debian's own hypervisor configuration for this version, shadow paging on.
timeout 600 apt-get download "xen-hypervisor-4.17-amd64=$version" >>download.log 2>&1 ||
    { cat download.log >&2; exit 1; }
dpkg-deb --fsys-tarfile xen-hypervisor-4.17-amd64_*.deb |
    tar -xO ./boot/xen-4.17-amd64.config >src/xen/.config
sed -i -e 's/^# CONFIG_SHADOW_PAGING is not set$/CONFIG_SHADOW_PAGING=y/' src/xen/.config
grep -q '^CONFIG_SHADOW_PAGING=y' src/xen/.config || echo 'CONFIG_SHADOW_PAGING=y' >>src/xen/.config
make -C src/xen olddefconfig PYTHON=/usr/bin/python3 >build.log 2>&1 || { tail -50 build.log >&2; exit 1; }
grep -q '^CONFIG_SHADOW_PAGING=y' src/xen/.config ||
    { echo "build-hypervisor: olddefconfig dropped CONFIG_SHADOW_PAGING" >&2; exit 1; }
timeout 1500 nice make -C src/xen -j"$(nproc)" PYTHON=/usr/bin/python3 >>build.log 2>&1 ||
    { tail -50 build.log >&2; exit 1; }
cp src/xen/xen "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
