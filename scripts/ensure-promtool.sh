#!/usr/bin/env bash
# Make sure `promtool` is on PATH: the ops tests check the alert rules and the exposition
# format with it, and a missing promtool must fail the run, never skip it.
# Debian (and Ubuntu) ship it in the `prometheus` package; elsewhere, install Prometheus by hand.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    promtool --version >/dev/null
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-promtool: promtool is missing and apt-get is not available;" \
         "install Prometheus (it ships promtool) and put promtool on PATH" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "ensure-promtool: promtool is missing; run as root or install sudo to get it" >&2
    exit 1
fi

echo "ensure-promtool: installing Debian's prometheus package for promtool" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
# --no-install-recommends: promtool and the server binary, not the exporters and web assets.
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null

if ! command -v promtool >/dev/null 2>&1; then
    echo "ensure-promtool: the prometheus package installed but promtool is not on PATH" >&2
    exit 1
fi
promtool --version
