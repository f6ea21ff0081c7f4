#!/usr/bin/env bash
# Open MPI launch agent (mca plm_rsh_agent) for the "nodes" of tests/integration/two_nodes.py:
# network namespaces on this host, each with its own host name. mpirun calls it as it would call
# ssh:
#
#   netns_agent.sh NODE COMMAND...
#
# and it runs COMMAND (its words joined into one shell command line, as sshd does) inside the
# network namespace ${TESSERA_NETNS_PREFIX}NODE, in a new UTS namespace whose host name is NODE.
# `ip netns exec` also mounts /etc/netns/<namespace>/hosts over /etc/hosts, so the nodes resolve
# each other's names. Needs root.
set -euo pipefail

prefix=${TESSERA_NETNS_PREFIX:?set by the test: the common prefix of the node namespaces}
[[ $# -ge 2 ]] || {
  echo "usage: $0 NODE COMMAND..." >&2
  exit 2
}
node=$1
shift
# shellcheck disable=SC2016  # expanded by the inner shell
exec ip netns exec "$prefix$node" unshare --uts -- \
  sh -c 'hostname "$1" && shift && exec sh -c "$*"' netns-agent "$node" "$@"
