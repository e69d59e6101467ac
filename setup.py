"""Workspace packaging: map the ``nv_eval.*`` packages of the four component folders into one install.

Each folder (client/, daemon/, agents/, harness/) holds part of the ``nv_eval`` namespace;
setuptools' automatic discovery cannot merge one namespace from several roots, so the
package list and directories are computed here. Metadata lives in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
COMPONENTS = ("client", "daemon", "agents", "harness")

packages: list[str] = []
package_dir: dict[str, str] = {}
for comp in COMPONENTS:
    base = ROOT / comp / "nv_eval"
    for init in sorted(base.rglob("__init__.py")):
        pkg_path = init.parent
        name = ".".join(("nv_eval", *pkg_path.relative_to(base).parts))
        packages.append(name)
        package_dir[name] = pkg_path.relative_to(ROOT).as_posix()

setup(packages=packages, package_dir=package_dir)
