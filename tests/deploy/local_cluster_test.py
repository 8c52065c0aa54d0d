#!/usr/bin/python3
"""Starts the local cluster (tools/local_cluster.sh up: six services and a real Prometheus on loopback), drives
traffic through the model services (Generate, LogProbs, Score, and one bad request), runs a short loop of the main job
on the cluster (`rlhf run --orchestrator` with the run config `up` writes), and meanwhile asks that Prometheus for
every dashboard panel query and every recording rule: each must return at least one series while the run goes on, and
every metric they and the alerts name must be exported. The run must succeed, and `down` must leave no process
behind.

Needs the build (RLHF_BUILD_DIR, default <source>/build), Prometheus, and Python's grpcio and protobuf
(tools/packages/test.txt)."""
import concurrent.futures
import ctypes
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_queries  # noqa: E402

SOURCE_DIR = deploy_queries.SOURCE_DIR
BUILD_DIR = os.environ.get("RLHF_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
SCRIPT = os.path.join(SOURCE_DIR, "tools", "local_cluster.sh")
RUN_DEADLINE_S = 300
# The main job, shortened: every stage runs, PPO long enough for several scrapes of its metrics.
SHORT_RUN = """
sft { hparams { epochs: 1 max_steps: 30 } }
comparisons { num_prompts: 64 }
reward_model { hparams { epochs: 1 } }
ppo { iterations: 30 prompts_per_iteration: 16 }
evaluation { num_prompts: 32 }
"""


def free_block(count, low=20000, high=32000):
    """First port of `count` consecutive free loopback ports (below Linux's ephemeral range)."""
    rng = random.Random(os.getpid())
    for _ in range(200):
        base = rng.randrange(low, high - count)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
                sockets.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise AssertionError(f"no block of {count} free ports")


def load_messages(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    protos = [os.path.join("rlhf", "v1", f"{name}.proto") for name in ("common", "generation", "reference", "reward")]
    subprocess.run(["protoc", "-I", os.path.join(SOURCE_DIR, "protos"), "--python_out", out_dir] + protos, check=True)
    sys.path.insert(0, out_dir)
    from rlhf.v1 import generation_pb2, reference_pb2, reward_pb2  # noqa: E402
    return generation_pb2, reference_pb2, reward_pb2


def unary(channel, method, response_class, token):
    call = channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=response_class.FromString)
    return lambda request, timeout: call(request, timeout=timeout, metadata=[("authorization", f"Bearer {token}")])


def children_of(pid):
    """Pids of the live (not zombie) processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class LocalCluster(unittest.TestCase):
    def setUp(self):
        for tool in ("prometheus", "promtool", "protoc", "curl"):
            self.assertIsNotNone(shutil.which(tool), f"{tool} is not installed (tools/setup.sh installs it)")
        # Orphaned descendants (the services `up` detaches) become our children: `down` must leave none alive.
        libc = ctypes.CDLL(None, use_errno=True)
        self.assertEqual(libc.prctl(36, 1, 0, 0, 0), 0, "prctl(PR_SET_CHILD_SUBREAPER)")  # 36: PR_SET_CHILD_SUBREAPER
        self.scratch = tempfile.mkdtemp(prefix="rlhf_cluster_test_")
        self.state = os.path.join(self.scratch, "cluster")
        base = free_block(13)
        self.grpc_port, self.metrics_port, self.prometheus_port = base, base + 6, base + 12
        # Every service asks for a bearer token, as in docker-compose and Kubernetes. The first line is what the
        # orchestrator and `rlhf run` send, with the role they need (operator); a labeler's token may not run models.
        self.token = "cluster-test-%d" % random.Random().getrandbits(64)
        self.labeler_token = "cluster-labeler-%d" % random.Random().getrandbits(64)
        token_file = os.path.join(self.scratch, "token")
        with open(token_file, "w") as f:
            f.write(f"{self.token} orchestrator operator\n{self.labeler_token} alice labeler\n")
        self.env = dict(os.environ, RLHF_CLUSTER_DIR=self.state, RLHF_BUILD_DIR=BUILD_DIR,
                        RLHF_CLUSTER_TOKEN_FILE=token_file,
                        RLHF_CLUSTER_GRPC_PORT=str(self.grpc_port), RLHF_CLUSTER_METRICS_PORT=str(self.metrics_port),
                        RLHF_CLUSTER_PROMETHEUS_PORT=str(self.prometheus_port), RLHF_CLUSTER_SCRAPE_INTERVAL="1s")

    def tearDown(self):
        subprocess.run([SCRIPT, "down"], env=self.env, capture_output=True, timeout=60)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def cluster(self, command):
        result = subprocess.run([SCRIPT, command], env=self.env, capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, f"local_cluster.sh {command}:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def prometheus(self, path, **params):
        url = f"http://127.0.0.1:{self.prometheus_port}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        self.assertEqual(body["status"], "success", body)
        return body["data"]

    def drive_load(self, messages):
        generation_pb2, reference_pb2, reward_pb2 = messages
        generation = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port + 1}")
        reference = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port + 2}")
        reward = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port + 3}")
        generate = unary(generation, "/rlhf.v1.PolicyGenerationService/Generate", generation_pb2.GenerateResponse,
                         self.token)
        log_probs = unary(reference, "/rlhf.v1.ReferenceLogprobService/LogProbs", reference_pb2.LogProbsResponse,
                          self.token)
        score = unary(reward, "/rlhf.v1.RewardScoringService/Score", reward_pb2.ScoreResponse, self.token)
        wrong_token = unary(generation, "/rlhf.v1.PolicyGenerationService/Generate", generation_pb2.GenerateResponse,
                            "not-the-token")
        labeler_generate = unary(generation, "/rlhf.v1.PolicyGenerationService/Generate",
                                 generation_pb2.GenerateResponse, self.labeler_token)

        def one_round(seed):
            request = generation_pb2.GenerateRequest(num_samples=2)
            request.prompts.add().text = f"reverse: red green blue {seed} =>"
            request.sampling.max_new_tokens = 12
            request.sampling.seed = seed
            generated = generate(request, timeout=30)
            result = generated.results[0]
            scoring = reference_pb2.LogProbsRequest()
            scores = reward_pb2.ScoreRequest()
            for completion in result.completions:
                sequence = scoring.sequences.add()
                sequence.prompt_token_ids.extend(result.prompt_token_ids)
                sequence.response_token_ids.extend(completion.token_ids)
                item = scores.items.add()
                item.prompt.text = request.prompts[0].text
                item.response.text = completion.text
            scored = log_probs(scoring, timeout=30)
            self.assertEqual(len(scored.results), len(result.completions))
            rewards = score(scores, timeout=30)
            self.assertEqual(len(rewards.scores), len(result.completions))

        # One round first: a counter's labelled series appears at its first call, and Prometheus's rate() counts
        # only the increases it sees after that, so the main load must come a few scrapes later.
        one_round(0)
        time.sleep(3)
        # Concurrent callers, so the engines form batches of several requests.
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            for future in [pool.submit(one_round, seed) for seed in range(1, 17)]:
                future.result()
        # A bad request, so that the error panels have a series: no prompts.
        with self.assertRaises(grpc.RpcError) as bad:
            generate(generation_pb2.GenerateRequest(num_samples=1), timeout=10)
        self.assertEqual(bad.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        # A wrong token is refused before any handler runs (and counted as UNAUTHENTICATED).
        with self.assertRaises(grpc.RpcError) as refused:
            wrong_token(generation_pb2.GenerateRequest(num_samples=1), timeout=10)
        self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        # A labeler's token is known but its role may not call Generate (PERMISSION_DENIED, before any handler).
        with self.assertRaises(grpc.RpcError) as denied:
            labeler_generate(generation_pb2.GenerateRequest(num_samples=1), timeout=10)
        self.assertEqual(denied.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        for channel in (generation, reference, reward):
            channel.close()

    def check_queries_during(self, run):
        """Asks Prometheus for each query, again and again while `run` (the main job's process) goes on, until each
        has returned a series once; then waits for the run. Returns the failures and the number of queries."""
        records, alerts = deploy_queries.rules()
        queries = [(f"dashboard panel {title!r} ({ref})", expr)
                   for title, ref, expr in deploy_queries.dashboard_queries()]
        queries += [(f"recording rule {record}", expr) for record, expr in records]
        names = set()
        for _, expr in queries + alerts:
            names |= deploy_queries.metric_names(expr)
        answered, exported = set(), set()
        deadline = time.monotonic() + RUN_DEADLINE_S
        while True:
            exported |= set(self.prometheus("/api/v1/label/__name__/values"))
            for what, expr in queries:
                if what not in answered and self.prometheus("/api/v1/query", query=expr)["result"]:
                    answered.add(what)
            finished = run.poll() is not None
            if (len(answered) == len(queries) and names <= exported) or finished or time.monotonic() > deadline:
                break
            time.sleep(1)
        failures = [f"{name} is used by the dashboard or rules but no service exports it"
                    for name in sorted(names - exported)]
        failures += [f"{what} returned no series during the run: {expr}" for what, expr in queries
                     if what not in answered]
        return failures, len(queries)

    def test_up_load_every_query_has_series_then_down_leaves_nothing(self):
        started = time.monotonic()
        out = self.cluster("up")
        self.assertIn(f"127.0.0.1:{self.prometheus_port}", out)
        pid_dir = os.path.join(self.state, "pids")
        pids = {}
        for entry in os.listdir(pid_dir):
            with open(os.path.join(pid_dir, entry)) as f:
                pids[entry.removesuffix(".pid")] = int(f.read().split()[0])
        self.assertEqual(set(pids), {"orchestrator", "policy-generation", "reference-logprob", "reward-scoring",
                                     "ppo-trainer", "labeling", "prometheus"})
        status = self.cluster("status")
        self.assertEqual(status.count("SERVING"), 6, status)

        self.drive_load(load_messages(os.path.join(self.scratch, "py")))

        # The main job on the cluster, with the config `up` wrote, shortened.
        config = os.path.join(self.scratch, "short.pbtxt")
        with open(os.path.join(self.state, "run.pbtxt")) as f:
            base = f.read()
        self.assertIn(f"127.0.0.1:{self.grpc_port + 1}", base)
        with open(config, "w") as f:
            f.write(base + SHORT_RUN)
        log_path = os.path.join(self.scratch, "run.log")
        with open(log_path, "w") as log:
            run = subprocess.Popen([os.path.join(BUILD_DIR, "tools", "cli", "rlhf"), "run",
                                    f"--orchestrator=127.0.0.1:{self.grpc_port}", f"--config={config}",
                                    f"--token_file={self.env['RLHF_CLUSTER_TOKEN_FILE']}",
                                    "--run_id=short"], stdout=log, stderr=subprocess.STDOUT)
        try:
            failures, total = self.check_queries_during(run)
            code = run.wait(timeout=RUN_DEADLINE_S)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        with open(log_path) as f:
            output = f.read()
        self.assertEqual(code, 0, f"rlhf run on the cluster failed:\n{output[-3000:]}")
        self.assertIn("PPO vs SFT win-rate", output)
        self.assertTrue(os.path.exists(os.path.join(self.state, "runs", "short", "report.html")),
                        "the run (id short) lives in the orchestrator's runs root")
        print(f"\n{total} dashboard and recording-rule queries each returned series during the run",
              file=sys.stderr)
        self.assertEqual(failures, [], "\n".join(failures))

        self.cluster("down")
        for name, pid in pids.items():
            self.assertFalse(alive(pid), f"{name} (pid {pid}) still runs after down")
        self.assertEqual(children_of(os.getpid()), [], "processes left behind by the cluster")
        self.assertFalse(os.path.exists(pid_dir))
        print(f"local cluster test took {time.monotonic() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
