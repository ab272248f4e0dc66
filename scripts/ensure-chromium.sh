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

bash "$(dirname "$0")/apt-install.sh" ensure-chromium chromium

if ! browser=$(find_browser); then
    echo "ensure-chromium: the chromium package installed but no chromium is on PATH" >&2
    exit 1
fi
"$browser" --version
