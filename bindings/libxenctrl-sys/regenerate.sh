#!/usr/bin/env bash
# Regenerate src/generated/ from the installed Debian libxen-dev headers and
# compare with the checked-in copy.
#
#   regenerate.sh           regenerate into a temporary folder and diff
#                           (exit 1 on any difference)
#   regenerate.sh --write   regenerate in place
#
# Needs: libxen-dev (the version below) and libclang (libclang-dev, which
# brings clang's own stddef.h; libclang1-14 alone fails on 'stddef.h' not
# found). Only for regeneration: normal builds need neither.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# The header package the checked-in bindings were made from.
expected=4.17.7+13-g2445b30a44-0+deb12u1
installed=$(dpkg-query -W -f='${Version}' libxen-dev 2>/dev/null || true)
if [ -z "$installed" ]; then
    echo "regenerate.sh: libxen-dev is not installed (apt-get install libxen-dev libclang-dev)" >&2
    exit 2
fi
if [ "$installed" != "$expected" ]; then
    echo "regenerate.sh: note: libxen-dev $installed installed, bindings are from $expected;" >&2
    echo "  a difference below may come from the headers, not from the generator" >&2
fi
cargo build --quiet --release --manifest-path "$here/regen/Cargo.toml"
gen=$here/regen/target/release/libxenctrl-sys-regen
if [ "${1:-}" = --write ]; then
    "$gen" "$installed" "$here/src/generated"
    echo "regenerated $here/src/generated from libxen-dev $installed"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$gen" "$installed" "$tmp"
cp "$here/src/generated/mod.rs" "$tmp/mod.rs"
if diff -ru "$here/src/generated" "$tmp"; then
    echo "bindings are up to date (libxen-dev $installed)"
else
    echo "bindings differ from a fresh generation: run regenerate.sh --write and review" >&2
    exit 1
fi
