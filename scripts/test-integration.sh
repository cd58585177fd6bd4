#!/usr/bin/env bash
# The integration tests, two files at a time: each file starts a private local cloud on free ports in a temporary
# folder, so files share nothing but the machine, and two at a time keep both cores of the CI machine busy where one
# at a time left one mostly idle while a file waited on timers and sockets (measured: docs/architecture.md, "Tests").
# The longest files start first, so that none of them starts late and then runs on alone at the end.
# Files given as arguments run instead of all of them. INTEGRATION_CONCURRENCY=1 runs one file at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
node_bin="${NODE_BIN:-node}"
if [ "$#" -gt 0 ]; then
  files=("$@")
else
  # Longest first (minutes each on 2 cores); the rest in name order.
  first=(
    test/integration/campaign-preparation.test.ts
    test/integration/offer-scale.test.ts
    test/integration/campaigns.test.ts
    test/integration/background-jobs.test.ts
    test/integration/driver-consent.test.ts
    test/integration/cli.test.ts
    test/integration/fleet-scale.test.ts
  )
  files=("${first[@]}")
  for f in test/integration/*.test.ts; do
    case " ${first[*]} " in
      *" $f "*) ;;
      *) files+=("$f") ;;
    esac
  done
fi
# The SDK warns once per process and Lambda worker thread that its 2027 releases need Node.js >= 22: hundreds of
# copies of one known line (the Lambda runtime, Node.js 24, has its own leg: npm run test:node24), which buried the
# one failing test of a CI run. The spec reporter repeats every failure, with its file and error, at the very end.
export AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true
exec "$node_bin" --import tsx --test --test-reporter=spec --test-concurrency="${INTEGRATION_CONCURRENCY:-2}" "${files[@]}"
