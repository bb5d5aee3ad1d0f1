#!/usr/bin/env bash
# Installs the headless browser the explorer's acceptance tests drive (tests/test_explore_browser.py):
# Debian's chromium and chromium-driver (selenium itself is a pip dev extra). Best effort: as root with apt
# it installs them; otherwise it says what is missing and the browser tests are skipped (with that reason).
# Never fails the build.
set -u
missing=()
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "note: explorer browser tests will be skipped: install ${missing[*]} (apt, as root) to run them" >&2
    exit 0
fi
echo "installing ${missing[*]} (explorer browser tests)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/tensorforge-browser.log 2>&1 ||
    { apt-get update -q >>/tmp/tensorforge-browser.log 2>&1 &&
      apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/tensorforge-browser.log 2>&1; } ||
    echo "note: installing ${missing[*]} failed (see /tmp/tensorforge-browser.log); explorer browser tests will be skipped" >&2
exit 0
