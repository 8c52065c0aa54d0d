#!/usr/bin/python3
"""Checks the deployment files with the real tools: `kubectl kustomize` renders each Kubernetes overlay and every
workload in it has gRPC probes, resources, a non-root read-only security context and a grace period above its drain
deadline; `docker-compose config -q` accepts docker-compose.yml; `promtool` accepts the Prometheus configs and rules
and passes the alert unit tests; the dashboard's queries parse and use only the suite's metrics and rules."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_queries  # noqa: E402

SOURCE_DIR = deploy_queries.SOURCE_DIR
K8S = os.path.join(SOURCE_DIR, "deploy", "k8s")
PROMETHEUS = os.path.join(SOURCE_DIR, "deploy", "prometheus")
OVERLAYS = sorted(os.listdir(os.path.join(K8S, "overlays")))
SERVICES = {  # name -> (gRPC service, gRPC port, metrics port)
    "orchestrator": ("rlhf.v1.OrchestratorService", 50050, 9460),
    "policy-generation": ("rlhf.v1.PolicyGenerationService", 50051, 9461),
    "reference-logprob": ("rlhf.v1.ReferenceLogprobService", 50052, 9462),
    "reward-scoring": ("rlhf.v1.RewardScoringService", 50053, 9463),
    "ppo-trainer": ("rlhf.v1.PpoTrainerService", 50054, 9464),
    "labeling": ("rlhf.v1.LabelingService", 50055, 9465),
}
# The server runtime's defaults (common/runtime/server_main.cc) when a flag is not given.
DEFAULT_DRAIN_DELAY_S = 0
DEFAULT_SHUTDOWN_DEADLINE_S = 30


def tool(name):
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed (tools/setup.sh installs tools/packages/test.txt)")
    return path


def run(args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def seconds(duration):
    """absl duration flag value (e.g. 30s, 1m30s, 500ms) -> seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|ns|m|s)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise AssertionError(f"cannot read duration {duration!r}")
    return sum(float(n) * units[u] for n, u in parts)


def flag(args, name):
    for arg in args:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


class KustomizeOverlays(unittest.TestCase):
    rendered = {}

    @classmethod
    def setUpClass(cls):
        kubectl = tool("kubectl")
        for overlay in OVERLAYS:
            out = run([kubectl, "kustomize", os.path.join(K8S, "overlays", overlay)])
            cls.rendered[overlay] = [doc for doc in yaml.safe_load_all(out) if doc]

    def objects(self, overlay, kind):
        return [o for o in self.rendered[overlay] if o["kind"] == kind]

    def test_there_are_cpu_and_gpu_overlays(self):
        self.assertIn("cpu", OVERLAYS)
        self.assertIn("gpu", OVERLAYS)

    def test_every_service_runs_as_a_workload_and_the_trainer_as_a_stateful_set(self):
        for overlay in OVERLAYS:
            with self.subTest(overlay=overlay):
                deployments = {o["metadata"]["name"] for o in self.objects(overlay, "Deployment")}
                stateful = {o["metadata"]["name"] for o in self.objects(overlay, "StatefulSet")}
                self.assertEqual(stateful, {"rlhf-ppo-trainer"})
                self.assertEqual(deployments, {f"rlhf-{n}" for n in SERVICES if n != "ppo-trainer"})
                trainer = self.objects(overlay, "StatefulSet")[0]
                claims = [c["metadata"]["name"] for c in trainer["spec"]["volumeClaimTemplates"]]
                mounted = {m["name"] for m in trainer["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
                self.assertTrue(claims and set(claims) <= mounted, "the trainer's PVC holds its checkpoints")

    def test_every_workload_has_probes_resources_security_and_a_long_enough_grace_period(self):
        for overlay in OVERLAYS:
            workloads = self.objects(overlay, "Deployment") + self.objects(overlay, "StatefulSet")
            self.assertEqual(len(workloads), len(SERVICES))
            for workload in workloads:
                name = workload["metadata"]["name"]
                pod = workload["spec"]["template"]["spec"]
                with self.subTest(overlay=overlay, workload=name):
                    pod_security = pod.get("securityContext", {})
                    self.assertEqual(len(pod["containers"]), 1)
                    container = pod["containers"][0]
                    service = container["command"][0].removeprefix("rlhf-")
                    grpc_service, port, metrics_port = SERVICES[service]
                    args = container["args"]
                    self.assertEqual(flag(args, "listen_address"), f"0.0.0.0:{port}")
                    self.assertEqual(flag(args, "metrics_address"), f"0.0.0.0:{metrics_port}")
                    self.assertIsNotNone(flag(args, "auth_token_file"), "callers must present the bearer token")
                    # Native gRPC probes on the gRPC port; readiness asks about the service itself.
                    for probe in ("readinessProbe", "livenessProbe"):
                        self.assertIn(probe, container)
                        self.assertEqual(container[probe]["grpc"]["port"], port, probe)
                    self.assertEqual(container["readinessProbe"]["grpc"].get("service"), grpc_service)
                    # Requests and limits of CPU and memory.
                    resources = container["resources"]
                    for bound in ("requests", "limits"):
                        for what in ("cpu", "memory"):
                            self.assertIn(what, resources.get(bound, {}), f"resources.{bound}.{what}")
                    # Non-root, read-only root file system, no privilege escalation, no capabilities.
                    security = container.get("securityContext", {})
                    self.assertTrue(security.get("runAsNonRoot", pod_security.get("runAsNonRoot")))
                    user = security.get("runAsUser", pod_security.get("runAsUser"))
                    self.assertTrue(user is not None and user != 0, "runAsUser must be set and not root")
                    self.assertIs(security.get("readOnlyRootFilesystem"), True)
                    self.assertIs(security.get("allowPrivilegeEscalation"), False)
                    self.assertIn("ALL", security.get("capabilities", {}).get("drop", []))
                    # SIGTERM -> NOT_SERVING for --drain_delay -> in-flight calls get --shutdown_deadline: the
                    # kubelet must not SIGKILL before both have passed.
                    drain = seconds(flag(args, "drain_delay") or f"{DEFAULT_DRAIN_DELAY_S}s") + seconds(
                        flag(args, "shutdown_deadline") or f"{DEFAULT_SHUTDOWN_DEADLINE_S}s")
                    self.assertGreater(pod.get("terminationGracePeriodSeconds", 30), drain)
                    # Prometheus scrape annotations name the metrics port.
                    annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
                    self.assertEqual(annotations.get("prometheus.io/scrape"), "true")
                    self.assertEqual(annotations.get("prometheus.io/port"), str(metrics_port))

    def test_jobs_are_non_root_read_only_and_bounded(self):
        for overlay in OVERLAYS:
            for job in self.objects(overlay, "Job"):
                with self.subTest(overlay=overlay, job=job["metadata"]["name"]):
                    pod = job["spec"]["template"]["spec"]
                    self.assertTrue(pod["securityContext"]["runAsNonRoot"])
                    for container in pod["containers"]:
                        self.assertIs(container["securityContext"]["readOnlyRootFilesystem"], True)
                        self.assertIn("limits", container["resources"])

    def test_generation_and_reward_scale_with_autoscalers_behind_headless_services(self):
        for overlay in OVERLAYS:
            with self.subTest(overlay=overlay):
                scaled = {o["spec"]["scaleTargetRef"]["name"] for o in self.objects(overlay, "HorizontalPodAutoscaler")}
                self.assertEqual(scaled, {"rlhf-policy-generation", "rlhf-reward-scoring"})
                headless = {o["metadata"]["name"] for o in self.objects(overlay, "Service")
                            if o["spec"].get("clusterIP") == "None"}
                self.assertLessEqual({"rlhf-policy-generation-headless", "rlhf-reward-scoring-headless"}, headless)
                budgets = {o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
                           for o in self.objects(overlay, "PodDisruptionBudget")}
                self.assertLessEqual({"policy-generation", "reward-scoring"}, budgets)

    def test_flags_config_map_and_token_secret_are_mounted(self):
        for overlay in OVERLAYS:
            with self.subTest(overlay=overlay):
                config_maps = self.objects(overlay, "ConfigMap")
                secrets = {o["metadata"]["name"] for o in self.objects(overlay, "Secret")}
                self.assertEqual(len(config_maps), 1)
                flags = config_maps[0]["data"]
                self.assertEqual(set(flags), {f"{n}.flags" for n in SERVICES})
                # The orchestrator and the trainer call the other services with the same token.
                self.assertIn("--services_auth_token_file=/etc/rlhf/auth/token", flags["orchestrator.flags"].split())
                self.assertIn("--reward_auth_token_file=/etc/rlhf/auth/token", flags["ppo-trainer.flags"].split())
                for workload in self.objects(overlay, "Deployment") + self.objects(overlay, "StatefulSet"):
                    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
                    self.assertEqual(volumes["flags"]["configMap"]["name"], config_maps[0]["metadata"]["name"])
                    self.assertIn(volumes["auth"]["secret"]["secretName"], secrets)
                    args = workload["spec"]["template"]["spec"]["containers"][0]["args"]
                    service = workload["spec"]["template"]["spec"]["containers"][0]["command"][0].removeprefix("rlhf-")
                    self.assertEqual(flag(args, "flagfile"), f"/etc/rlhf/flags/{service}.flags")

    def test_runs_volume_is_shared_at_one_path(self):
        # Run folders hold paths the orchestrator passes to the trainer and the model services: one volume, one path.
        for overlay in OVERLAYS:
            for workload in self.objects(overlay, "Deployment") + self.objects(overlay, "StatefulSet"):
                pod = workload["spec"]["template"]["spec"]
                service = pod["containers"][0]["command"][0].removeprefix("rlhf-")
                if service == "labeling":
                    continue
                with self.subTest(overlay=overlay, service=service):
                    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                              for v in pod["volumes"] if "persistentVolumeClaim" in v}
                    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
                    runs = mounts["/var/lib/rlhf/runs"]
                    self.assertEqual(claims[runs["name"]], "rlhf-runs")
                    writer = service in ("orchestrator", "ppo-trainer")
                    self.assertEqual(bool(runs.get("readOnly")), not writer)
            claim = [o for o in self.objects(overlay, "PersistentVolumeClaim") if o["metadata"]["name"] == "rlhf-runs"]
            self.assertEqual(claim[0]["spec"]["accessModes"], ["ReadWriteMany"])

    def test_labeling_queue_journal_is_on_a_persistent_volume_with_one_writer(self):
        for overlay in OVERLAYS:
            with self.subTest(overlay=overlay):
                config = self.objects(overlay, "ConfigMap")[0]["data"]
                state_dir = flag(config["labeling.flags"].split(), "state_dir")
                self.assertIsNotNone(state_dir, "without --state_dir the queue is lost when the pod restarts")
                labeling = next(o for o in self.objects(overlay, "Deployment")
                                if o["metadata"]["name"] == "rlhf-labeling")
                pod = labeling["spec"]["template"]["spec"]
                mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == state_dir)
                volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
                claim = volume["persistentVolumeClaim"]["claimName"]
                self.assertIn(claim, {o["metadata"]["name"] for o in self.objects(overlay, "PersistentVolumeClaim")})
                self.assertEqual(labeling["spec"]["replicas"], 1)
                self.assertEqual(labeling["spec"]["strategy"]["type"], "Recreate", "two pods must not share a journal")

    def test_kubernetes_run_config_names_services_of_the_overlays(self):
        addresses = run_config_addresses("kubernetes.pbtxt")
        self.assertEqual(set(addresses), {"generation", "reference", "reward", "trainer", "labeling"})
        for overlay in OVERLAYS:
            services = {(o["metadata"]["name"], o["metadata"].get("namespace")): o
                        for o in self.objects(overlay, "Service")}
            for field, address in addresses.items():
                with self.subTest(overlay=overlay, field=field):
                    match = re.fullmatch(r"(dns:///)?([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", address)
                    self.assertIsNotNone(match, address)
                    dns, name, namespace, port = match.groups()
                    service = services.get((name, namespace))
                    self.assertIsNotNone(service, f"no Service {name} in namespace {namespace}")
                    self.assertIn(int(port), [p["port"] for p in service["spec"]["ports"]])
                    # A replicated service is reached through its headless Service, so gRPC sees every pod.
                    if field in ("generation", "reward"):
                        self.assertEqual(dns, "dns:///")
                        self.assertEqual(service["spec"].get("clusterIP"), "None")

    def test_gpu_overlay_asks_for_gpus_and_runs_on_cuda(self):
        config = self.objects("gpu", "ConfigMap")[0]["data"]
        for workload in self.objects("gpu", "Deployment") + self.objects("gpu", "StatefulSet"):
            container = workload["spec"]["template"]["spec"]["containers"][0]
            service = container["command"][0].removeprefix("rlhf-")
            with self.subTest(service=service):
                on_gpu = service in ("policy-generation", "reference-logprob", "reward-scoring", "ppo-trainer")
                self.assertEqual("nvidia.com/gpu" in container["resources"]["limits"], on_gpu)
                self.assertEqual("--device=cuda" in config[f"{service}.flags"].split(), on_gpu)


def run_config_addresses(name):
    """The `services { field: "address" }` of deploy/configs/<name>."""
    with open(os.path.join(SOURCE_DIR, "deploy", "configs", name)) as f:
        text = f.read()
    block = re.search(r"services\s*\{([^}]*)\}", text)
    assert block, f"{name} has no services block"
    return dict(re.findall(r'(\w+):\s*"([^"]+)"', block.group(1)))


class Compose(unittest.TestCase):
    def test_config_is_valid(self):
        compose = tool("docker-compose")
        with tempfile.TemporaryDirectory() as scratch:
            env = dict(os.environ, RLHF_AUTH_TOKEN_FILE=os.path.join(scratch, "token"))
            run([compose, "--project-directory", SOURCE_DIR, "-f", os.path.join(SOURCE_DIR, "docker-compose.yml"),
                 "config", "-q"], env=env)
            rendered = yaml.safe_load(run([compose, "--project-directory", SOURCE_DIR, "-f",
                                           os.path.join(SOURCE_DIR, "docker-compose.yml"), "config"], env=env))
        services = rendered["services"]
        for name, (grpc_service, port, metrics_port) in SERVICES.items():
            with self.subTest(service=name):
                service = services[name]
                command = service["command"]
                self.assertEqual(command[0], f"rlhf-{name}")
                self.assertEqual(flag(command, "listen_address"), f"0.0.0.0:{port}")
                self.assertEqual(flag(command, "metrics_address"), f"0.0.0.0:{metrics_port}")
                self.assertEqual(flag(command, "auth_token_file"), "/run/secrets/auth_token")
                health = service["healthcheck"]["test"]
                self.assertEqual(health[:2], ["CMD", "rlhf-health"])
                self.assertIn(f"--service={grpc_service}", health)
                self.assertIn(f"127.0.0.1:{port}", health)
                self.assertTrue(service["read_only"])
                self.assertEqual(service["user"], "10001:10001")
                self.assertIn(service["restart"], ("unless-stopped", "always", "on-failure"))
                drain = seconds(flag(command, "drain_delay") or "0s") + seconds(
                    flag(command, "shutdown_deadline") or f"{DEFAULT_SHUTDOWN_DEADLINE_S}s")
                self.assertGreater(seconds(service["stop_grace_period"]), drain)
        for name in SERVICES:
            if name != "orchestrator":
                self.assertEqual(services["orchestrator"]["depends_on"][name]["condition"], "service_healthy")
        self.assertIn("prometheus", services)
        self.assertIn("grafana", services)
        self.assertLessEqual({"models", "runs", "checkpoints", "labeling"}, set(rendered["volumes"]))
        # deploy/configs/compose.pbtxt names the services by their compose names and gRPC ports.
        fields = {"generation": "policy-generation", "reference": "reference-logprob", "reward": "reward-scoring",
                  "trainer": "ppo-trainer", "labeling": "labeling"}
        self.assertEqual(run_config_addresses("compose.pbtxt"),
                         {field: f"{name}:{SERVICES[name][1]}" for field, name in fields.items()})
        labeling = services["labeling"]
        state_dir = flag(labeling["command"], "state_dir")
        self.assertIsNotNone(state_dir, "the labeling queue's journal must outlive the container")
        # docker-compose 1.29 renders "volume:target[:mode]", later versions {type, source, target}.
        volumes = [v if isinstance(v, dict) else dict(zip(("source", "target"), v.split(":")[:2]))
                   for v in labeling["volumes"]]
        self.assertTrue(any(v["target"] == state_dir and v["source"] in rendered["volumes"] for v in volumes),
                        f"no named volume at {state_dir}: {labeling['volumes']}")


class Prometheus(unittest.TestCase):
    def test_compose_config_and_rules_pass_promtool(self):
        promtool = tool("promtool")
        run([promtool, "check", "config", os.path.join(PROMETHEUS, "prometheus.yml")])
        run([promtool, "check", "rules", os.path.join(PROMETHEUS, "rules.yml")])

    def test_kubernetes_config_passes_promtool_with_static_discovery(self):
        # Debian's Prometheus is built without Kubernetes discovery: check the rest of the file (relabelling,
        # rules) with the discovery block swapped for a static target.
        promtool = tool("promtool")
        with open(os.path.join(PROMETHEUS, "prometheus-k8s.yml")) as f:
            config = f.read()
        self.assertIn("kubernetes_sd_configs:\n      - role: pod", config)
        config = config.replace("kubernetes_sd_configs:\n      - role: pod",
                                'static_configs:\n      - targets: ["127.0.0.1:9461"]')
        with tempfile.TemporaryDirectory() as scratch:
            shutil.copy(os.path.join(PROMETHEUS, "rules.yml"), scratch)
            with open(os.path.join(scratch, "prometheus-k8s.yml"), "w") as f:
                f.write(config)
            run([promtool, "check", "config", os.path.join(scratch, "prometheus-k8s.yml")])

    def test_alert_unit_tests_pass(self):
        run([tool("promtool"), "test", "rules", "rules_test.yml"], cwd=PROMETHEUS)

    def test_every_alert_has_a_unit_test(self):
        with open(os.path.join(PROMETHEUS, "rules_test.yml")) as f:
            tested = {t["alertname"] for case in yaml.safe_load(f)["tests"] for t in case.get("alert_rule_test", [])}
        _, alerts = deploy_queries.rules()
        untested = {name for name, _ in alerts} - tested
        self.assertEqual(untested, set(), "alerts without a promtool unit test")


class Dashboard(unittest.TestCase):
    def test_panels_have_queries_on_the_provisioned_datasource(self):
        with open(deploy_queries.DASHBOARD) as f:
            dashboard = json.load(f)
        self.assertEqual(dashboard["uid"], "rlhf-suite")
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]
        self.assertGreater(len(panels), 10)
        for panel in panels:
            with self.subTest(panel=panel["title"]):
                self.assertTrue(panel["targets"])
                self.assertEqual(panel["datasource"]["uid"], "${datasource}")
        with open(os.path.join(SOURCE_DIR, "deploy", "grafana", "provisioning", "datasources",
                               "prometheus.yml")) as f:
            datasource = yaml.safe_load(f)["datasources"][0]
        self.assertEqual(datasource["type"], "prometheus")

    def test_queries_name_only_recorded_rules_that_exist(self):
        records, _ = deploy_queries.rules()
        recorded = {name for name, _ in records}
        for title, ref, expr in deploy_queries.dashboard_queries():
            for name in re.findall(r"\b[a-z_]+:[a-z0-9_:]+\b", re.sub(r'"[^"]*"', '""', expr)):
                self.assertIn(name, recorded, f"panel {title!r} {ref} uses an unknown recording rule")

    def test_every_query_parses(self):
        # promtool parses rule files: wrap each dashboard query in one and let it check them all.
        rules = [{"record": f"dashboard:query_{i}:check", "expr": expr}
                 for i, (_, _, expr) in enumerate(deploy_queries.dashboard_queries())]
        with tempfile.TemporaryDirectory() as scratch:
            path = os.path.join(scratch, "dashboard_rules.yml")
            with open(path, "w") as f:
                yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
            run([tool("promtool"), "check", "rules", path])


if __name__ == "__main__":
    unittest.main(verbosity=2)
