#!/usr/bin/env bash
# Make sure a headless Chromium is on PATH: the dev page's test drives it over the DevTools
# protocol, and a missing browser must fail the run, never skip it.
# Debian ships it as the `chromium` package (Ubuntu's is a snap shim: install it by hand there).
set -euo pipefail

find_browser() {
    for name in chromium chromium-browser google-chrome; do
        if command -v "$name" >/dev/null 2>&1; then
            echo "$name"
            return 0
        fi
    done
    return 1
}

if browser=$(find_browser); then
    "$browser" --headless --version >/dev/null 2>&1 || "$browser" --version >/dev/null
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: no chromium on PATH and apt-get is not available;" \
         "install Chromium and put it on PATH as 'chromium'" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "ensure-chromium: chromium is missing; run as root or install sudo to get it" >&2
    exit 1
fi

echo "ensure-chromium: installing Debian's chromium package" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
# --no-install-recommends: the browser and its libraries, not fonts and extras by the hundred.
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null

if ! browser=$(find_browser); then
    echo "ensure-chromium: the chromium package installed but no chromium is on PATH" >&2
    exit 1
fi
"$browser" --version
