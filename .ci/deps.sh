#!/bin/sh
# Installs the Debian packages named as arguments when any is missing: with apt-get when run
# as root, otherwise prints the exact command and fails.
if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "nimrank: not a Debian system; make sure the equivalents of these are installed: $*" >&2
    exit 0
fi
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "nimrank: installing missing Debian packages:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq $missing >&2 && exit 0
    echo "nimrank: apt-get failed" >&2
    exit 1
fi
echo "nimrank: missing Debian packages. Run as root:" >&2
echo "    apt-get update && apt-get install -y$missing" >&2
exit 1
