#!/bin/sh
# Installs the official Cohere JavaScript SDK (npm package cohere-ai), pinned, into a cache
# directory for tests/compat/cohere_client.mjs: $NIMRANK_NPM_DIR, else build/npm.
# Idempotent: does nothing when that version is already there. Prints one line.
# Exit 0: installed; exit 3: "SKIP: ..." (no node/npm, or the registry does not answer);
# exit 1: npm failed although the registry answers (its output goes to stderr).
# 7.x is the line this test targets (8.x is a new major); 7.21.0 needs Node >= 18.
VERSION=7.21.0
ROOT=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
DIR=${NIMRANK_NPM_DIR:-$ROOT/build/npm}
PKG=$DIR/node_modules/cohere-ai/package.json

skip() { echo "SKIP: cohere-ai not installable: $*"; exit 3; }

command -v node >/dev/null 2>&1 || skip "node not found"
command -v npm >/dev/null 2>&1 || skip "npm not found"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 18 ] || skip "node $(node -v) is older than 18"

# Already installed at the pinned version: no registry access at all.
if [ -f "$PKG" ] && [ "$(node -p 'require(process.argv[1]).version' "$PKG")" = "$VERSION" ]
then
    echo "cohere-ai $VERSION already in $DIR"
    exit 0
fi

mkdir -p "$DIR" || exit 1
LOG=$(mktemp) || exit 1
trap 'rm -f "$LOG"' EXIT
# Short fetch timeout and one retry so a black-holed registry fails in about a minute, not
# after npm's default of several minutes per request.
if npm install --prefix "$DIR" --no-audit --no-fund --save-exact --fetch-retries=1 \
    --fetch-timeout=20000 "cohere-ai@$VERSION" >"$LOG" 2>&1
then
    echo "cohere-ai $VERSION installed in $DIR"
    exit 0
fi

# Not installable here when the registry itself does not answer (no network, DNS, a proxy that
# refuses it): then skip. If it answers, the install failure is real (e.g. a bad pin).
if ! npm ping --fetch-retries=0 --fetch-timeout=20000 >/dev/null 2>&1; then
    code=$(sed -En 's/^npm (error|ERR!) code //p' "$LOG" | head -n 1)
    msg=$(sed -En 's/^npm (error|ERR!) (FetchError: )?//p' "$LOG" |
        grep -Ev '^(code|errno|syscall) ' | head -n 1)
    skip "${code:-registry unreachable}: $msg"
fi
cat "$LOG" >&2
echo "setup.sh: npm install cohere-ai@$VERSION failed" >&2
exit 1
