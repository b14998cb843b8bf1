#!/usr/bin/python3
"""A Docker engine and the images Herald's container test needs, made without a registry.

- `Engine.start()` uses a running engine, or starts `dockerd` (Debian's docker.io) as root and
  stops it again in `Engine.stop()`. Where none can run it raises `Unavailable` with the reason.
- `base_images()` makes `debian:bookworm` and `debian:bookworm-slim` (the names deploy/Dockerfile
  builds FROM): one `debootstrap --variant=minbase bookworm` root file system, kept as a tarball
  in $HERALD_IMAGE_CACHE (default /var/cache/herald-test) so that later runs on the machine only
  `docker import` it, and not even that while the images exist.
- `stand_ins()` builds tests/deploy/images/{redis,postgres,nginx} under the names
  deploy/docker-compose.yml uses. An image of such a name without the stand-in label is a real
  one (pulled where a registry is reachable) and is left as it is.

Run as a script (`python3 tests/deploy/engine.py`) it prepares everything, for a developer who
wants to run `docker build` or `docker compose up` by hand.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CACHE = os.environ.get("HERALD_IMAGE_CACHE", "/var/cache/herald-test")
MIRROR = os.environ.get("HERALD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
LABEL = "org.herald.stand-in"
BASE_IMAGES = ("debian:bookworm", "debian:bookworm-slim")
STAND_INS = {  # image name -> folder under tests/deploy/images
    "redis:7.0-bookworm": "redis",
    "postgres:15-bookworm": "postgres",
    "nginx:1.26-bookworm": "nginx",
}


class Unavailable(Exception):
    """No container engine can run here (the reason is the message)."""


def docker(*args, check=True, timeout=900, quiet=False):
    """Runs the docker client; returns its CompletedProcess (text, stdout and stderr kept)."""
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                       cwd=REPO)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({r.returncode}):\n"
                             f"{r.stdout[-3000:]}{r.stderr[-3000:]}")
    if not quiet and os.environ.get("HERALD_TEST_VERBOSE"):
        sys.stderr.write(r.stdout + r.stderr)
    return r


def image_label(name):
    """None when the image does not exist, else its stand-in label ('' for a real image)."""
    r = docker("image", "inspect", "-f", f'{{{{index .Config.Labels "{LABEL}"}}}}', name,
               check=False, quiet=True)
    if r.returncode != 0:
        return None
    return r.stdout.strip().replace("<no value>", "")


class Engine:
    def __init__(self):
        self.proc = None       # the dockerd this object started, if any
        self.log_path = None

    @staticmethod
    def answers():
        try:
            return docker("info", "--format", "{{.ServerVersion}}", check=False,
                          timeout=20, quiet=True).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def start(self, timeout=60):
        if shutil.which("docker") is None:
            raise Unavailable("no docker client (deploy/install-deps.sh --test installs docker.io)")
        if self.answers():
            return self
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise Unavailable("no running engine and no dockerd "
                              "(deploy/install-deps.sh --test installs docker.io)")
        if os.geteuid() != 0:
            raise Unavailable("no running engine, and dockerd needs root")
        fd, self.log_path = tempfile.mkstemp(prefix="herald-dockerd-", suffix=".log")
        # a session of its own: Ctrl-C on the test does not reach it before stop() runs
        self.proc = subprocess.Popen([dockerd], stdin=subprocess.DEVNULL, stdout=fd,
                                     stderr=fd, start_new_session=True)
        os.close(fd)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise Unavailable(f"dockerd did not come up:\n{tail}")
            time.sleep(0.5)
        return self

    def log_tail(self, lines=20):
        if not self.log_path:
            return ""
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @staticmethod
    def nofile_limit():
        """The open-file limit a container can be given: the engine's own hard limit (a
        compose `ulimits: nofile` above it fails with 'error setting rlimit type 7')."""
        r = docker("run", "--rm", BASE_IMAGES[1], "sh", "-c", "ulimit -Hn")
        value = r.stdout.strip()
        return None if value == "unlimited" else int(value)


def _debootstrap(tarball):
    """debootstrap bookworm (minbase) and pack it; ~25 s with a near mirror."""
    if shutil.which("debootstrap") is None:
        raise Unavailable("no debootstrap (deploy/install-deps.sh --test installs it)")
    os.makedirs(os.path.dirname(tarball), exist_ok=True)
    root = tempfile.mkdtemp(prefix="herald-bookworm-")
    try:
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", root, MIRROR],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=900)
        # what an image does not need, and what apt fetches again in each build
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            d = os.path.join(root, sub)
            for name in os.listdir(d):
                p = os.path.join(d, name)
                if os.path.isfile(p):
                    os.unlink(p)
        partial = tarball + ".partial"
        subprocess.run(["tar", "-C", root, "--numeric-owner", "-cf", partial, "."],
                       check=True, timeout=300)
        os.replace(partial, tarball)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def base_images():
    """Makes the Debian base images that are missing; returns what was done, for the log."""
    missing = [n for n in BASE_IMAGES if image_label(n) is None]
    if not missing:
        return "base images present"
    tarball = os.path.join(CACHE, "bookworm-minbase.tar")
    done = []
    if not os.path.exists(tarball):
        _debootstrap(tarball)
        done.append(f"debootstrap -> {tarball}")
    docker("import", "-c", f"LABEL {LABEL}=debootstrap-bookworm-minbase",
           "-c", 'CMD ["bash"]', tarball, missing[0])
    for name in missing[1:]:
        docker("tag", missing[0], name)
    done.append(f"imported as {', '.join(missing)}")
    return "; ".join(done)


def stand_ins():
    """Builds the stand-in images (docker's layer cache makes a rebuild take a second)."""
    built = []
    for name, folder in STAND_INS.items():
        if image_label(name) == "":
            continue  # a real image of that name: use it
        docker("build", "-t", name, os.path.join(HERE, "images", folder))
        built.append(name)
    return built


def main():
    engine = Engine().start()
    print(base_images())
    print("stand-ins built:", ", ".join(stand_ins()) or "none (real images present)")
    if engine.proc is not None:
        print(f"dockerd started here (pid {engine.proc.pid}) is left running; its log: "
              f"{engine.log_path}")


if __name__ == "__main__":
    try:
        main()
    except Unavailable as exc:
        sys.exit(f"no container engine: {exc}")
