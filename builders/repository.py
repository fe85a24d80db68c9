"""Writing versioned model directories in Triton's layout, never over existing ones.

`<repo>/<model>/config.pbtxt` is shared by every version of a model (Triton has
one config per model); `<repo>/<model>/<version>/` holds the files and a
`manifest.json`: the sha256 of every file, the data fingerprint, metrics,
parity results and the model versions it depends on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from builders.specs import ModelSpec, VersionPolicy, parse_pbtxt, render_pbtxt

MANIFEST = "manifest.json"
CONFIG = "config.pbtxt"


class RepositoryError(RuntimeError):
    """The repository cannot take the requested write."""


class VersionExistsError(RepositoryError, FileExistsError):
    """The model version is already there; nothing was written."""


def model_versions(repo: Path, name: str) -> list[int]:
    """The numeric version folders of a model, ascending."""
    model_dir = Path(repo) / name
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(repo: Path, names: list[str]) -> int:
    """One more than the highest version any of `names` has (1 for a new repository)."""
    return max((max(model_versions(repo, n), default=0) for n in names), default=0) + 1


def read_manifest(repo: Path, name: str, version: int) -> dict:
    path = Path(repo) / name / str(version) / MANIFEST
    if not path.is_file():
        raise RepositoryError(f"{name} version {version} has no {MANIFEST} at {path}")
    return json.loads(path.read_text())


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file below `folder`, by relative path (the manifest excluded)."""
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative == MANIFEST:
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digests[relative] = digest.hexdigest()
    return digests


def verify_version(repo: Path, name: str, version: int) -> list[str]:
    """Files whose content no longer matches the manifest (empty when intact)."""
    manifest = read_manifest(repo, name, version)
    actual = file_digests(Path(repo) / name / str(version))
    expected = manifest["files"]
    return sorted(
        path for path in set(actual) | set(expected) if actual.get(path) != expected.get(path)
    )


def _check_interface(model_dir: Path, spec: ModelSpec) -> None:
    """Versions of one model share its config, so they must share inputs and outputs."""
    config_path = model_dir / CONFIG
    if not config_path.exists():
        return
    current = parse_pbtxt(config_path.read_text())
    wanted = parse_pbtxt(spec.to_pbtxt())
    for key in ("backend", "max_batch_size", "input", "output"):
        if current.get(key) != wanted.get(key):
            raise RepositoryError(
                f"{model_dir.name}: the new version changes `{key}` of the model config, "
                "which every version shares; build it under a new model name instead"
            )


def write_version(
    repo: Path,
    spec: ModelSpec,
    version: int,
    populate: Callable[[Path], None],
    manifest: Mapping,
) -> Path:
    """Create `<repo>/<spec.name>/<version>/`; refuse if it exists.

    `populate(folder)` writes the version's files into a staging folder, which
    is renamed into place only when it and the manifest are complete, so a
    failed build leaves nothing behind and a reader never sees half a version.
    """
    model_dir = Path(repo) / spec.name
    target = model_dir / str(version)
    if target.exists():
        raise VersionExistsError(
            f"{spec.name} version {version} already exists at {target}; nothing was written "
            "(use --next for the next free version)"
        )
    _check_interface(model_dir, spec)
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / f".staging-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        populate(staging)
        full_manifest = {
            "model": spec.name,
            "version": version,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **manifest,
            "config": spec.to_config(),
            "files": file_digests(staging),
        }
        (staging / MANIFEST).write_text(json.dumps(full_manifest, indent=2, sort_keys=True) + "\n")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_config(model_dir, spec)
    return target


def write_config(model_dir: Path, spec: ModelSpec) -> None:
    """(Re)write config.pbtxt atomically."""
    tmp = model_dir / f".{CONFIG}.tmp"
    tmp.write_text(spec.to_pbtxt())
    tmp.replace(model_dir / CONFIG)


def set_served_versions(repo: Path, name: str, versions: list[int]) -> None:
    """Point a model's version policy at exactly `versions`."""
    config_path = Path(repo) / name / CONFIG
    config = parse_pbtxt(config_path.read_text())
    config["version_policy"] = VersionPolicy(latest=None, specific=tuple(versions)).to_config()
    tmp = config_path.with_suffix(".tmp")
    tmp.write_text(render_pbtxt(config))
    tmp.replace(config_path)
