"""Checks docker/ without a Docker engine: the files parse and agree with each other and with
the metrics Tessera exports.

    docker_config_test.py --tessera BIN --mpirun MPIRUN --scratch DIR

- compose.yaml: services trainer/prometheus/grafana; build context, Dockerfile, commands and
  bind-mounted files exist; named volumes are declared; the trainer exposes every port that
  prometheus.yml scrapes.
- prometheus.yml: `promtool check config`; honor_labels keeps Tessera's `job` label.
- Grafana: provisioning YAML parses; the dashboard JSON parses, panels have unique ids and fit
  the 24-column grid, every query uses the provisioned datasource, every `tessera_*` name it uses
  is a metric TrainingMetrics exports, and every exported metric appears on the dashboard.
- Dockerfiles: FROM first, COPY sources exist, every ARG is documented in the header, the CPU
  image installs with launch/install_deps.sh.
Exits 77 (CTest: skipped) when PyYAML or promtool is missing.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import harness

SKIP = 77


def load_yaml(yaml, path):
    with open(path) as f:
        try:
            return yaml.safe_load(f)
        except yaml.YAMLError as e:
            harness.fail(f"{path}: {e}")


def exported_metrics(root):
    """Metric names declared in trainer/metrics/training_metrics.cpp."""
    with open(os.path.join(root, "trainer", "metrics", "training_metrics.cpp")) as f:
        names = set(re.findall(r'"(tessera_[a-z0-9_]+)"', f.read()))
    harness.check(len(names) >= 20, f"only {len(names)} metric names found: {names}")
    return names


def check_compose(yaml, docker_dir, prometheus_targets):
    compose = load_yaml(yaml, os.path.join(docker_dir, "compose.yaml"))
    services = compose.get("services", {})
    harness.check({"trainer", "prometheus", "grafana"} <= set(services),
                  f"compose services: {sorted(services)}")
    declared_volumes = set((compose.get("volumes") or {}).keys())
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                path = os.path.normpath(os.path.join(docker_dir, source))
                harness.check(os.path.exists(path), f"{name}: bind mount {source} does not exist")
            else:
                harness.check(source in declared_volumes, f"{name}: volume {source} not declared")
        for dependency in service.get("depends_on", []):
            harness.check(dependency in services, f"{name} depends on unknown {dependency}")

    trainer = services["trainer"]
    context = os.path.normpath(os.path.join(docker_dir, trainer["build"]["context"]))
    dockerfile = os.path.join(context, trainer["build"]["dockerfile"])
    harness.check(os.path.isfile(dockerfile), f"trainer Dockerfile {dockerfile} missing")
    script = os.path.join(context, trainer["command"][0])
    harness.check(os.access(script, os.X_OK), f"trainer command {script} is not executable")
    exposed = {int(p) for p in trainer.get("expose", [])}
    for target in prometheus_targets:
        host, port = target.rsplit(":", 1)
        harness.check(host == "trainer" and int(port) in exposed,
                      f"prometheus scrapes {target}, trainer exposes {sorted(exposed)}")
    base = int(trainer["environment"]["METRICS_PORT"])
    ranks = int(trainer["environment"]["NP"])
    harness.check({f"trainer:{base + r}" for r in range(ranks)} == set(prometheus_targets),
                  f"NP={ranks}, METRICS_PORT={base} vs targets {prometheus_targets}")
    return services


def check_prometheus(yaml, docker_dir, promtool):
    path = os.path.join(docker_dir, "prometheus", "prometheus.yml")
    p = subprocess.run([promtool, "check", "config", path], capture_output=True, text=True,
                       timeout=60)
    harness.check(p.returncode == 0, f"promtool check config {path}:\n{p.stdout}{p.stderr}")
    config = load_yaml(yaml, path)
    jobs = config["scrape_configs"]
    harness.check(all(j.get("honor_labels") for j in jobs),
                  "every scrape job needs honor_labels: true to keep Tessera's job label")
    return [t for j in jobs for c in j["static_configs"] for t in c["targets"]]


def check_grafana(yaml, docker_dir, services, metrics):
    grafana_dir = os.path.join(docker_dir, "grafana")
    datasources = load_yaml(yaml, os.path.join(grafana_dir, "provisioning", "datasources",
                                               "prometheus.yaml"))["datasources"]
    uids = {d["uid"] for d in datasources}
    harness.check(any(d["url"] == "http://prometheus:9090" for d in datasources),
                  f"no datasource points at the compose prometheus: {datasources}")
    providers = load_yaml(yaml, os.path.join(grafana_dir, "provisioning", "dashboards",
                                             "tessera.yaml"))["providers"]
    mounts = dict(reversed(v.split(":")[:2]) for v in services["grafana"]["volumes"])
    for provider in providers:
        mounted_from = mounts.get(provider["options"]["path"])
        harness.check(mounted_from is not None,
                      f"provider path {provider['options']['path']} is not mounted: {mounts}")
    home = services["grafana"]["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        folder, name = os.path.split(home)
        harness.check(folder in mounts and os.path.isfile(
            os.path.join(docker_dir, mounts[folder], name)), f"home dashboard {home} not mounted")

    path = os.path.join(grafana_dir, "dashboards", "tessera.json")
    with open(path) as f:
        try:
            dashboard = json.load(f)
        except json.JSONDecodeError as e:
            harness.fail(f"{path}: {e}")
    harness.check(dashboard.get("uid") and dashboard.get("title"), "dashboard without uid/title")
    ids = [p["id"] for p in dashboard["panels"]]
    harness.check(len(ids) == len(set(ids)), f"duplicate panel ids: {ids}")
    used = set()
    queries = 0
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        harness.check(grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24,
                      f"panel {panel['title']!r} outside the grid: {grid}")
        if panel["type"] == "row":
            continue
        harness.check(panel["datasource"]["uid"] in uids,
                      f"panel {panel['title']!r} uses datasource {panel['datasource']}")
        harness.check(panel.get("targets"), f"panel {panel['title']!r} has no query")
        ref_ids = [t["refId"] for t in panel["targets"]]
        harness.check(len(ref_ids) == len(set(ref_ids)), f"{panel['title']!r}: refIds {ref_ids}")
        for target in panel["targets"]:
            queries += 1
            harness.check(target["datasource"]["uid"] in uids, f"{panel['title']!r}: datasource")
            for name in re.findall(r"tessera_[a-z0-9_]+", target["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                harness.check(base in metrics,
                              f"panel {panel['title']!r} queries {name}, which is not exported")
                used.add(base)
    for variable in dashboard.get("templating", {}).get("list", []):
        harness.check(variable["datasource"]["uid"] in uids, f"variable {variable['name']}")
    unused = sorted(metrics - used)
    harness.check(not unused, f"exported metrics missing from the dashboard: {unused}")
    print(f"dashboard: {len(ids)} panels, {queries} queries, {len(used)} metrics", flush=True)


def check_dockerfiles(root, docker_dir):
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        path = os.path.join(docker_dir, name)
        with open(path) as f:
            text = f.read()
        lines = [l.strip() for l in text.replace("\\\n", " ").splitlines()]
        instructions = [l for l in lines if l and not l.startswith("#")]
        first = instructions[0].split()[0]
        harness.check(first in ("FROM", "ARG"), f"{name}: starts with {first}")
        harness.check(any(l.startswith("FROM ") for l in instructions), f"{name}: no FROM")
        header = "\n".join(l for l in lines if l.startswith("#"))
        for line in instructions:
            word, _, rest = line.partition(" ")
            if word == "COPY":
                sources = [s for s in rest.split()[:-1] if not s.startswith("--")]
                for source in sources:
                    harness.check(source == "." or os.path.exists(os.path.join(root, source)),
                                  f"{name}: COPY source {source} does not exist")
            elif word == "ARG":
                arg = rest.split("=")[0]
                harness.check(arg in header, f"{name}: build argument {arg} is not documented")
        harness.check(os.path.isfile(os.path.join(docker_dir, name + ".dockerignore")),
                      f"{name}: no {name}.dockerignore (host build trees would be sent)")
        print(f"{name}: ok", flush=True)
    with open(os.path.join(docker_dir, "Dockerfile.cpu")) as f:
        harness.check("launch/install_deps.sh" in f.read(),
                      "Dockerfile.cpu must install with launch/install_deps.sh")


def main():
    args = harness.parse_args()
    try:
        import yaml
    except ImportError:
        print("SKIP: PyYAML is not installed (Debian package python3-yaml)", flush=True)
        sys.exit(SKIP)
    promtool = shutil.which("promtool")
    if not promtool:
        print("SKIP: promtool is not installed (Debian package prometheus)", flush=True)
        sys.exit(SKIP)
    root = harness.source_dir()
    docker_dir = os.path.join(root, "docker")
    targets = check_prometheus(yaml, docker_dir, promtool)
    services = check_compose(yaml, docker_dir, targets)
    check_grafana(yaml, docker_dir, services, exported_metrics(root))
    check_dockerfiles(root, docker_dir)
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
