"""Writing versioned model directories in Triton's layout, never over existing ones.

`<repo>/<model>/config.pbtxt` is shared by every version of a model (Triton has
one config per model), and so is `<repo>/<model>/warmup/`, the input files of its
warm-up sample (Triton reads them from the model folder, not a version folder);
`<repo>/<model>/<version>/` holds the files and a
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

from builders.specs import WARMUP_FOLDER, ModelSpec, VersionPolicy, parse_pbtxt, render_pbtxt

MANIFEST = "manifest.json"
CONFIG = "config.pbtxt"
CONFIGS = "configs"


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
    """sha256 of every file below `folder`, by relative path.

    The manifest itself and the `__pycache__` folders (the bytecode of a model's modules,
    which the builder writes and a Python that differs from the builder's rewrites) are left
    out.
    """
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative == MANIFEST or "__pycache__" in path.relative_to(folder).parts:
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digests[relative] = digest.hexdigest()
    return digests


def verify_version(repo: Path, name: str, version: int) -> list[str]:
    """Files whose content no longer matches the manifest (empty when intact).

    TensorRT plans (`model.plan*`) added after the build, by the plan-building
    Job on a GPU node, are expected and not reported.
    """
    manifest = read_manifest(repo, name, version)
    actual = file_digests(Path(repo) / name / str(version))
    expected = manifest["files"]
    added_plans = {p for p in set(actual) - set(expected) if p.startswith("model.plan")}
    return sorted(
        path
        for path in (set(actual) | set(expected)) - added_plans
        if actual.get(path) != expected.get(path)
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
    named_configs: Mapping[str, ModelSpec] | None = None,
) -> Path:
    """Create `<repo>/<spec.name>/<version>/`; refuse if it exists.

    `populate(folder)` writes the version's files into a staging folder, which
    is renamed into place only when it and the manifest are complete, so a
    failed build leaves nothing behind and a reader never sees half a version.
    `named_configs` go to `configs/<name>.pbtxt`, which Triton serves instead
    of config.pbtxt when started with `--model-config-name=<name>`.
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
    write_config(model_dir / CONFIG, spec)
    for name, named in (named_configs or {}).items():
        write_config(model_dir / CONFIGS / f"{name}.pbtxt", named)
    if isinstance(spec, ModelSpec):
        write_warmup_files(model_dir, spec)
    return target


def write_warmup_files(model_dir: Path, spec: ModelSpec) -> None:
    """(Re)write the files the warm-up sample of `spec`'s config reads, each atomically."""
    for name, content in spec.warmup_files().items():
        path = Path(model_dir) / WARMUP_FOLDER / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_bytes(content)
        tmp.replace(path)


def write_config(path: Path, spec: ModelSpec) -> None:
    """(Re)write a config file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace_text(path, spec.to_pbtxt())


def rewrite_config(path: Path, config: dict) -> None:
    """Replace a config file by a parsed config (`parse_pbtxt`'s form), atomically."""
    _replace_text(path, render_pbtxt(config))


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def model_configs(model_dir: Path) -> list[Path]:
    """A model's config files: the served one and each profile's (`configs/<name>.pbtxt`)."""
    return [model_dir / CONFIG, *sorted((model_dir / CONFIGS).glob("*.pbtxt"))]


def set_served_versions(repo: Path, name: str, versions: list[int]) -> None:
    """Point a model's version policy, in every config it has, at exactly `versions`."""
    model_dir = Path(repo) / name
    policy = VersionPolicy(latest=None, specific=tuple(versions)).to_config()
    for config_path in model_configs(model_dir):
        config = parse_pbtxt(config_path.read_text())
        config["version_policy"] = policy
        rewrite_config(config_path, config)
