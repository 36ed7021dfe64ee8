#!/usr/bin/env bash
# install-chromium.sh installs Debian's chromium, which the dashboard's
# browser tests (controlplane/dashboard, test/browser) drive headless, and
# prints its path. It does nothing, and prints only the path, when chromium
# is already there.
#
# Debian's package, not a download of Chrome for Testing: the test machine
# and the cluster reach no host on the internet, only the distribution's
# mirror.
set -euo pipefail

find_chromium() {
  command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null || true
}

path=$(find_chromium)
if [ -z "$path" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-chromium: chromium is missing; install as root: apt-get install chromium" >&2
    exit 1
  fi
  echo "install-chromium: installing chromium from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }; then
    echo "install-chromium: apt-get could not install chromium; the dashboard's browser tests need it (see the apt-get output above)" >&2
    exit 1
  fi
  path=$(find_chromium)
  if [ -z "$path" ]; then
    echo "install-chromium: apt-get installed chromium but no chromium binary is on PATH ($PATH)" >&2
    exit 1
  fi
fi
echo "$path"
