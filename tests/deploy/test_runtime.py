#!/usr/bin/python3
"""The deployment files run the real gateway the way they say: for each container that runs
herald (the Kubernetes Deployment and migration Job of both overlays, the compose gateways and
migrate step), build the command line the container would run (the Dockerfile's ENTRYPOINT and
CMD, overridden by the manifest's command/args) and the environment it would get (image ENV,
ConfigMap, Secret values, the pod name), then run the built binary with it on this machine.
Only what cannot exist here is replaced: the listen address (a free loopback port), Redis (a
real redis-server), PostgreSQL (a real one for migrate, an unreachable address for serve) and
the image's paths (mapped to the repository through the Dockerfile's COPY lines).

Then the probes of the manifest are asked on the process: the startup and liveness paths answer
200, the readiness path 200 once Redis delivers; /healthz names the pod; the Docker
HEALTHCHECK command succeeds while it runs and fails once it has stopped; SIGTERM ends it within
HERALD_DRAIN_SECONDS. A bad setting value makes herald exit with status 2, which fails these
tests (self-checked)."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import shutil
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import deploycheck as dc  # noqa: E402
from harness import RedisServer, _Proc, free_port, wait_for  # noqa: E402
from pg import PostgresServer  # noqa: E402

IMAGE_BIN = "/usr/local/bin/herald"


def http(port, path, timeout=3.0):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Gateway(_Proc):
    name = "herald"

    def start(self, argv, env):
        self._spawn(argv, f"herald-{free_port()}.log", env=env)
        return self


class Runtime(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(dc.DOCKERFILE) as f:
            cls.df = dc.Dockerfile(f.read())
        cls.runtime = cls.df.stage("runtime")
        cls.docs = {o: dc.render(o) for o in dc.OVERLAYS}
        cls.compose = dc.load_compose()
        if not os.path.exists(dc.herald_bin()):
            raise AssertionError(f"build the gateway first: {dc.herald_bin()} is missing")

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="herald-deploy-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def start_redis(self):
        r = RedisServer(self.tmp)
        self.addCleanup(r.kill)
        return r.start()

    # ---- what the container would run ------------------------------------------------------

    def argv_for(self, command=None, args=None):
        """Kubernetes semantics (compose's `command` is Kubernetes' `args`)."""
        if command:
            argv = list(command) + list(args or [])
        elif args is not None:
            argv = self.df.entrypoint(self.runtime) + list(args)
        else:
            argv = self.df.entrypoint(self.runtime) + self.df.cmd(self.runtime)
        self.assertEqual(argv[0], IMAGE_BIN, "the container does not run the herald binary")
        return [dc.herald_bin()] + argv[1:]

    def local_env(self, env, redis=None, pg_url=None):
        """The container's environment with this machine's stand-ins; returns (env, port)."""
        full = {**self.df.env(self.runtime), **env}
        port = free_port()
        full["HERALD_LISTEN"] = f"127.0.0.1:{port}"
        if redis is not None:
            full["HERALD_REDIS_URL"] = redis.url
        for var in ("HERALD_DATABASE_URL", "HERALD_DATABASE_READ_URL"):
            if var in full:
                full[var] = pg_url or "postgresql://herald@127.0.0.1:1/herald?connect_timeout=1"
        if full.get("HERALD_STATIC_DIR"):
            mapped = self.df.image_path(self.runtime, full["HERALD_STATIC_DIR"])
            self.assertTrue(mapped and os.path.isdir(mapped), full["HERALD_STATIC_DIR"])
            full["HERALD_STATIC_DIR"] = mapped
        base = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        return {**base, **full}, port

    def run_gateway(self, argv, env, port):
        g = Gateway(self.tmp).start(argv, env)
        self.addCleanup(g.kill)

        def up():
            if not g.alive():
                raise AssertionError(f"herald exited with {g.proc.returncode}:\n{g.log_text(40)}")
            try:
                return http(port, "/healthz")[0] == 200
            except OSError:
                return False

        wait_for(up, 20, what="herald /healthz")
        return g

    def healthcheck(self, port):
        argv = self.df.healthcheck(self.runtime)
        env = {"PATH": os.environ["PATH"], "HERALD_LISTEN": f"0.0.0.0:{port}"}
        return subprocess.run(argv, env=env, capture_output=True, timeout=10).returncode

    def exercise(self, argv, env, port, probes, instance, drain):
        """Start, ask the probes, the HEALTHCHECK and the web demo, then SIGTERM."""
        g = self.run_gateway(argv, env, port)
        for kind, path in probes:
            want = 200
            if kind == "readiness":
                wait_for(lambda: http(port, path)[0] == 200, 20, what=f"{path} == 200")
            status, body = http(port, path)
            self.assertEqual(status, want, f"{kind} probe {path}: {status} {body[:200]}")
        status, body = http(port, "/healthz")
        self.assertEqual(json.loads(body)["instance"], instance)
        self.assertEqual(self.healthcheck(port), 0, "HEALTHCHECK failed against a running herald")
        status, body = http(port, "/")
        self.assertEqual(status, 200)
        self.assertIn(b"<html", body.lower())
        t0 = time.monotonic()
        g.signal(signal.SIGTERM)
        code = g.wait_exit(drain + 5)
        self.assertEqual(code, 0, g.log_text(40))
        self.assertLessEqual(time.monotonic() - t0, drain)
        self.assertNotEqual(self.healthcheck(port), 0, "HEALTHCHECK passed with herald stopped")

    # ---- Kubernetes --------------------------------------------------------------------------

    def test_k8s_gateway(self):
        redis = self.start_redis()
        for overlay in dc.OVERLAYS:
            with self.subTest(overlay=overlay):
                docs = self.docs[overlay]
                dep = dc.gateway(docs)
                pod = dep["spec"]["template"]["spec"]
                c = pod["containers"][0]
                env, problems = dc.container_env(docs, overlay, pod, c, pod_name="herald-abc12")
                self.assertEqual(problems, [])
                argv = self.argv_for(c.get("command"), c.get("args"))
                local, port = self.local_env(env, redis)
                probes = [("startup", c["startupProbe"]["httpGet"]["path"]),
                          ("liveness", c["livenessProbe"]["httpGet"]["path"]),
                          ("readiness", c["readinessProbe"]["httpGet"]["path"])]
                drain = int(env["HERALD_DRAIN_SECONDS"])
                self.exercise(argv, local, port, probes, "herald-abc12", drain)

    def test_k8s_and_compose_migrations(self):
        pg = PostgresServer(self.tmp)
        self.addCleanup(pg.kill)
        pg.init().start().create_db()
        jobs = []
        for overlay in dc.OVERLAYS:
            job = dc.find(self.docs[overlay], "Job", "herald-migrate")[0]
            pod = job["spec"]["template"]["spec"]
            c = pod["containers"][0]
            env, problems = dc.container_env(self.docs[overlay], overlay, pod, c)
            self.assertEqual(problems, [])
            jobs.append((f"k8s {overlay}", self.argv_for(c.get("command"), c.get("args")), env))
        m = self.compose["services"]["migrate"]
        jobs.append(("compose", self.argv_for(None, m.get("command")),
                     dc._env_dict(m["environment"])))
        first = True
        for what, argv, env in jobs:
            with self.subTest(what):
                local, _ = self.local_env(env, pg_url=pg.url)
                r = subprocess.run(argv, env=local, capture_output=True, text=True, timeout=60)
                self.assertEqual(r.returncode, 0, r.stderr)
                applied = json.loads(r.stdout)["applied"]
                # the first run creates the schema, the others find it there
                self.assertEqual(applied > 0, first, r.stdout)
                first = False
        self.assertEqual(pg.sql("SELECT count(*) FROM herald_channels"), "0")

    # ---- Compose -----------------------------------------------------------------------------

    def test_compose_gateways(self):
        redis = self.start_redis()
        for name in ("gateway1", "gateway2", "gateway3"):
            with self.subTest(name):
                svc = self.compose["services"][name]
                env = dc._env_dict(svc["environment"])
                argv = self.argv_for(None, svc.get("command"))
                local, port = self.local_env(env, redis)
                probes = [("liveness", "/healthz"), ("readiness", "/readyz")]
                self.exercise(argv, local, port, probes, name,
                              int(env["HERALD_DRAIN_SECONDS"]))

    # ---- self-check --------------------------------------------------------------------------

    def test_a_bad_value_stops_herald(self):
        """What makes the tests above fail when a manifest carries a value herald refuses."""
        env, problems = dc.container_env(self.docs["prod"], "prod",
                                         dc.gateway(self.docs["prod"])["spec"]["template"]["spec"],
                                         dc.gateway(self.docs["prod"])["spec"]["template"]["spec"]
                                         ["containers"][0])
        env["HERALD_DRAIN_SECONDS"] = "20s"
        local, port = self.local_env(env)
        g = Gateway(self.tmp).start(self.argv_for(None, ["serve"]), local)
        self.addCleanup(g.kill)
        self.assertEqual(g.wait_exit(10), 2)
        self.assertIn("HERALD_DRAIN_SECONDS", g.log_text())
        with self.assertRaisesRegex(AssertionError, "herald exited with 2"):
            self.run_gateway(self.argv_for(None, ["serve"]), local, port)


if __name__ == "__main__":
    unittest.main(verbosity=2)
