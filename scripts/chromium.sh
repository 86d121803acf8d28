#!/usr/bin/env bash
# Print the path of the distribution's Chromium, installing it first when it is missing
# (as root on Debian/Ubuntu: `apt-get install -y chromium`, as scripts/postgres.sh does for
# PostgreSQL). The report's browser test drives it through Playwright's `executable_path`:
# no browser is ever downloaded by Playwright. Progress and errors go to stderr.
set -euo pipefail

find_chromium() {
    for name in chromium chromium-browser; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if path=$(find_chromium); then
    echo "$path"
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium.sh: error: Chromium not found; install your distribution's chromium" \
         "package (Debian: apt-get install -y chromium)" >&2
    exit 1
fi
echo "chromium.sh: Chromium not found: installing it with apt-get (once)" >&2
apt-get update -q >&2 || { echo "chromium.sh: error: apt-get update failed" >&2; exit 1; }
DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2 \
    || { echo "chromium.sh: error: apt-get install -y chromium failed" >&2; exit 1; }
find_chromium || { echo "chromium.sh: error: chromium installed but not on PATH" >&2; exit 1; }
