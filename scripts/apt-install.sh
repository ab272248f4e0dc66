#!/usr/bin/env bash
# `apt-install.sh WHO PACKAGE`: install one Debian package for a check that needs a tool
# (`make tools`), as root or through sudo, without recommends. WHO prefixes the messages.
# A missing apt-get or a missing right to use it fails loudly: a test must never skip.
set -euo pipefail

who=$1
package=$2

if ! command -v apt-get >/dev/null 2>&1; then
    echo "$who: $package is needed and apt-get is not available; install it by hand" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "$who: $package is needed; run as root or install sudo to get it" >&2
    exit 1
fi

echo "$who: installing Debian's $package package" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
# --no-install-recommends: the tool and its libraries, not extras by the hundred.
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$package" >/dev/null
