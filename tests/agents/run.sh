#!/usr/bin/env bash
# Runs the agent suite with no network beyond loopback: in a new network namespace holding
# only `lo` when the kernel allows one (root, or unprivileged user namespaces); otherwise
# the agents still see an unreachable proxy for everything but loopback (agents.test.mjs).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
suite=(node --test --test-reporter=spec "$here/agents.test.mjs")
ns=(unshare -n)
[[ $(id -u) -ne 0 ]] && ns=(unshare -rn)
if command -v ip >/dev/null && "${ns[@]}" true 2>/dev/null; then
  exec "${ns[@]}" sh -c 'ip link set lo up && exec "$@"' sh "${suite[@]}"
fi
echo "agent suite: no network namespace here; only the proxy settings keep agents offline" >&2
exec "${suite[@]}"
