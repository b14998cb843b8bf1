#!/usr/bin/python3
"""deploy/docker-compose.yml without a Docker engine: it parses, matches the Compose
Specification schema, Debian's docker-compose resolves it (`config`), and every service, port,
HERALD_* variable and mounted file it names exists (deploy/nginx/herald.conf among them, the
load balancer's nginx.conf), and the publisher runs deploy/demo-publisher.py with options the
script has and a ws:// URL of nginx's port and the gateway's /ws route. The self-checks break
one thing at a time and require the checker to name it."""

import copy
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploycheck as dc  # noqa: E402


class Compose(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.data = dc.load_compose()
        # The self-checks mount a minimal stand-in for herald.conf (the parts the checker reads:
        # the upstreams include and the listen port), so that they do not depend on it.
        cls.standin = tempfile.NamedTemporaryFile("w", suffix=".conf")
        cls.standin.write("events {}\nhttp {\n  upstream herald {\n"
                          "    include herald-upstreams.conf;\n  }\n"
                          "  server {\n    listen 8080;\n  }\n}\n")
        cls.standin.flush()

    @classmethod
    def tearDownClass(cls):
        cls.standin.close()

    def test_compose_file(self):
        self.assertEqual(dc.compose_problems(self.data), [])

    def test_runs_what_the_issue_lists(self):
        self.assertEqual(set(self.data["services"]), set(dc.COMPOSE_SERVICES))

    def expect(self, fn, needle, docker_compose=False):
        data = copy.deepcopy(self.data)
        data["services"]["nginx"]["volumes"][0] = f"{self.standin.name}:/etc/nginx/nginx.conf:ro"
        fn(data["services"])
        problems = dc.compose_problems(data, run_docker_compose=docker_compose)
        self.assertTrue(any(needle in p for p in problems),
                        f"expected a problem containing {needle!r}, got {problems}")

    def test_rejects_broken_copies(self):
        env = lambda s, n: s[n]["environment"]  # noqa: E731
        cases = [
            ("unknown variable", lambda s: env(s, "gateway2").update(HERALD_LISTN="x"),
             "gateway2: environment HERALD_LISTN is not a herald setting"),
            ("unknown interpolated variable", lambda s: env(s, "gateway1").update(
                HERALD_LOG_LEVEL="${HERALD_LOGLEVEL}"), "interpolates HERALD_LOGLEVEL"),
            ("missing service", lambda s: s.pop("gateway3"), "service gateway3 is missing"),
            ("upstream to a missing service", lambda s: s.pop("gateway3"),
             "nginx upstream gateway3:8080: gateway3 is not a service"),
            ("missing mounted file", lambda s: s["nginx"]["volumes"].__setitem__(
                1, "./nginx/nope.conf:/etc/nginx/herald-upstreams.conf:ro"),
             "mounts ./nginx/nope.conf, which does not exist"),
            ("depends on a ghost", lambda s: s["nginx"]["depends_on"].update(
                ghost={"condition": "service_started"}), "depends_on ghost"),
            ("healthy without a healthcheck", lambda s: s["nginx"]["depends_on"].update(
                publisher={"condition": "service_healthy"}),
             "waits for publisher to be healthy, which has no healthcheck"),
            ("completion of a restarting service", lambda s: s["migrate"].update(
                restart="always"), "waits for migrate to complete, but migrate restarts"),
            ("port", lambda s: env(s, "gateway1").update(HERALD_LISTEN="0.0.0.0:9090"),
             "gateway1: listens on 9090"),
            ("upstream port", lambda s: env(s, "gateway1").update(HERALD_LISTEN="0.0.0.0:9090"),
             "nginx upstream gateway1:8080: gateway1 listens on 9090"),
            ("grace", lambda s: s["gateway2"].update(stop_grace_period="15s"),
             "stop_grace_period 15s is not longer than HERALD_DRAIN_SECONDS 20"),
            ("redis url", lambda s: env(s, "gateway3").update(
                HERALD_REDIS_URL="redis://redis:6380/0"), "HERALD_REDIS_URL redis://redis:6380/0"),
            ("second redis server", lambda s: env(s, "gateway3").update(
                HERALD_REDIS_URL="redis://redis:6379/0,redis://redis-1:6379/0"),
             "HERALD_REDIS_URL redis://redis-1:6379/0 is not a Redis service"),
            ("sentinel not a service", lambda s: env(s, "gateway3").update(
                HERALD_REDIS_URL="redis-sentinel://redis:6379,sentinel-1/mymaster"),
             "is not a Redis service on its port (sentinel-1:26379"),
            ("sentinel on redis's port", lambda s: env(s, "gateway3").update(
                HERALD_REDIS_URL="redis-sentinel://redis/mymaster"),
             "is not a Redis service on its port (redis:26379"),
            ("cluster node not a service", lambda s: env(s, "gateway3").update(
                HERALD_REDIS_URL="redis-cluster://redis:6379,node-1:7000"),
             "is not a Redis service on its port (node-1:7000"),
            ("database password", lambda s: s["migrate"]["environment"].update(
                HERALD_DATABASE_URL="postgresql://herald:wrong@postgres:5432/herald"),
             "does not match the postgres service"),
            ("command", lambda s: s["migrate"].update(command=["migrat"]),
             "runs `herald migrat`"),
            ("build target", lambda s: s["gateway1"]["build"].update(target="nope"),
             "build target nope is not a stage"),
            ("static dir", lambda s: env(s, "gateway1").update(HERALD_STATIC_DIR="/srv/www"),
             "HERALD_STATIC_DIR=/srv/www is not the web demo"),
            ("publisher port", lambda s: s["publisher"].update(
                command=["--url", "ws://nginx:80/ws", "--rate", "2"]), "nginx listens on 8080"),
            ("publisher host", lambda s: s["publisher"].update(
                command=["--url", "ws://gateway4:8080/ws"]), "names gateway4, not a service"),
            ("publisher route", lambda s: s["publisher"].update(
                command=["--url", "ws://nginx:8080/socket"]),
             "/socket is not the gateway's WebSocket route /ws"),
            ("publisher scheme", lambda s: s["publisher"].update(
                command=["--url", "http://nginx:8080/ws"]), "is not a ws:// URL"),
            ("publisher option", lambda s: s["publisher"].update(
                command=["--urls", "ws://nginx:8080/ws"]),
             "--urls is not an option of demo-publisher.py"),
            ("publisher without url", lambda s: s["publisher"].update(command=["--rate", "2"]),
             "publisher: no --url"),
            ("publisher rate", lambda s: s["publisher"].update(
                command=["--url=ws://nginx:8080/ws", "--rate=80"]),
             "--rate 80 is not below the gateways' HERALD_RATE_LIMIT 50"),
            ("the old shell publisher's arguments", lambda s: s["publisher"].update(
                command=["http://nginx:8080", "2"]),
             "argument 'http://nginx:8080' is not an option of demo-publisher.py"),
            ("schema: misspelt key", lambda s: s["redis"].update(helthcheck={}),
             "must NOT have additional properties"),
            ("schema: wrong type", lambda s: s["redis"].update(expose="6379"), "must be array"),
        ]
        for what, fn, needle in cases:
            with self.subTest(what):
                self.expect(fn, needle)

    def test_accepts_sentinels_and_cluster_nodes_that_are_services(self):
        """Every sentinel and cluster node a URL names is checked against a Redis service on
        its port; a service that runs redis-sentinel listens on 26379 unless told otherwise."""
        data = copy.deepcopy(self.data)
        data["services"]["nginx"]["volumes"][0] = f"{self.standin.name}:/etc/nginx/nginx.conf:ro"
        redis = data["services"]["redis"]
        for name, command in (("sentinel-0", ["redis-sentinel", "/data/sentinel.conf"]),
                              ("sentinel-1", ["redis-server", "/data/s.conf", "--sentinel"]),
                              ("node-1", ["redis-server", "--port", "7000"])):
            data["services"][name] = {"image": redis["image"], "command": command}
        data["services"]["gateway2"]["environment"]["HERALD_REDIS_URL"] = (
            "redis-sentinel://sentinel-0,sentinel-1:26379/mymaster")
        data["services"]["gateway3"]["environment"]["HERALD_REDIS_URL"] = (
            "redis-cluster://redis:6379,node-1:7000")
        problems = dc.compose_problems(data, run_docker_compose=False)
        self.assertEqual([p for p in problems if "HERALD_REDIS_URL" in p], [])

    def test_docker_compose_rejects_a_broken_copy(self):
        data = copy.deepcopy(self.data)
        data["services"]["nginx"]["depends_on"]["ghost"] = {"condition": "service_started"}
        problems = dc.docker_compose_config(data, os.path.dirname(dc.COMPOSE))
        self.assertTrue(problems and "ghost" in problems[0], problems)
        self.assertEqual(dc.docker_compose_config(self.data, os.path.dirname(dc.COMPOSE)), [])

    def test_upstreams_file_names_services_only(self):
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write("server gateway1:8080;\nserver gateway2:8080;\nserver gateway3:8080;\n"
                    "server gateway4:8080;\n")
            f.flush()
            self.expect(lambda s: s["nginx"]["volumes"].__setitem__(
                1, f"{f.name}:/etc/nginx/herald-upstreams.conf:ro"),
                "nginx upstream gateway4:8080: gateway4 is not a service")


if __name__ == "__main__":
    unittest.main(verbosity=2)
