"""Deployment files: Dockerfile, Kubernetes manifests, docker-compose and the nginx proxy.

No container engine or cluster is needed:

- the Dockerfile is parsed and checked for structure, and its builder/runtime ``pip`` commands are
  run as written (paths mapped into a temp dir): wheels of the project and its dependencies, then
  a fresh venv installed from those wheels only, serving ``gunicorn -c gunicorn.conf.py`` and
  answering the image's own HEALTHCHECK command (``slow``, about 30-60 s);
- the Kubernetes manifests are validated against the bundled OpenAPI schemas of
  ``kubernetes-validate`` (strict) and cross-checked (selectors, ports, probes, secrets, targets);
- nginx (skipped when there is no ``nginx`` binary) runs deploy/nginx/nginx.conf +
  wsi_streamer.conf, templated onto free loopback ports, in front of a real gunicorn.
"""

from __future__ import annotations

import fnmatch
import grp
import http.client
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import venv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest
import yaml

from tests.servers import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE = REPO_ROOT / "docker-compose.yml"
K8S_DIR = REPO_ROOT / "deploy" / "kubernetes"
NGINX_DIR = REPO_ROOT / "deploy" / "nginx"
SMALL_SLIDE = "CMU-1-Small-Region.svs"


# ---------------------------------------------------------------------------------------------
# helpers


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} not open after {timeout} s:\n{tail(log)}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def fetch(port: int, path: str, method: str = "GET",
          headers: dict[str, str] | None = None) -> Reply:
    """One request with ``path`` sent byte for byte (no client-side normalisation of %2F)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


def start(cmd: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, **kwargs)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Stop a process this module started (and, if it will not stop, its own process group)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# ---------------------------------------------------------------------------------------------
# Dockerfile


@dataclass
class Instruction:
    keyword: str
    args: str

    def flags_and_rest(self) -> tuple[dict[str, str], str]:
        """``--from=builder --chown=1:1 a b`` -> ({"from": "builder", ...}, "a b")."""
        flags: dict[str, str] = {}
        rest = self.args
        while m := re.match(r"--([\w-]+)(?:=(\S*))?\s+", rest):
            flags[m.group(1)] = m.group(2) or ""
            rest = rest[m.end():]
        return flags, rest

    def exec_form(self) -> list[str] | None:
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        return value if isinstance(value, list) else None


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for ins in self.all("ENV"):
            for token in shlex.split(ins.args):
                key, sep, value = token.partition("=")
                assert sep, f"use ENV key=value, got {ins.args!r}"
                env[key] = value
        return env


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and the stages of a Dockerfile (continuations joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "dangling line continuation"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert m, f"bad FROM: {rest!r}"
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda v: args[v.group(1) or v.group(2)],
                           m.group(1))
            stages.append(Stage(image, m.group(2)))
        elif keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append(Instruction(keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


def pip_commands(stage: Stage) -> list[tuple[dict[str, str], list[str]]]:
    """(RUN flags, argv) of every ``pip ...`` command a stage runs (``&&`` chains split)."""
    found = []
    for ins in stage.all("RUN"):
        flags, rest = ins.flags_and_rest()
        for part in re.split(r"&&|;", rest):
            argv = shlex.split(part)
            if argv and argv[0] in ("pip", "pip3") or argv[:3] == ["python", "-m", "pip"]:
                found.append((flags, argv[3:] if argv[0] == "python" else argv[1:]))
    return found


def test_dockerfile_structure(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "multi-stage build expected"
    builder, runtime = stages[0], stages[-1]
    assert builder.name == "builder"
    assert runtime.image == "python:3.11-slim"
    # The builder makes wheels; the runtime installs only those, offline.
    assert [argv[0] for _, argv in pip_commands(builder)] == ["wheel"]
    runtime_pips = pip_commands(runtime)
    assert [argv[0] for _, argv in runtime_pips] == ["install"]
    flags, argv = runtime_pips[0]
    assert "--no-index" in argv and any(a.startswith("--find-links") for a in argv)
    assert "from=builder" in flags.get("mount", ""), "wheels must come from the builder stage"
    assert not any(ins.keyword == "RUN" and re.search(r"\b(gcc|build-essential)\b", ins.args)
                   for ins in runtime.instructions)

    users = runtime.all("USER")
    assert users, "the runtime stage must drop root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), user
    assert user.isdigit(), "numeric uid, so Kubernetes runAsNonRoot can verify it"
    keywords = [i.keyword for i in runtime.instructions]
    assert keywords.index("USER") < keywords.index("CMD")
    assert "RUN" not in keywords[keywords.index("USER"):], "nothing runs as root after USER"

    (health,) = runtime.all("HEALTHCHECK")
    assert "/health" in health.args and "urllib" in health.args
    assert "python" in health.args and "curl" not in health.args
    assert [e.args for e in runtime.all("EXPOSE")] == ["3000"]

    env = runtime.env()
    assert env["WSI_PORT"] == "3000"
    for name in ("WSI_SLIDES_DIR", "WSI_TILE_CACHE_DIR"):
        path = env[name]
        assert path.startswith("/") and not path.startswith("/tmp")
        # created and owned by the runtime user before it takes over
        owning = [i.args for i in runtime.all("RUN") if "chown" in i.args and user in i.args]
        assert any(path in args or str(Path(path).parent) in args for args in owning), name

    (cmd,) = runtime.all("CMD")
    assert cmd.exec_form() == ["gunicorn", "-c", "gunicorn.conf.py"]
    workdir = runtime.all("WORKDIR")[-1].args
    copies = [i.flags_and_rest()[1].split() for i in runtime.all("COPY")]
    assert any(c[0] == "gunicorn.conf.py" and c[-1] in ("./gunicorn.conf.py", "./",
                                                          f"{workdir}/gunicorn.conf.py")
               for c in copies), "gunicorn.conf.py must be in the WORKDIR"


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            patterns.append((negate, line.lstrip("!").strip("/")))
    return patterns


def docker_ignored(rel: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent folder
    matches everything below it."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for negate, pattern in patterns:
        regex = fnmatch.translate(pattern.replace("**/", "\0")).replace("\0", "(?:.*/)?")
        if any(re.match(regex, p) for p in prefixes):
            ignored = not negate
    return ignored


def build_context(dest: Path) -> Path:
    """Copy what ``docker build .`` would send (the repo minus .dockerignore) to ``dest``."""
    patterns = dockerignore_patterns()
    for path in REPO_ROOT.rglob("*"):
        rel = path.relative_to(REPO_ROOT).as_posix()
        if path.is_file() and not docker_ignored(rel, patterns):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return dest


def test_dockerignore_keeps_the_build_lean(tmp_path: Path) -> None:
    patterns = dockerignore_patterns()
    for kept in ("pyproject.toml", "setup.cfg", "gunicorn.conf.py", "wsi_streamer/__init__.py",
                 "wsi_streamer/server/app.py"):
        assert not docker_ignored(kept, patterns), kept
    for dropped in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "slides/a.svs",
                    "wsi_streamer/__pycache__/x.pyc", "bench/out/x.json", ".hypothesis/x"):
        assert docker_ignored(dropped, patterns), dropped
    # package data (viewer page, OpenSeadragon) must reach the wheel
    static = [p.relative_to(REPO_ROOT).as_posix()
              for p in (REPO_ROOT / "wsi_streamer").rglob("*") if p.is_file()
              and "__pycache__" not in p.parts]
    assert static and not [p for p in static if docker_ignored(p, patterns)]


def _map_paths(argv: list[str], mapping: dict[str, Path]) -> list[str]:
    out = []
    for arg in argv:
        for container, host in mapping.items():
            arg = re.sub(rf"(^|=){re.escape(container)}(?=/|$)", rf"\g<1>{host}", arg)
        out.append(arg)
    return out


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_docker_build_steps_produce_a_working_server(stages: list[Stage],
                                                     tmp_path: Path) -> None:
    """Run the Dockerfile's own pip commands: builder ``pip wheel`` in a copy of the build
    context, runtime ``pip install`` into a fresh venv from those wheels only; then serve with
    the image's CMD from its WORKDIR and pass its HEALTHCHECK."""
    builder, runtime = stages[0], stages[-1]
    context = build_context(tmp_path / "context")
    src = tmp_path / "builder-src"
    src.mkdir()
    assert builder.all("WORKDIR")[-1].args == "/src"
    for ins in builder.all("COPY"):
        flags, rest = ins.flags_and_rest()
        *sources, dest = rest.split()
        assert not flags.get("from"), "builder copies from the build context only"
        for pattern in sources:
            for path in sorted(context.glob(pattern.rstrip("/"))):
                target = src / dest
                if path.is_dir():
                    shutil.copytree(path, target, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)  # dest is a folder ("./")
                    shutil.copy2(path, target / path.name)
    mapping = {"/wheels": tmp_path / "wheels", "/src": src}
    env = {**os.environ, **builder.env(), "PIP_NO_CACHE_DIR": "0"}

    def pip(python: Path, argv: list[str], cwd: Path) -> None:
        done = subprocess.run([str(python), "-m", "pip", *_map_paths(argv, mapping)], cwd=cwd,
                              env=env, capture_output=True, text=True, timeout=200)
        assert done.returncode == 0, f"pip {argv} failed:\n{done.stdout[-3000:]}{done.stderr}"

    for _, argv in pip_commands(builder):
        pip(Path(sys.executable), argv, src)
    wheels = sorted(p.name for p in (tmp_path / "wheels").glob("*.whl"))
    assert any(w.startswith("wsi_streamer-") for w in wheels), wheels

    runtime_venv = tmp_path / "runtime-venv"
    venv.EnvBuilder(with_pip=True).create(runtime_venv)
    python = runtime_venv / "bin" / "python"
    for _, argv in pip_commands(runtime):
        pip(python, argv, tmp_path)
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, check=True)
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert {"wsi-streamer", "gunicorn", "flask"} <= installed
    assert not installed & {"pytest", "moto", "openslide-python", "hypothesis"}, installed

    workdir = tmp_path / "app"
    workdir.mkdir()
    shutil.copy2(context / "gunicorn.conf.py", workdir / "gunicorn.conf.py")
    port = free_port()
    image_env = runtime.env()
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("WSI_")}
    run_env.update(image_env)
    run_env.update(
        PATH=f"{runtime_venv / 'bin'}:{os.environ.get('PATH', '')}",
        WSI_HOST="127.0.0.1", WSI_PORT=str(port), WSI_WORKERS="1", WSI_THREADS="2",
        WSI_SLIDES_DIR=str(tmp_path / "slides"), WSI_TILE_CACHE_DIR=str(tmp_path / "tiles"),
        HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"))
    assert image_env["HOME"] == "/tmp", "the image user has no home of its own"
    (tmp_path / "home").mkdir()
    (tmp_path / "tmp").mkdir()
    (tmp_path / "slides").mkdir()
    cmd = runtime.all("CMD")[0].exec_form()
    assert cmd is not None
    check = subprocess.run([*cmd, "--check-config"], cwd=workdir, env=run_env,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    log = tmp_path / "gunicorn.log"
    proc = start(cmd, log, cwd=workdir, env=run_env)
    try:
        wait_for_port(port, proc, log, timeout=30)
        health_cmd = runtime.all("HEALTHCHECK")[0].args.split(" CMD ", 1)[1]
        probe = subprocess.run(["/bin/sh", "-c", health_cmd], env=run_env, cwd=workdir,
                               capture_output=True, text=True, timeout=30)
        assert probe.returncode == 0, probe.stderr + tail(log)
        assert fetch(port, "/health").json()["status"] == "healthy"
    finally:
        stop(proc, signal.SIGINT)
    assert "Failed" not in log.read_text(), tail(log)


# ---------------------------------------------------------------------------------------------
# Kubernetes


def load_manifests(directory: Path = K8S_DIR) -> list[dict[str, Any]]:
    """The objects a kustomization yields (offline, without kubectl): its resource files, the
    kustomizations it lists as resources, and the ConfigMaps of ``configMapGenerator`` (names
    without kustomize's hash suffix)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization.get("resources", []):
        path = directory / name
        if path.is_dir():
            docs.extend(load_manifests(path))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for gen in kustomization.get("configMapGenerator", []):
        data = {}
        for entry in gen.get("files", []):
            key, _, file = entry.rpartition("=")
            data[key or Path(file).name] = (directory / file).read_text()
        docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": gen["name"]}, "data": data})
    return docs


def _deployment_containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    return list(dep["spec"]["template"]["spec"]["containers"])


def front_door(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """The container the Service's (single) port reaches and, when it is nginx, the texts
    (nginx.conf, wsi_streamer.conf) it runs from its ConfigMap; None when the door is not
    nginx."""
    (svc,) = [d for d in docs if d["kind"] == "Service"]
    (svc_port,) = svc["spec"]["ports"]
    target = svc_port["targetPort"]
    (door,) = [c for c in _deployment_containers(docs)
               if any(target in (p.get("name"), p["containerPort"]) for p in c.get("ports", []))]
    if "nginx" not in door["image"]:
        return door, None
    argv = door["command"] + door["args"]
    assert argv[0] == "nginx"
    prefix, conf = argv[argv.index("-p") + 1], argv[argv.index("-c") + 1]
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [m for m in door["volumeMounts"] if m["mountPath"].rstrip("/") == prefix]
    cm_name = volumes[mount["name"]]["configMap"]["name"]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name]
    main = cm["data"][conf]
    (include,) = re.findall(r"^\s*include\s+(\S+);", main, re.M)
    return door, (main, cm["data"][include])


APP_CONFIG = "ConfigMap/wsi-streamer-config"
NGINX_CONFIG = "ConfigMap/wsi-streamer-nginx"
HEALTHCHECK_PY = ("import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health'"
                  " % os.environ.get('WSI_PORT', '3000'), timeout=4)")


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Objects keyed by kind, or by ``kind/name`` for a kind that occurs more than once."""
    kinds = [d["kind"] for d in docs]
    out = {}
    for d in docs:
        key = d["kind"] if kinds.count(d["kind"]) == 1 else f"{d['kind']}/{d['metadata']['name']}"
        assert key not in out, f"duplicate {key}"
        out[key] = d
    return out


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    return _by_kind(load_manifests())


def test_kubernetes_manifests_match_the_api_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate",
                             reason="kubernetes-validate (test extra) bundles the schemas")
    for doc in load_manifests():
        for version in ("1.29.0", kv.latest_version()):
            try:
                kv.validate(doc, version, strict=True)
            except kv.SchemaNotFoundError:
                assert version != kv.latest_version(), doc["kind"]  # old schemas may be dropped
            except kv.ValidationError as exc:
                pytest.fail(f"{doc['kind']} invalid for Kubernetes {version}: {exc}")


def test_kubernetes_api_versions(manifests: dict[str, dict[str, Any]]) -> None:
    expected = {"Deployment": "apps/v1", "Service": "v1", APP_CONFIG: "v1", NGINX_CONFIG: "v1",
                "Secret": "v1", "HorizontalPodAutoscaler": "autoscaling/v2",
                "PodDisruptionBudget": "policy/v1"}
    assert {k: d["apiVersion"] for k, d in manifests.items()} == expected
    for doc in manifests.values():
        assert doc["metadata"]["name"]


def _container(deployment: dict[str, Any], name: str = "wsi-streamer") -> dict[str, Any]:
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]
                    if c["name"] == name]
    return dict(container)


def _assert_hardened(c: dict[str, Any], pod_sc: dict[str, Any]) -> None:
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True, c["name"]
    assert sc["allowPrivilegeEscalation"] is False, c["name"]
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
    seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile")
    assert seccomp == {"type": "RuntimeDefault"}, c["name"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), (c["name"], kind)


def test_kubernetes_deployment(manifests: dict[str, dict[str, Any]]) -> None:
    dep = manifests["Deployment"]
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert {c["name"] for c in pod["spec"]["containers"]} == {"nginx", "wsi-streamer"}
    c = _container(dep)
    config = manifests[APP_CONFIG]["data"]
    assert int(config["WSI_PORT"]) == 3000
    assert c.get("args", ["gunicorn", "-c", "gunicorn.conf.py"]) == \
        ["gunicorn", "-c", "gunicorn.conf.py"]
    # gunicorn listens on loopback only, so the kubelet's HTTP probes (to the pod IP) cannot
    # reach it: its probes run the image's HEALTHCHECK command inside the container.
    # Liveness never touches storage (/health); readiness does (/health/ready, issue 23).
    assert c["livenessProbe"]["exec"]["command"] == ["python", "-c", HEALTHCHECK_PY]
    assert c["readinessProbe"]["exec"]["command"] == [
        "python", "-c", HEALTHCHECK_PY.replace("/health'", "/health/ready'")]
    health = [i.args for i in parse_dockerfile(DOCKERFILE.read_text())[1][-1].all("HEALTHCHECK")]
    assert health and HEALTHCHECK_PY in health[0], "same command as the image's HEALTHCHECK"

    # config from the ConfigMap, the secret from the Secret, never inline
    assert {"configMapRef": {"name": manifests[APP_CONFIG]["metadata"]["name"]}} in c["envFrom"]
    assert "WSI_AUTH_SECRET" not in config
    (auth,) = [e for e in c["env"] if e["name"] == "WSI_AUTH_SECRET"]
    ref = auth["valueFrom"]["secretKeyRef"]
    secret = manifests["Secret"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret.get("stringData", {}) | secret.get("data", {})
    assert all("value" not in e or "SECRET" not in e["name"] for e in c.get("env", []))

    # hardening, for both containers
    pod_sc = pod["spec"]["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc.get("runAsUser", 1) != 0
    for container in pod["spec"]["containers"]:
        _assert_hardened(container, pod_sc)

    # the writable paths a read-only root needs
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    # The cache folder is strictly inside its emptyDir: Kubernetes makes an emptyDir
    # world-writable, which the app refuses as a cache folder (issue 11.3); a folder inside
    # it is created 0700 by the app and accepted.
    cache_dir = config["WSI_TILE_CACHE_DIR"]
    (cache_mount,) = [m for m in mounts if cache_dir.startswith(m.rstrip("/") + "/")]
    assert "emptyDir" in volumes[mounts[cache_mount]]
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert volumes[mounts["/tmp"]]["emptyDir"].get("sizeLimit")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="mounting a tmpfs in a private mount namespace needs root")
def test_kubernetes_cache_folder_starts_in_a_world_writable_empty_dir(
        manifests: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """What the pod does at startup: the emptyDir (a root-owned mount of mode 0777, mounted
    here in a private mount namespace) at the mount path, the app's cache at the ConfigMap's
    folder inside it (a plain world-writable parent that is no mount point is refused:
    ``tests/unit/slide/test_cachedir.py``)."""
    config = manifests[APP_CONFIG]["data"]
    mounts = [m["mountPath"] for m in _container(manifests["Deployment"])["volumeMounts"]]
    (mount,) = [m for m in mounts if config["WSI_TILE_CACHE_DIR"].startswith(m + "/")]
    empty_dir = tmp_path / "emptydir"
    empty_dir.mkdir()
    inside = empty_dir / os.path.relpath(config["WSI_TILE_CACHE_DIR"], mount)
    (tmp_path / "slides").mkdir()
    check = ("import os, sys\n"
             "from wsi_streamer.config import Config\n"
             "from wsi_streamer.server.app import create_app\n"
             f"app = create_app(Config(slides_dir={str(tmp_path / 'slides')!r}, "
             f"tile_cache_dir={str(inside)!r}))\n"
             "assert app.test_client().get('/health').status_code == 200\n"
             f"print(oct(os.stat({str(inside)!r}).st_mode & 0o777), "
             f"oct(os.stat({str(empty_dir)!r}).st_mode & 0o7777))\n")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           f"mount -t tmpfs -o size=4m,mode=0777 tmpfs {empty_dir} && "
                           f'exec "$0" -c "$1"', sys.executable, check],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0o700", "0o777"]


def _size(text: str) -> int:
    """``1g`` (nginx) or ``2Gi`` (Kubernetes) in bytes."""
    m = re.fullmatch(r"(\d+)([kmg])i?", text.lower())
    assert m, text
    return int(m.group(1)) << (10 * " kmg".index(m.group(2)))


def test_kubernetes_gunicorn_is_reachable_only_through_nginx(
        manifests: dict[str, dict[str, Any]]) -> None:
    """The Service targets the nginx container's port; gunicorn binds the pod's loopback and
    declares no port; nginx runs deploy/nginx (ConfigMap generated from those files) and
    proxies to the loopback port gunicorn listens on."""
    docs = load_manifests()
    dep = manifests["Deployment"]
    config = manifests[APP_CONFIG]["data"]
    app = _container(dep)
    assert config["WSI_HOST"] == "127.0.0.1", "gunicorn must bind the pod's loopback only"
    assert not [e for e in app.get("env", []) if e["name"] in ("WSI_HOST", "WSI_PORT")]
    assert "--bind" not in app.get("args", []) and "-b" not in app.get("args", [])
    assert not app.get("ports"), "gunicorn's port is not a port of the pod"

    door, nginx_conf = front_door(docs)
    assert door["name"] == "nginx", "the Service must target nginx, never gunicorn"
    assert nginx_conf is not None
    main, site = nginx_conf
    (svc_port,) = manifests["Service"]["spec"]["ports"]
    (door_port,) = [p for p in door["ports"]
                    if svc_port["targetPort"] in (p["name"], p["containerPort"])]
    assert re.search(rf"^\s*listen {door_port['containerPort']};", site, re.M)
    assert re.search(rf"^\s*server 127\.0\.0\.1:{config['WSI_PORT']}\b", site, re.M)
    # one copy of the nginx config: the ConfigMap is generated from deploy/nginx
    data = manifests[NGINX_CONFIG]["data"]
    assert data == {"nginx.conf": (NGINX_DIR / "nginx.conf").read_text(),
                    "wsi_streamer.conf": (NGINX_DIR / "wsi_streamer.conf").read_text()}

    ready = door["readinessProbe"]["httpGet"]
    assert ready["path"] == "/health/ready" and ready["port"] in (door_port["name"],
                                                            door_port["containerPort"])
    # writable paths of nginx.conf / wsi_streamer.conf: emptyDirs, the cache within its limit
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in door["volumeMounts"]}
    assert "emptyDir" in mounts["/tmp/wsi_streamer-nginx"]
    (cache_path, max_size) = re.findall(r"proxy_cache_path (\S+) [^;]*max_size=(\w+)", site)[0]
    (cache_mount,) = [v for path, v in mounts.items() if cache_path.startswith(path + "/")]
    assert _size(max_size) < _size(cache_mount["emptyDir"]["sizeLimit"])


def test_kubernetes_service_hpa_pdb_target_the_deployment(
        manifests: dict[str, dict[str, Any]]) -> None:
    dep = manifests["Deployment"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    c = _container(dep)
    svc = manifests["Service"]
    assert svc["spec"]["selector"].items() <= labels.items()
    nginx = _container(dep, "nginx")
    for port in svc["spec"]["ports"]:
        assert port["targetPort"] in [p["name"] for p in nginx["ports"]] + \
            [p["containerPort"] for p in nginx["ports"]]

    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": dep["metadata"]["name"]}
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert "cpu" in c["resources"]["requests"], "CPU utilisation needs a CPU request"
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"

    pdb = manifests["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert ("minAvailable" in pdb) != ("maxUnavailable" in pdb)


def test_kubernetes_secret_example_is_a_placeholder(manifests: dict[str, dict[str, Any]]) -> None:
    value = manifests["Secret"]["stringData"]["WSI_AUTH_SECRET"]
    assert "REPLACE" in value.upper()
    assert "kubectl create secret" in (K8S_DIR / "secret.example.yaml").read_text()


def test_kustomize_builds_offline(manifests: dict[str, dict[str, Any]]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    done = subprocess.run([kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    # generated names carry kustomize's content hash
    (nginx_cm,) = [d for d in docs if d["metadata"]["name"].startswith("wsi-streamer-nginx-")]
    generated_name = nginx_cm["metadata"]["name"]
    nginx_cm["metadata"]["name"] = "wsi-streamer-nginx"
    built = _by_kind(docs)
    assert set(built) == set(manifests)
    assert built[NGINX_CONFIG]["data"] == manifests[NGINX_CONFIG]["data"]
    assert _container(built["Deployment"])["image"].count(":") == 1
    volumes = built["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "nginx-conf", "configMap": {"name": generated_name}} in volumes


# ---------------------------------------------------------------------------------------------
# docker-compose


def test_compose_stack() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"minio", "createbucket", "wsi_streamer", "nginx"} <= set(services)
    assert "minio" in services["minio"]["image"] and "mc" in services["createbucket"]["image"]
    assert services["createbucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb" in "\n".join(services["createbucket"]["entrypoint"])
    app = services["wsi_streamer"]
    assert app["build"] == "."
    assert app["depends_on"]["createbucket"]["condition"] == "service_completed_successfully"
    env = app["environment"]
    assert env["WSI_S3_ENDPOINT"] == "http://minio:9000" and env["WSI_S3_BUCKET"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
    nginx = services["nginx"]
    mounts = [v.split(":")[0] for v in nginx["volumes"]]
    assert "./deploy/nginx/wsi_streamer.conf" in mounts
    # nginx reaches gunicorn at the conf's 127.0.0.1:3000 by sharing the app's network
    assert nginx["network_mode"] == "service:wsi_streamer"
    # ... and is the only way in: gunicorn binds the shared loopback, only nginx's port is
    # published (on the app service, whose network nginx uses)
    assert env["WSI_HOST"] == "127.0.0.1"
    assert [p.rsplit(":", 1)[-1] for p in app["ports"]] == ["8080"]
    for name, service in services.items():
        if name != "wsi_streamer":
            assert not any(str(p).rsplit(":", 1)[-1] in ("3000", "8080")
                           for p in service.get("ports", [])), name


# ---------------------------------------------------------------------------------------------
# nginx: static checks


def test_nginx_conf_static() -> None:
    conf = (NGINX_DIR / "wsi_streamer.conf").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    assert re.search(r"^\s*merge_slashes off;", code, re.M)
    assert re.search(r"^\s*tcp_nodelay on;", code, re.M)
    passes = re.findall(r"proxy_pass\s+([^;]+);", code)
    assert passes and all(re.fullmatch(r"http://[\w.-]+", p) for p in passes), \
        f"proxy_pass must not have a URI part (it would re-encode %2F): {passes}"
    assert re.search(r"proxy_http_version 1\.1;", code)
    assert re.search(r'proxy_set_header Connection "";', code)
    assert re.search(r"upstream wsi_streamer \{[^}]*keepalive \d+;", code)
    assert "proxy_cache_valid" not in code, "TTL comes from the upstream's Cache-Control"
    # keyed by the decoded path and the route's own parameters (issue 26, item 9)
    keys = re.findall(r"proxy_cache_key ([^;]+);", code)
    assert keys and all(k.startswith("$scheme$proxy_host$uri?quality=$arg_quality")
                        for k in keys), keys
    assert "proxy_ignore_headers" not in code
    assert re.search(r"proxy_read_timeout \d+s;", code)
    assert re.search(r"proxy_connect_timeout \d+s;", code)
    assert re.search(r"client_max_body_size \d+[km]?;", code)
    (gzip_types,) = re.findall(r"gzip_types ([^;]+);", code)
    assert "image/jpeg" not in gzip_types and "application/json" in gzip_types
    assert "X-Cache-Status $upstream_cache_status" in code
    # never a stale entry: it would outlive a signed URL's exp and answer while the app is down
    assert "proxy_cache_use_stale" not in code and "proxy_cache_background_update" not in code
    cached = re.findall(r"location [^{]*\{[^}]*proxy_cache wsi_streamer;[^}]*\}", code)
    assert len(cached) == 3
    for block in cached:
        (bypass,) = re.findall(r"proxy_cache_bypass (\$wsi_\w+_uncacheable);", block)
        assert f"proxy_no_cache {bypass};" in block
    # the access log: a format of our own, without query strings or raw referers
    (fmt,) = re.findall(r"log_format wsi_streamer ((?:'[^']*'\s*)+);", code)
    for leak in ("$request ", "$request\"", "$request_uri", "$args", "$query_string",
                 "$http_referer", "$arg_"):
        assert leak not in fmt, leak
    assert re.findall(r"^\s*access_log ([^;]+);", code, re.M) == [
        "/dev/stdout wsi_streamer", "off", "off"]  # the two probes (/health, /health/ready)
    for status in ("400", "413", "414", "494", "502", "504"):
        assert re.search(rf"^\s*error_page [^;]*\b{status}\b", code, re.M), status


# ---------------------------------------------------------------------------------------------
# nginx: live


def _sub_once(text: str, pattern: str, repl: str) -> str:
    """Replace ``pattern`` in the one non-comment line holding it (config drift fails here)."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines)
            if not line.lstrip().startswith("#") and re.search(pattern, line)]
    assert len(hits) == 1, f"expected exactly one {pattern!r} in the nginx config: {hits}"
    lines[hits[0]] = re.sub(pattern, lambda _: repl, lines[hits[0]])
    return "".join(lines)


def render_nginx(run_dir: Path, listen_port: int, upstream_port: int,
                 site: str | None = None, main: str | None = None) -> Path:
    """deploy/nginx/{nginx,wsi_streamer}.conf with ports and every path moved into run_dir;
    ``site``/``main``: texts to use instead of those files (e.g. from a ConfigMap)."""
    if site is None:
        site = (NGINX_DIR / "wsi_streamer.conf").read_text()
    site = _sub_once(site, r"server 127\.0\.0\.1:3000\b", f"server 127.0.0.1:{upstream_port}")
    site = _sub_once(site, r"listen 8080;", f"listen 127.0.0.1:{listen_port};")
    site = _sub_once(site, r"proxy_cache_path /var/cache/nginx/wsi_streamer\b",
                     f"proxy_cache_path {run_dir / 'cache'}")
    if main is None:
        main = (NGINX_DIR / "nginx.conf").read_text()
    main = _sub_once(main, r"worker_processes \w+;", "worker_processes 2;")
    assert main.count("/tmp/wsi_streamer-nginx") >= 5
    main = main.replace("/tmp/wsi_streamer-nginx", str(run_dir))
    assert re.search(r"^daemon off;", main, re.M) and "include wsi_streamer.conf;" in main
    if os.geteuid() == 0:  # workers would otherwise drop to `nobody`, locked out of run_dir
        user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"
        main = user + main
    (run_dir / "wsi_streamer.conf").write_text(site)
    conf = run_dir / "nginx.conf"
    conf.write_text(main)
    return conf


def nginx_binary() -> str:
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
    if binary is None:
        pytest.skip("no nginx binary (CI installs the Debian nginx package)")
    return binary


NginxFactory = Callable[[int], int]


def run_nginx(binary: str, run_dir: Path, conf: Path, port: int) -> subprocess.Popen[bytes]:
    """``nginx -t`` the rendered config, then start it and wait for ``port``."""
    cmd = [binary, "-e", "stderr", "-p", str(run_dir), "-c", str(conf)]
    check = subprocess.run([*cmd, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, f"nginx -t failed:\n{check.stderr}"
    log = run_dir / "nginx.log"
    proc = start(cmd, log)
    wait_for_port(port, proc, log, timeout=15)
    return proc


@pytest.fixture
def nginx_in_front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxFactory]:
    """Start nginx, with the deploy config, proxying to 127.0.0.1:<upstream>; returns its port."""
    binary = nginx_binary()
    procs: list[subprocess.Popen[bytes]] = []

    def launch(upstream_port: int) -> int:
        run_dir = tmp_path_factory.mktemp("nginx")
        port = free_port()
        conf = render_nginx(run_dir, port, upstream_port)
        procs.append(run_nginx(binary, run_dir, conf, port))
        return port

    yield launch
    for proc in procs:
        stop(proc, signal.SIGTERM)


@pytest.fixture(scope="module")
def gunicorn_server(tmp_path_factory: pytest.TempPathFactory,
                    slide_of_kind: Callable[[str], Path]) -> Iterator[int]:
    """``gunicorn -c gunicorn.conf.py`` from the repo on a free loopback port, local slides:
    an Aperio slide (CMU-1-Small-Region.svs or its generated twin) under that name and as
    folder/slide.svs."""
    nginx_binary()  # skip before starting anything
    source = slide_of_kind("aperio")
    tmp = tmp_path_factory.mktemp("gunicorn")
    slides = tmp / "slides"
    (slides / "folder").mkdir(parents=True)
    shutil.copy2(source, slides / SMALL_SLIDE)
    shutil.copy2(source, slides / "folder" / "slide.svs")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSI_")}
    env.update(WSI_HOST="127.0.0.1", WSI_PORT=str(port), WSI_WORKERS="2", WSI_THREADS="4",
               WSI_SLIDES_DIR=str(slides), WSI_TILE_CACHE_DIR=str(tmp / "tiles"),
               WSI_CACHE_MAX_AGE="600")
    log = tmp / "gunicorn.log"
    proc = start([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], log,
                 cwd=REPO_ROOT, env=env)
    try:
        wait_for_port(port, proc, log, timeout=30)
        yield port
    finally:
        stop(proc, signal.SIGINT)


@pytest.fixture
def proxy(gunicorn_server: int, nginx_in_front: NginxFactory) -> int:
    return nginx_in_front(gunicorn_server)


def fetch_until_hit(port: int, path: str) -> Reply:
    """The first fetch is a MISS; the entry is usable once nginx finished writing it."""
    deadline = time.monotonic() + 5
    while True:
        reply = fetch(port, path)
        if reply.headers.get("x-cache-status") == "HIT" or time.monotonic() > deadline:
            return reply
        time.sleep(0.05)


def test_nginx_health_and_cached_tiles(proxy: int) -> None:
    health = fetch(proxy, "/health")
    assert health.status == 200 and health.json()["status"] == "healthy"
    ready = fetch(proxy, "/health/ready")  # the nginx readiness probe's path (issue 23)
    assert ready.status == 200 and ready.json()["status"] == "ready"
    assert "x-cache-status" not in health.headers

    path = f"/tiles/{SMALL_SLIDE}/0/0/0.jpg"
    first = fetch(proxy, path)
    assert first.status == 200, first.body[:300]
    assert first.headers["content-type"] == "image/jpeg" and first.body[:2] == b"\xff\xd8"
    assert first.headers["x-cache-status"] == "MISS"
    assert first.headers["cache-control"].startswith("public")
    second = fetch_until_hit(proxy, path)
    assert second.headers["x-cache-status"] == "HIT"
    assert second.body == first.body and second.headers["etag"] == first.headers["etag"]

    # conditional request answered from nginx's cache
    cond = fetch(proxy, path, headers={"If-None-Match": first.headers["etag"]})
    assert cond.status == 304

    # a different query is a different cache entry (signed URLs: sig/exp are in the key)
    other = fetch(proxy, path + "?quality=50")
    assert other.status == 200 and other.headers["x-cache-status"] == "MISS"

    # JPEGs are not gzipped
    gz = fetch(proxy, path, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in gz.headers


def test_nginx_slide_ids_with_slash(proxy: int) -> None:
    meta = fetch(proxy, "/slides/folder%2Fslide.svs")
    assert meta.status == 200, meta.body[:300]
    assert meta.json()["slide_id"] == "folder/slide.svs"
    plain = fetch(proxy, "/slides/folder/slide.svs")
    assert plain.status == 200 and plain.json()["slide_id"] == "folder/slide.svs"

    tile = fetch(proxy, "/tiles/folder%2Fslide.svs/0/0/0.jpg")
    assert tile.status == 200 and tile.headers["content-type"] == "image/jpeg"
    assert tile.headers["x-cache-status"] == "MISS"
    same_slide = fetch(proxy, f"/tiles/{SMALL_SLIDE}/0/0/0.jpg")
    assert same_slide.body == tile.body


def test_nginx_dzi_and_thumbnail(proxy: int) -> None:
    dzi = fetch(proxy, f"/slides/{SMALL_SLIDE}/dzi")
    assert dzi.status == 200
    assert "xml" in dzi.headers["content-type"]
    assert b"<Image" in dzi.body and b'TileSize="' in dzi.body and b'Format="jpg"' in dzi.body
    assert "x-cache-status" not in dzi.headers, "descriptors are not proxy-cached"

    width = re.search(rb'Width="(\d+)"', dzi.body)
    height = re.search(rb'Height="(\d+)"', dzi.body)
    assert width and height
    top = (max(int(width.group(1)), int(height.group(1))) - 1).bit_length()  # ceil(log2)
    dzi_tile = f"/slides/folder%2Fslide.svs/dzi_files/{max(0, top - 2)}/0_0.jpg"
    first = fetch(proxy, dzi_tile)
    assert first.status == 200, first.body[:300]
    assert first.headers["x-cache-status"] == "MISS"
    assert fetch_until_hit(proxy, dzi_tile).headers["x-cache-status"] == "HIT"

    thumb = f"/slides/{SMALL_SLIDE}/thumbnail?max_size=128"
    first = fetch(proxy, thumb)
    assert first.status == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.headers["x-cache-status"] == "MISS"
    assert fetch_until_hit(proxy, thumb).headers["x-cache-status"] == "HIT"


def test_nginx_passes_json_errors_through_uncached(proxy: int) -> None:
    for path in ("/slides/no-such-slide.svs", "/tiles/no-such-slide.svs/0/0/0.jpg",
                 "/no/such/route"):
        for _ in range(2):
            reply = fetch(proxy, path)
            assert reply.status == 404, path
            assert reply.headers["content-type"].startswith("application/json"), path
            assert reply.json()["error"] == "not_found"
            assert reply.headers.get("x-cache-status") in (None, "MISS"), path
    bad = fetch(proxy, f"/tiles/{SMALL_SLIDE}/99/0/0.jpg")
    assert bad.status == 400 and bad.json()["error"] == "invalid_level"


def test_nginx_head_and_gzip_json(proxy: int) -> None:
    head = fetch(proxy, f"/tiles/{SMALL_SLIDE}/0/1/0.jpg", method="HEAD")
    assert head.status == 200 and head.body == b""
    meta = fetch(proxy, f"/slides/{SMALL_SLIDE}", headers={"Accept-Encoding": "gzip"})
    assert meta.status == 200
    if len(meta.body) >= 256 or meta.headers.get("content-encoding"):
        assert meta.headers.get("content-encoding") == "gzip"


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers with the request line and headers exactly as received."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        body = json.dumps({"path": self.path, "version": self.request_version,
                           "headers": {k.lower(): v for k, v in self.headers.items()},
                           "peer_port": self.client_address[1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def echo_upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    server.daemon_threads = True
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_nginx_forwards_the_raw_uri_over_keepalive(echo_upstream: int,
                                                   nginx_in_front: NginxFactory) -> None:
    port = nginx_in_front(echo_upstream)
    for path in ("/slides/folder%2Fslide.svs", "/slides/a%2Fb%2Fc.svs/dzi",
                 "/slides/a//b.svs", "/slides/a%2fb.svs?x=%2F&sig=ab"):
        seen = fetch(port, path).json()
        assert seen["path"] == path, "nginx must forward the URI untouched"
        assert seen["version"] == "HTTP/1.1"
        assert seen["headers"].get("connection", "").lower() != "close"
        assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    # keepalive: consecutive requests reuse one upstream connection
    peers = {fetch(port, "/slides/x.svs").json()["peer_port"] for _ in range(6)}
    assert len(peers) <= 2, f"upstream connections not reused: {peers}"


def test_nginx_answers_json_when_the_upstream_is_down(nginx_in_front: NginxFactory) -> None:
    port = nginx_in_front(free_port())  # nothing listens there
    for path in ("/health", f"/tiles/{SMALL_SLIDE}/0/0/0.jpg"):
        reply = fetch(port, path)
        assert reply.status == 502, path
        assert reply.headers["content-type"] == "application/json"
        assert reply.json() == {"error": "connection_error", "message": "tile server unavailable",
                                "status": 502}
