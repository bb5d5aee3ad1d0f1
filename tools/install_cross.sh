#!/usr/bin/env bash
# Installs what the AArch64 export tests need (tests/test_aot_cross.py): Debian's cross compiler, its libc
# and qemu-user. Best effort: as root with apt it installs them; otherwise it says what is missing and the
# tests that need them are skipped (with that reason). Never fails the build.
set -u
missing=()
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
[ -d /usr/aarch64-linux-gnu/lib ] || missing+=(libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "note: AArch64 export tests will be skipped: install ${missing[*]} (apt, as root) to run them" >&2
    exit 0
fi
echo "installing ${missing[*]} (AArch64 export tests)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/tensorforge-cross-tools.log 2>&1 ||
    { apt-get update -q >>/tmp/tensorforge-cross-tools.log 2>&1 &&
      apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/tensorforge-cross-tools.log 2>&1; } ||
    echo "note: installing ${missing[*]} failed (see /tmp/tensorforge-cross-tools.log); AArch64 tests will be skipped" >&2
exit 0
