#!/usr/bin/env bash
# Give apt a deb-src entry for bookworm main, so `apt-get source xen` works
# (the hypervisor is rebuilt from it with shadow paging on). Only main: the
# security archive's source files are not served. The mirror is the one the
# machine's own bookworm entry uses. Idempotent; needs root; runs apt-get update.
set -euo pipefail
list=/etc/apt/sources.list.d/perfplus-xen-src.sources
if apt-get source --print-uris xen 2>/dev/null | grep -q '\.dsc'; then
    exit 0
fi
uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ {print u; exit}' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
if [ -z "$uri" ]; then
    uri=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
if [ -z "$uri" ]; then
    echo "add-deb-src: no bookworm entry in the apt sources to take the mirror from" >&2
    exit 1
fi
cat >"$list" <<SRC
Types: deb-src
URIs: $uri
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
apt-get -o DPkg::Lock::Timeout=600 update -qq
