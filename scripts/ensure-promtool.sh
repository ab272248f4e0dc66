#!/usr/bin/env bash
# Make sure `promtool` is on PATH: the ops tests check the alert rules and the exposition
# format with it, and a missing promtool must fail the run, never skip it.
# Debian (and Ubuntu) ship it in the `prometheus` package; elsewhere, install Prometheus by hand.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    promtool --version >/dev/null
    exit 0
fi

bash "$(dirname "$0")/apt-install.sh" ensure-promtool prometheus

if ! command -v promtool >/dev/null 2>&1; then
    echo "ensure-promtool: the prometheus package installed but promtool is not on PATH" >&2
    exit 1
fi
promtool --version
