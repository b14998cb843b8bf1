"""Debian's nginx in front of Herald instances, with the project's own load-balancer config.

The test copies deploy/nginx/herald.conf into a per-test prefix directory, changes only its
`listen 8080;` line to a free 127.0.0.1 port (several test runs share the machine; nothing else
in the file is touched, so the test exercises the configuration operators use), writes
herald-upstreams.conf beside it and runs

    nginx -p DIR/ -c DIR/nginx.conf -g 'daemon off; pid DIR/nginx.pid;'

as a child of the test. The master is stopped by PID; its worker processes are stopped by PID
too (they outlive a master that is SIGKILLed)."""

import os
import shutil
import signal
import socket
import time

from harness import DEFAULT_TIMEOUT, REPO_ROOT, _Proc, free_port, http_get

CONFIG = os.path.join(REPO_ROOT, "deploy", "nginx", "herald.conf")
LISTEN_LINE = "listen 8080;"


def nginx_bin():
    return shutil.which("nginx") or "/usr/sbin/nginx"


class Nginx(_Proc):
    name = "nginx"

    def __init__(self, workdir, upstreams, port=None, server_params="max_fails=1 fail_timeout=3s"):
        """upstreams: list of "host:port" of the Herald instances."""
        super().__init__(workdir)
        self.port = port or free_port()
        self.prefix = os.path.join(workdir, f"nginx-{self.port}")
        self.conf = os.path.join(self.prefix, "nginx.conf")
        self.upstreams = list(upstreams)
        self.server_params = server_params
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.workers = set()

    def write_config(self):
        os.makedirs(self.prefix, exist_ok=True)
        # nginx's workers run as an unprivileged user when the test runs as root: they must be
        # able to reach their temp folders under the prefix
        os.chmod(self.workdir, 0o755)
        os.chmod(self.prefix, 0o755)
        with open(CONFIG) as f:
            text = f.read()
        lines = text.splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if line.strip() == LISTEN_LINE]
        if len(hits) != 1:
            raise AssertionError(f"{CONFIG} must have exactly one `{LISTEN_LINE}` line")
        # The only change to the project's file: its port 8080 may be taken (other test runs,
        # a system nginx), so this copy listens on a free port of 127.0.0.1.
        i = hits[0]
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        lines[i] = f"{indent}listen 127.0.0.1:{self.port};\n"
        with open(self.conf, "w") as f:
            f.write("".join(lines))
        with open(os.path.join(self.prefix, "herald-upstreams.conf"), "w") as f:
            for addr in self.upstreams:
                f.write(f"server {addr} {self.server_params};\n")
        return self

    def start(self, timeout=DEFAULT_TIMEOUT):
        self.write_config()
        argv = [nginx_bin(), "-p", self.prefix + "/", "-c", self.conf,
                "-g", f"daemon off; pid {os.path.join(self.prefix, 'nginx.pid')};"]
        self.argv = argv
        self._spawn(argv, f"nginx-{self.port}.log")

        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise AssertionError(f"nginx exited with {self.proc.returncode} at start-up"
                                     f" ({' '.join(argv)}):\n{self.log_text(50)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"nginx not listening after {timeout}s:\n"
                                     f"{self.log_text(50)}")
            time.sleep(0.05)
        self._note_workers()
        return self

    def _note_workers(self):
        """Remember the worker PIDs (children of the master) so that stop() can reach them."""
        if not self.alive():
            return
        pid = self.proc.pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                self.workers.update(int(p) for p in f.read().split())
        except OSError:
            pass

    def _kill_workers(self):
        for wpid in self.workers:
            try:
                with open(f"/proc/{wpid}/cmdline", "rb") as f:
                    if b"nginx" not in f.read():
                        continue  # gone, and the PID reused by something else
                os.kill(wpid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass

    def stop(self, timeout=10.0):
        """Fast shutdown (SIGTERM: open WebSockets are cut), then SIGKILL; workers by PID."""
        self._note_workers()
        status = super().stop(timeout)
        self._kill_workers()
        return status

    def kill(self):
        self._note_workers()
        status = super().kill()
        self._kill_workers()
        return status

    def get(self, path, timeout=10.0, headers=None):
        return http_get(self.base + path, timeout=timeout, headers=headers)


def start_nginx(testcase, upstreams, **kw):
    """Starts nginx for a HeraldTestCase; stopped in its cleanups."""
    n = Nginx(testcase.tmp, upstreams, **kw)
    testcase._procs.append(n)
    testcase.addCleanup(n.stop)
    return n.start()

