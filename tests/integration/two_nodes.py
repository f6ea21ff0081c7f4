"""Two "nodes" on this host for integration tests: two network namespaces joined by a veth pair,
each with its own address (10.231.0.1 and .2/24, which exist only inside these namespaces) and
its own host name (node-a, node-b, in a UTS namespace per process tree). mpirun runs on node-a
and starts its daemon on node-b through tests/integration/netns_agent.sh (mca plm_rsh_agent),
as it would through ssh; MPI traffic goes over TCP on the veth pair only (btl tcp,self: no shared
memory, not even between the ranks of one node).

    # exits 77 (CTest: skipped) where namespaces are refused
    with TwoNodes("name", args.scratch) as nodes:
        nodes.mpirun(args, 2, [tessera, "info"])   # 2 ranks per node: ranks 0-1 on node-a
        nodes.link_down()                           # a network partition

The namespaces, the processes in them and /etc/netns/<namespace> are removed at the end.
"""
import hashlib
import os
import shutil
import subprocess
import sys

import harness

SKIP = 77
NODES = {"node-a": "10.231.0.1", "node-b": "10.231.0.2"}
SUBNET = "10.231.0.0/24"


def sh(*cmd, check=True, timeout=30):
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        harness.fail(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr}")
    return p


class TwoNodes:
    def __init__(self, name, scratch):
        # Fixed per test and build tree (a rerun removes what a killed run left), distinct
        # between checkouts whose tests run at the same time.
        tag = hashlib.sha1(os.path.abspath(scratch).encode()).hexdigest()[:8]
        self.prefix = f"tsr-{tag}-{name}-"
        self.ns = {n: self.prefix + n for n in NODES}
        self.dev = {"node-a": "veth-a", "node-b": "veth-b"}
        self.agent = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netns_agent.sh")
        self.made = []

    def __enter__(self):
        if os.geteuid() != 0:
            print("SKIP: network namespaces need root", flush=True)
            sys.exit(SKIP)
        if not shutil.which("ip") or not shutil.which("unshare"):
            print("SKIP: needs `ip` (iproute2) and `unshare` (util-linux)", flush=True)
            sys.exit(SKIP)
        self.cleanup()  # what a killed run of the same test left
        for node, ns in self.ns.items():
            p = sh("ip", "netns", "add", ns, check=False)
            if p.returncode != 0:
                self.cleanup()
                print(f"SKIP: this machine refuses network namespaces: {p.stderr.strip()}",
                      flush=True)
                sys.exit(SKIP)
            self.made.append(ns)
            hosts = "127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in NODES.items())
            harness.write(f"/etc/netns/{ns}/hosts", hosts)
        a, b = "node-a", "node-b"
        sh("ip", "link", "add", self.dev[a], "netns", self.ns[a], "type", "veth", "peer", "name",
           self.dev[b], "netns", self.ns[b])
        for node, addr in NODES.items():
            sh("ip", "-n", self.ns[node], "addr", "add", f"{addr}/24", "dev", self.dev[node])
            sh("ip", "-n", self.ns[node], "link", "set", "lo", "up")
            sh("ip", "-n", self.ns[node], "link", "set", self.dev[node], "up")
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def pids(self, node):
        p = sh("ip", "netns", "pids", self.ns[node], check=False)
        return [int(x) for x in p.stdout.split()] if p.returncode == 0 else []

    def cleanup(self):
        for node, ns in self.ns.items():
            if os.path.exists(f"/var/run/netns/{ns}"):
                for pid in self.pids(node):
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass
                sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)

    def on(self, node, cmd):
        """cmd run on `node`: in its network namespace, with its host name."""
        return ["ip", "netns", "exec", self.ns[node], "unshare", "--uts", "--", "sh", "-c",
                'hostname "$1" && shift && exec "$@"', "on-node", node, *cmd]

    def mpirun_cmd(self, args, per_node, cmd, env_names=()):
        """mpirun on node-a over both nodes, `per_node` ranks each (ranks 0..per_node-1 on
        node-a), TCP on the veth pair only."""
        hostfile = harness.write(os.path.join(args.scratch, "hostfile"),
                                 "".join(f"{n} slots={per_node}\n" for n in NODES))
        forward = []
        for name in ("OMP_NUM_THREADS", "TESSERA_TWO_NODES", *env_names):
            forward += ["-x", name]
        return self.on("node-a", [
            args.mpirun, "--hostfile", hostfile, "-np", str(2 * per_node), "--map-by", "slot",
            "--bind-to", "none", "--oversubscribe",
            "--mca", "plm_rsh_agent", self.agent, "--mca", "plm_rsh_no_tree_spawn", "1",
            "--mca", "pml", "ob1", "--mca", "btl", "tcp,self",
            "--mca", "btl_tcp_if_include", SUBNET, "--mca", "oob_tcp_if_include", SUBNET,
            *forward, *cmd])

    def env(self):
        return {"TESSERA_NETNS_PREFIX": self.prefix, "TESSERA_TWO_NODES": self.prefix}

    def mpirun(self, args, per_node, cmd, timeout=300, check_rc=0):
        return harness.run(self.mpirun_cmd(args, per_node, cmd), timeout=timeout,
                           env=self.env(), check_rc=check_rc)

    def link_down(self):
        sh("ip", "-n", self.ns["node-a"], "link", "set", self.dev["node-a"], "down")

    def rank_pids(self, comm="tessera"):
        """{rank: (pid, node)} of the `comm` processes of this test's MPI job on either node."""
        out = {}
        for node in NODES:
            for pid in self.pids(node):
                try:
                    with open(f"/proc/{pid}/comm") as f:
                        if f.read().strip() != comm:
                            continue
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0")
                                   if b"=" in kv)
                except OSError:
                    continue
                if env.get(b"TESSERA_TWO_NODES") == self.prefix.encode() and \
                        b"OMPI_COMM_WORLD_RANK" in env:
                    out[int(env[b"OMPI_COMM_WORLD_RANK"])] = (pid, node)
        return out
