#!/usr/bin/python3
"""deploy/Dockerfile without a Docker engine: the Dockerfile language server's parser and
linter accept it; its stages are Debian 12 (bookworm) and bookworm-slim; every package it
installs exists in Debian 12; the build stage installs every pkg-config module CMakeLists.txt
asks for; the runtime stage installs every shared library the built binary loads (ldd, plus
lws's libuv plugin); every file it copies exists and is not left out by .dockerignore; the
runtime image runs the binary as a numeric non-root user, serves the web demo and has a
HEALTHCHECK on /healthz; the demo-publisher image copies in deploy/demo-publisher.py and
installs the Debian packages of its interpreter and of every module it imports. (test_runtime.py runs the HEALTHCHECK command against a real
herald.) The self-checks break one thing at a time and require the checker to name it."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploycheck as dc  # noqa: E402


class Dockerfile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(dc.DOCKERFILE) as f:
            cls.text = f.read()
        cls.binary = dc.herald_bin()
        if not os.path.exists(cls.binary):
            raise AssertionError(f"build the gateway first: {cls.binary} is missing")

    def test_dockerfile(self):
        self.assertEqual(dc.dockerfile_problems(self.text, self.binary), [])

    def test_structure(self):
        df = dc.Dockerfile(self.text)
        self.assertEqual([s["name"] for s in df.stages], ["build", "demo-publisher", "runtime"])
        rt = df.stage("runtime")
        self.assertEqual(df.entrypoint(rt), ["/usr/local/bin/herald"])
        self.assertEqual(df.cmd(rt), ["serve"])
        pub = df.stage("demo-publisher")
        self.assertIsNone(df.healthcheck(pub))
        self.assertEqual(df.user(pub), "10001:10001")
        self.assertEqual(df.entrypoint(pub), ["/usr/bin/python3",
                                              "/usr/local/bin/demo-publisher.py"])
        self.assertEqual(df.image_path(pub, "/usr/local/bin/demo-publisher.py"),
                         os.path.join(dc.REPO, "deploy", "demo-publisher.py"))

    def expect(self, old, new, needle):
        self.assertIn(old, self.text)
        problems = dc.dockerfile_problems(self.text.replace(old, new, 1), self.binary)
        self.assertTrue(any(needle in p for p in problems),
                        f"expected a problem containing {needle!r}, got {problems}")

    def test_rejects_broken_copies(self):
        cases = [
            ("root", "USER 10001:10001\nEXPOSE", "USER root\nEXPOSE", "runtime USER is 'root'"),
            ("missing runtime library", "libjansson4 libpq5", "libjansson4",
             "(package libpq5) is not installed"),
            ("missing lws plugin", "libwebsockets17 libwebsockets-evlib-uv",
             "libwebsockets17", "libwebsockets-evlib_uv.so (package libwebsockets-evlib-uv)"),
            ("unknown package", "libjwt0 ca-certificates", "libjwt0 libjwt9 ca-certificates",
             "no Debian 12 package 'libjwt9'"),
            ("missing build package", "libpq-dev libjwt-dev", "libpq-dev",
             "pkg-config module libjwt is in libjwt-dev"),
            ("old base", "FROM debian:bookworm-slim AS runtime",
             "FROM debian:bullseye-slim AS runtime", "not debian:bookworm-slim"),
            ("no healthcheck", "HEALTHCHECK --interval", "# HEALTHCHECK --interval",
             "no HEALTHCHECK"),
            ("missing source", "COPY common/sql/", "COPY common/sqlite/",
             "COPY common/sqlite/: no such file"),
            ("ignored source", "COPY common/sql/", "COPY docs/", "COPY docs/: excluded by "),
            ("static dir", "HERALD_STATIC_DIR=/usr/share/herald/web-demo",
             "HERALD_STATIC_DIR=/srv/www", "HERALD_STATIC_DIR=/srv/www is not the web demo"),
            ("unknown setting", "ENV HERALD_LISTEN=", "ENV HERALD_LISTN=1 HERALD_LISTEN=",
             "runtime ENV HERALD_LISTN: not a herald setting"),
            ("expose", "EXPOSE 8080", "EXPOSE 9090", "does not include the HERALD_LISTEN port"),
            ("syntax", "WORKDIR /src", "WORKDIRR /src", "dockerfile-utils"),
            ("publisher module", "python3 python3-websockets", "python3",
             "demo-publisher.py imports websockets (package python3-websockets)"),
            ("syntax directive", "# Herald's container image", "# syntax=docker/dockerfile:1\n#",
             "`# syntax=` directive"),
            ("publisher script", "COPY deploy/demo-publisher.py", "COPY deploy/demo-publisher.sh",
             "runs /usr/local/bin/demo-publisher.py, which no COPY"),
        ]
        for what, old, new, needle in cases:
            with self.subTest(what):
                self.expect(old, new, needle)

    def test_rejects_publisher_as_default_target(self):
        # the image the issue found: `docker build` without --target made the demo publisher
        banner = "#" * 92 + "\n"
        head, build, pub, runtime = self.text.split(banner)
        swapped = banner.join([head, build, runtime.rstrip("\n") + "\n\n", pub.rstrip("\n") + "\n"])
        problems = dc.dockerfile_problems(swapped, self.binary)
        self.assertTrue(any("the last stage is demo-publisher, not runtime" in p for p in problems),
                        problems)

    def test_dockerignore(self):
        self.assertFalse(dc.dockerignored("gateway/main.c"))
        self.assertFalse(dc.dockerignored("web-demo/index.html"))
        self.assertTrue(dc.dockerignored("web-demo/test/run.sh"))
        self.assertTrue(dc.dockerignored("build/gateway/herald"))
        self.assertTrue(dc.dockerignored("x/node_modules/y", ["**/node_modules"]))
        self.assertFalse(dc.dockerignored("gateway/a.c", ["gateway", "!gateway"]))


if __name__ == "__main__":
    unittest.main(verbosity=2)
