"""A real Prometheus server scrapes a 2-rank job's metrics endpoints (issue 7).

    prometheus_test.py --tessera BIN --mpirun MPIRUN --scratch DIR --command CMD [--ranks N]
                       [--dashboard GRAFANA_JSON]

CMD is the job that serves metrics, one shell-like string with placeholders {port} (base port;
rank r serves on port + r), {mpirun}, {tessera} and {scratch}. It must keep serving until it is
stopped (it is stopped with SIGTERM once the checks pass). The test starts Prometheus on loopback
with a short scrape interval and its own storage directory, then checks through Prometheus' HTTP
API that both targets are up, `tessera_steps_total` rises for every rank and a loss series exists.
With --dashboard, every query of the Grafana dashboard must evaluate without error and return
data (queries filtered with `> 0` may be empty), so the dashboard matches the exported names.
Exits 77 (CTest: skipped) when no prometheus binary is installed.
"""
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import harness

SKIP = 77
SCRAPE_INTERVAL = "500ms"


def free_port_range(count, attempts=50):
    """A base port p such that p .. p+count-1 were all bindable on 127.0.0.1 a moment ago."""
    for _ in range(attempts):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            base = first.getsockname()[1]
            if base + count > 65536:
                continue
            others = []
            try:
                for i in range(1, count):
                    s = socket.socket()
                    others.append(s)
                    s.bind(("127.0.0.1", base + i))
                return base
            except OSError:
                continue
            finally:
                for s in others:
                    s.close()
    harness.fail(f"no {count} consecutive free loopback ports found")


def http_get(url, timeout=5):
    """The body of a 200 answer, or None (refused, timeout, error status)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode()
    except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
        return None


def wait_for(what, deadline, probe, alive=None, interval=0.2):
    """Polls probe() until it returns a truthy value; fails at the deadline or when alive()
    reports that a process we depend on has died (alive returns an error text then)."""
    while True:
        result = probe()
        if result:
            return result
        if alive:
            dead = alive()
            if dead:
                harness.fail(f"while waiting for {what}: {dead}")
        if time.monotonic() > deadline:
            harness.fail(f"timed out waiting for {what}")
        time.sleep(interval)


class Process:
    """A child in its own session (so the whole tree can be signalled), output to a log file."""

    def __init__(self, name, cmd, log_path, env=None):
        self.name, self.cmd, self.log_path = name, cmd, log_path
        self.log = open(log_path, "w")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=full_env)

    def exited(self):
        return self.proc.poll() is not None

    def output(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def death_report(self):
        if not self.exited():
            return None
        return (f"{self.name} exited with code {self.proc.returncode}: {shlex.join(self.cmd)}\n"
                f"--- output ---\n{self.output()[-6000:]}")

    def stop(self, grace=30):
        """SIGTERM to the process group, SIGKILL after `grace` seconds."""
        if not self.exited():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                print(f"{self.name}: no exit {grace}s after SIGTERM; killing", file=sys.stderr)
        # Children that outlived the leader are killed too.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


def metrics_page_is_ours(body, rank):
    return body is not None and "tessera_steps_total{" in body and f'rank="{rank}"' in body


def start_job(args, scratch, ranks, deadline):
    """Starts the job on free ports; retries with other ports when a rank could not bind."""
    for attempt in range(3):
        port = free_port_range(ranks)
        cmd = [part.format(port=port, mpirun=args.mpirun, tessera=args.tessera, scratch=scratch)
               for part in shlex.split(args.command)]
        job = Process("job", cmd, os.path.join(scratch, f"job-{attempt}.log"))
        print(f"job (attempt {attempt + 1}) on ports {port}..{port + ranks - 1}: "
              f"{shlex.join(cmd)}", flush=True)

        def all_serving():
            return all(metrics_page_is_ours(http_get(f"http://127.0.0.1:{port + r}/metrics"), r)
                       for r in range(ranks))

        while not all_serving():
            if job.exited() or "cannot serve" in job.output():
                break
            if time.monotonic() > deadline:
                job.stop()
                harness.fail(f"timed out waiting for {ranks} metrics endpoints from port {port}\n"
                             f"--- job output ---\n{job.output()[-6000:]}")
            time.sleep(0.2)
        else:
            return job, port
        job.stop()
        text = job.output()
        if "cannot serve" not in text and job.proc.returncode != 3:
            harness.fail(f"the job ended before serving metrics (code {job.proc.returncode})\n"
                         f"--- job output ---\n{text[-6000:]}")
        print("a metrics port was taken meanwhile; retrying with other ports", flush=True)
    harness.fail("could not start the job on free ports after 3 attempts")


def start_prometheus(prometheus, scratch, targets, deadline):
    config = os.path.join(scratch, "prometheus.yml")
    target_list = ", ".join(f'"{t}"' for t in targets)
    harness.write(config, f"""global:
  scrape_interval: {SCRAPE_INTERVAL}
  scrape_timeout: {SCRAPE_INTERVAL}
scrape_configs:
  - job_name: tessera
    # Keep the run name the trainer exports in `job` (otherwise renamed to exported_job).
    honor_labels: true
    static_configs:
      - targets: [{target_list}]
""")
    for attempt in range(3):
        port = free_port_range(1)
        storage = os.path.join(scratch, f"tsdb-{attempt}")
        cmd = [prometheus, f"--config.file={config}", f"--storage.tsdb.path={storage}",
               f"--web.listen-address=127.0.0.1:{port}", "--log.level=info"]
        server = Process("prometheus", cmd, os.path.join(scratch, f"prometheus-{attempt}.log"))
        url = f"http://127.0.0.1:{port}"

        def ready():
            return http_get(url + "/-/ready") is not None

        while not ready():
            if server.exited() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        else:
            print(f"prometheus ready at {url}", flush=True)
            return server, url
        server.stop()
        if "address already in use" not in server.output():
            harness.fail(f"prometheus did not become ready\n{server.output()[-6000:]}")
    harness.fail("prometheus: no free web port after 3 attempts")


def query(url, expr):
    """The `data` of an instant query; None when Prometheus does not answer. A query Prometheus
    rejects (bad PromQL) fails the test with its error message."""
    try:
        with urllib.request.urlopen(
                f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=10) as r:
            body = r.read().decode()
    except urllib.error.HTTPError as e:
        body = e.read().decode()
    except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
        return None
    answer = json.loads(body)
    if answer.get("status") != "success":
        harness.fail(f"query {expr!r} failed: {body}")
    return answer["data"]


def by_rank(data):
    """{rank: [(labels, value)]} of an instant vector."""
    out = {}
    for series in data["result"]:
        rank = series["metric"].get("rank")
        out.setdefault(rank, []).append((series["metric"], float(series["value"][1])))
    return out


def dashboard_queries(path):
    """(panel title, PromQL) of every target of a Grafana dashboard, variables substituted."""
    with open(path) as f:
        dashboard = json.load(f)
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "5s").replace("$job", ".+")
            out.append((panel["title"], expr))
    harness.check(out, f"{path}: no queries")
    return out


def check_dashboard(url, path, deadline, alive):
    queries = dashboard_queries(path)
    missing = []

    def all_answer():
        missing.clear()
        for title, expr in queries:
            data = query(url, expr)
            harness.check(data is not None, f"dashboard panel {title!r}: no answer for {expr}")
            if not data["result"] and "> 0" not in expr:
                missing.append(f"{title}: {expr}")
        return not missing

    while not all_answer():
        dead = alive()
        if dead:
            harness.fail(f"while checking the dashboard: {dead}")
        if time.monotonic() > deadline:
            harness.fail("dashboard queries without data:\n  " + "\n  ".join(missing))
        time.sleep(0.5)
    print(f"dashboard: {len(queries)} queries answer with data", flush=True)


def main():
    def extra(ap):
        ap.add_argument("--command", required=True,
                        help="job that serves metrics; placeholders {port} {mpirun} {tessera} "
                             "{scratch}")
        ap.add_argument("--ranks", type=int, default=2)
        ap.add_argument("--prometheus", default=shutil.which("prometheus"))
        ap.add_argument("--dashboard", help="Grafana dashboard JSON whose queries must answer")
        ap.add_argument("--timeout", type=float, default=100,
                        help="deadline in seconds for everything before the final stop")

    args = harness.parse_args(extra)
    if not args.prometheus or not os.access(args.prometheus, os.X_OK):
        print("SKIP: no prometheus binary (Debian package `prometheus`)", flush=True)
        sys.exit(SKIP)
    ranks = [str(r) for r in range(args.ranks)]
    deadline = time.monotonic() + args.timeout
    job = server = None
    try:
        job, port = start_job(args, args.scratch, args.ranks, deadline)
        targets = [f"127.0.0.1:{port + r}" for r in range(args.ranks)]
        server, url = start_prometheus(args.prometheus, args.scratch, targets, deadline)

        # Both targets scraped successfully.
        def all_up():
            data = query(url, 'up{job="tessera"}')
            if data is None:
                return None
            up = {s["metric"]["instance"]: float(s["value"][1]) for s in data["result"]}
            return up if all(up.get(t) == 1.0 for t in targets) else None

        print(f"targets up: {wait_for('both targets up', deadline, all_up, job.death_report)}",
              flush=True)

        # tessera_steps_total rises for every rank: a first sample, then a larger one.
        first = {}

        def steps_rising():
            data = query(url, "tessera_steps_total")
            if data is None:
                return None
            current = {r: v[0][1] for r, v in by_rank(data).items()}
            for r, value in current.items():
                first.setdefault(r, value)
            rising = all(r in current and current[r] > first[r] for r in ranks)
            return current if rising else None

        latest = wait_for("tessera_steps_total to rise on every rank", deadline, steps_rising,
                          job.death_report)
        print(f"tessera_steps_total first {first}, later {latest}", flush=True)

        # The stored series are non-decreasing (a counter), one per rank, with a job label.
        window = query(url, "tessera_steps_total[1m]")
        harness.check(window is not None, "range selector query failed")
        series = {s["metric"]["rank"]: s for s in window["result"]}
        harness.check(sorted(series) == ranks, f"steps series per rank: {sorted(series)}")
        for r, s in series.items():
            values = [float(v) for _, v in s["values"]]
            harness.check(len(values) >= 2 and values == sorted(values) and values[-1] > values[0],
                          f"rank {r}: tessera_steps_total samples not rising: {values}")
        jobs = {s["metric"].get("job") for s in series.values()}
        harness.check(len(jobs) == 1 and None not in jobs and "" not in jobs,
                      f"job labels {jobs}: expected one run name (honor_labels)")

        # A loss series with a term label exists for every rank.
        def losses():
            data = query(url, "tessera_loss")
            if data is None:
                return None
            per_rank = by_rank(data)
            return per_rank if all(r in per_rank for r in ranks) else None

        loss = wait_for("tessera_loss for every rank", deadline, losses, job.death_report)
        for r in ranks:
            terms = {labels.get("term"): value for labels, value in loss[r]}
            harness.check(all(terms) and len(terms) >= 1, f"rank {r}: loss series without term")
            print(f"rank {r} loss terms: {terms}", flush=True)

        # The global step gauge follows training on every rank (the dashboard's step panel).
        def step_positive():
            data = query(url, "tessera_step")
            if data is None:
                return None
            per_rank = {r: v[0][1] for r, v in by_rank(data).items()}
            return per_rank if all(per_rank.get(r, 0) > 0 for r in ranks) else None

        steps = wait_for("tessera_step > 0 on every rank", deadline, step_positive,
                         job.death_report)
        print(f"tessera_step: {steps}", flush=True)

        if args.dashboard:
            check_dashboard(url, args.dashboard, deadline, job.death_report)
        print("PASS", flush=True)
    finally:
        if job:
            job.stop()
        if server:
            server.stop()
        # The logs stay for a post-mortem; the time-series database is of no further use.
        for name in os.listdir(args.scratch):
            if name.startswith("tsdb-"):
                shutil.rmtree(os.path.join(args.scratch, name), ignore_errors=True)


if __name__ == "__main__":
    main()
