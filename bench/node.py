"""Real-node benchmarks (`make bench-node`): prints figures and writes them as JSON.

1. `hack/cluster.sh up` (control plane, real node, CoreDNS Ready) on free ports, from nothing to
   node Ready: warm means the toolchain is built and Debian's packages are installed. Target < 30 s.
2. `kubectl apply` of a 2-replica Deployment of the node's own pause image (already in the node's
   registry, pulled by each pod) to both pods Ready. Target under 15 s.
3. Resident memory (VmRSS) of the node's daemons, the CoreDNS pod and the containerd shims while
   those pods run.
Each figure is the median of --repeat runs of 2 and 3; everything started here is stopped here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]

from testkit import running_cluster  # noqa: E402

TARGETS = {"cluster_up_max_s": 30.0, "deployment_ready_max_s": 15.0}
DAEMONS = ("containerd", "kubelet", "kube-proxy", "kube-router", "registry")


def deployment(name: str) -> str:
    """Pods of the node's pause image (no probe: Ready once running), so no image build is timed."""
    pod_spec = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
        "containers": [
            {"name": "pause", "image": "localhost:5001/consul-microservices/pause:local"}
        ],
    }
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
            },
        }
    )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def daemon_memory(state_dir: Path) -> dict[str, float]:
    """VmRSS of each node daemon (by its pid file) and of the containerd shims, in MiB."""
    memory = {}
    for name in DAEMONS:
        pid = int((state_dir / "pids" / f"{name}.pid").read_text().split()[0])
        memory[name] = round(rss_mib(pid), 1)
    shims = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "containerd-shim" in cmdline and str(state_dir) in cmdline:
            shims.append(rss_mib(int(proc.name)))
        elif cmdline.startswith("/coredns\0"):  # the cluster DNS, a pod of the node
            memory["coredns (pod)"] = round(rss_mib(int(proc.name)), 1)
    memory["containerd-shim (each, median)"] = round(statistics.median(shims), 1) if shims else 0.0
    memory["containerd-shim (count)"] = len(shims)
    return memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="Deployments applied (default 3)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()

    state_dir = Path(tempfile.mkdtemp(prefix="consul-microservices-bench-node-"))
    start = time.monotonic()
    with running_cluster(state_dir, node="real") as kube:
        up_s = time.monotonic() - start
        ready_times = []
        for run in range(args.repeat):
            name = f"bench-{run}"
            start = time.monotonic()
            kube.kubectl("apply", "-f", "-", stdin=deployment(name))
            kube.kubectl("rollout", "status", f"deployment/{name}", "--timeout=120s")
            ready_times.append(time.monotonic() - start)
        memory = daemon_memory(state_dir)
    figures = {
        "cluster_up_s": round(up_s, 1),
        "deployment_ready_s": round(statistics.median(ready_times), 1),
        "deployment_ready_runs_s": [round(t, 1) for t in ready_times],
        "memory_mib": memory,
        "targets": TARGETS,
    }
    print(f"cluster up to node Ready:     {figures['cluster_up_s']:6.1f} s (target < 30)")
    print(f"2-replica Deployment Ready:   {figures['deployment_ready_s']:6.1f} s (target < 15)")
    for name, value in memory.items():
        print(f"  {name:32} {value}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
