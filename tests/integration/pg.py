"""A real PostgreSQL for the history tests: initdb and postgres run as an unprivileged user
(PostgreSQL refuses root) in a per-test temporary directory, on a free 127.0.0.1 port, and
are stopped by PID in the test's cleanups. Queries go through psql."""

import glob
import os
import pwd
import shutil
import signal
import subprocess
import time

from harness import DEFAULT_TIMEOUT, HeraldTestCase, _Proc, _set_pdeathsig, free_port, wait_for

PG_USER = "herald"  # the database role (superuser, trust auth on 127.0.0.1)


def pg_bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found: apt-get install postgresql")
    return found[-1]


def child_pids(pid):
    """The processes whose parent is pid (from /proc)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name (2nd field) may hold spaces: the parent pid follows its ')'
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            children.append(int(entry))
    return children


def os_user():
    """The unprivileged account the server runs as: the caller itself unless it is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user to run PostgreSQL as")


class PostgresServer(_Proc):
    name = "postgres"

    def __init__(self, workdir, port=None):
        super().__init__(workdir)
        self.port = port or free_port()
        self.dir = os.path.join(workdir, f"pg-{self.port}")
        self.data = os.path.join(self.dir, "data")
        self.user = os_user()
        self.url = f"postgresql://{PG_USER}@127.0.0.1:{self.port}/herald"
        self.settings = {}  # extra -c settings of the server, e.g. {"synchronous_commit": "on"}

    def _drop_privileges(self):
        _set_pdeathsig()
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

    def _as_user(self, argv):
        return ["runuser", "-u", self.user, "--"] + argv if self.user else argv

    def init(self):
        os.makedirs(self.dir, exist_ok=True)
        if self.user:
            shutil.chown(self.dir, self.user)
            os.chmod(self.workdir, 0o755)
        subprocess.run(self._as_user([pg_bin("initdb"), "-D", self.data, "-A", "trust", "-U",
                                      PG_USER, "-E", "UTF8"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def start(self, timeout=DEFAULT_TIMEOUT):
        argv = [pg_bin("postgres"), "-D", self.data, "-p", str(self.port), "-k", self.dir,
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                "-c", "synchronous_commit=off", "-c", "max_connections=200"]
        for k, v in self.settings.items():
            argv += ["-c", f"{k}={v}"]
        # the postmaster itself is the child (no runuser in between), so that signals and
        # the stop by PID reach it
        self.log_path = os.path.join(self.workdir, f"postgres-{self.port}.log")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, preexec_fn=self._drop_privileges,
                                         cwd=self.dir)
        wait_for(lambda: self._try("SELECT 1", db="postgres"), timeout, interval=0.1,
                 what="postgres accepting connections")
        return self

    def _try(self, sql, db="herald"):
        r = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER,
                            "-d", db, "-Atq", "-c", sql], capture_output=True, text=True)
        return r.returncode == 0

    def create_db(self):
        self.sql("CREATE DATABASE herald", db="postgres")
        return self

    def sql(self, sql, db="herald"):
        """Runs sql with psql and returns its unaligned output (rows separated by newlines)."""
        r = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER,
                            "-d", db, "-Atq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"psql failed: {r.stderr.strip()}")
        return r.stdout.strip()

    def freeze(self):
        """SIGSTOP the postmaster and every process it started: a hung host, where TCP still
        accepts and nothing answers. Stopping the postmaster alone leaves its backends
        serving. thaw() undoes it."""
        self.frozen = [self.pid] + child_pids(self.pid)
        for pid in self.frozen:
            os.kill(pid, signal.SIGSTOP)

    def thaw(self):
        for pid in getattr(self, "frozen", []):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.frozen = []

    def stop_fast(self):
        """Stops the server (SIGINT = fast shutdown) and waits for it."""
        self.signal(2)
        return self.wait_exit(30)


def make_standby(workdir, primary, settings=None):
    """A streaming standby of primary, made with pg_basebackup -R (asynchronous unless the
    primary sets synchronous_standby_names); not started."""
    sb = PostgresServer(workdir)
    sb.settings = dict(settings or {})
    os.makedirs(sb.dir, exist_ok=True)
    if sb.user:
        shutil.chown(sb.dir, sb.user)
    subprocess.run(sb._as_user([pg_bin("pg_basebackup"), "-h", "127.0.0.1", "-p",
                                str(primary.port), "-U", PG_USER, "-D", sb.data, "-R",
                                "-X", "stream", "-c", "fast"]),
                   check=True, capture_output=True, timeout=60)
    return sb


class HistoryTestCase(HeraldTestCase):
    """A HeraldTestCase that can also start PostgreSQL with the Herald schema."""

    def start_postgres(self, port=None, settings=None):
        pg = PostgresServer(self.tmp, port)
        pg.settings = dict(settings or {})
        self._procs.append(pg)
        self.addCleanup(pg.kill)
        pg.init().start().create_db()
        return pg

    def start_standby(self, primary, settings=None):
        """make_standby, registered for cleanup."""
        sb = make_standby(self.tmp, primary, settings)
        self._procs.append(sb)
        self.addCleanup(sb.kill)
        return sb.start()

    def restart_postgres(self, old):
        """Starts the stopped server `old` again on the same data directory and port."""
        pg = PostgresServer(self.tmp, old.port)
        pg.data, pg.dir = old.data, old.dir
        self._procs.append(pg)
        self.addCleanup(pg.kill)
        return pg.start()

    def start_herald_with_history(self, redis, pg, *args, **kw):
        """Starts herald on pg; unless wait=False, returns once its pool is connected, since
        /readyz does not wait for PostgreSQL (live delivery does not need it)."""
        h = self.start_herald(redis, "--database-url", pg.url, "--migrate-on-start", *args,
                              **kw)
        if kw.get("wait", True):
            h.wait_metric("herald_db_up", lambda v: v == 1)
        return h

    def herald_cli(self, *args, pg=None, redis=None, check=True):
        """Runs `herald <args>` (migrate, publish) and returns its stdout."""
        from harness import herald_bin
        argv = [herald_bin()] + list(args)
        if pg:
            argv += ["--database-url", pg.url]
        if redis:
            argv += ["--redis-url", redis if isinstance(redis, str) else redis.url]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr}")
        return r


def wait_seconds(s):
    time.sleep(s)
