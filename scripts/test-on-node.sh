#!/usr/bin/env bash
# Runs the whole test suite on another Node major version: `npm run test:node -- 24`.
#
# Users run the uploader on Node 20, 22 or 24, and native modules (better-sqlite3) behave
# differently on each; CI runs only the Node it has. This installs node@<major> from npm into
# .tools/node-<major> (gitignored, once), clones the committed tree (HEAD, as CI would) into a
# temporary folder, and runs `npm ci` and `npm test` there with that Node first on the PATH.
# Uncommitted changes are not tested. Exits with npm test's status.
set -uo pipefail
cd "$(dirname "$0")/.."

major="${1:-}"
if ! [[ "$major" =~ ^[0-9]+$ ]]; then
  echo "usage: npm run test:node -- <major version, e.g. 22 or 24>" >&2
  exit 2
fi

tools=".tools/node-$major"
node_bin="$tools/node_modules/node/bin/node"
if [ ! -x "$node_bin" ]; then
  echo "installing node@$major into $tools (once) ..." >&2
  if ! npm install --prefix "$tools" --no-audit --no-fund --loglevel=error "node@$major"; then
    echo "could not install node@$major from npm" >&2
    exit 1
  fi
fi
# The platform package the `node` package installs also holds that Node's headers, for building
# better-sqlite3 12 offline (see npm_config_nodedir below).
platform_bin="$(ls -d "$tools"/node_modules/node/node_modules/node-*/bin 2>/dev/null | head -1)"
bin_dir="$(cd "${platform_bin:-$(dirname "$node_bin")}" && pwd)"
echo "testing $(git rev-parse --short HEAD) on Node $("$bin_dir/node" --version)" >&2

work="$(mktemp -d "${TMPDIR:-/tmp}/iau-node-$major.XXXX")"
trap 'rm -rf "$work"' EXIT
git clone --quiet . "$work/repo"
cd "$work/repo"
export PATH="$bin_dir:$PATH"
# Native builds for this Node, whatever an npmrc says (nodedir=/usr pins another Node's headers).
if [ -d "$bin_dir/../include/node" ]; then export npm_config_nodedir="$(cd "$bin_dir/.." && pwd)"; fi
if ! npm ci --no-audit --no-fund --loglevel=error; then
  echo "npm ci failed on Node $major" >&2
  exit 1
fi
npm test
