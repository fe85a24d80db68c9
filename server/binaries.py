"""Where the Triton 2.51 binaries live in this environment, and what they need.

`tritonserver`, its Python backend and the backend stubs come from the
`nvidia-pytriton` wheel; `perf_analyzer` comes from the `tritonclient` wheel and
needs the CUDA runtime library from `nvidia-cuda-runtime-cu12` (it never touches a
GPU here). Our CPU backends (`onnxruntime`, `tensorflow`) are Python-based: the
backend directory assembled here puts them next to `python/`, so Triton loads
them through the Python backend under their real names.

`python -m server.binaries --check` verifies the whole set (used by `make setup`).
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO_ROOT / "build"
CPU_BACKENDS_SRC = Path(__file__).resolve().parent / "backends"
CPU_BACKEND_NAMES = ("onnxruntime", "tensorflow")


class BinaryNotFound(RuntimeError):
    """A Triton binary or library is missing from the environment."""


def _package_dir(name: str) -> Path:
    """The install folder of a package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise BinaryNotFound(f"package {name!r} is not installed in {sys.prefix}; run `make setup`")
    return Path(next(iter(spec.submodule_search_locations)))


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def triton_dir() -> Path:
    """`pytriton/tritonserver`: the server binary, backends, stubs and caches."""
    return _package_dir("pytriton") / "tritonserver"


def tritonserver_path() -> Path:
    path = triton_dir() / "bin" / "tritonserver"
    if not path.is_file():
        raise BinaryNotFound(f"tritonserver not found at {path}; run `make setup`")
    return path


def python_backend_stub(python_version: str | None = None) -> Path:
    """The backend stub built for the running Python (`X.Y`)."""
    version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = triton_dir() / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        available = sorted(p.name for p in (triton_dir() / "python_backend_stubs").iterdir())
        raise BinaryNotFound(
            f"no Python backend stub for Python {version} (available: {', '.join(available)})"
        )
    return stub


def server_library_dirs() -> list[Path]:
    """Folders holding the shared libraries the server, stubs and backends link to."""
    return [_site_packages() / "nvidia_pytriton.libs"]


def _sync_file(src: Path, dst: Path) -> None:
    if dst.exists() and filecmp.cmp(src, dst, shallow=False):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copy2(src, tmp)
    tmp.replace(dst)


def backend_directory(target: Path | None = None) -> Path:
    """Assemble (or refresh) the backend directory passed as `--backend-directory`.

    Layout: `python/` (Triton's Python backend plus the stub for this Python),
    and `onnxruntime/`, `tensorflow/` holding our Python-based CPU backends.
    Safe to call concurrently and repeatedly; only changed files are copied.
    """
    target = target or BUILD_DIR / "triton" / "backends"
    python_src = triton_dir() / "backends" / "python"
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        _sync_file(python_src / name, target / "python" / name)
    _sync_file(python_backend_stub(), target / "python" / "triton_python_backend_stub")
    for backend in CPU_BACKEND_NAMES:
        _sync_file(CPU_BACKENDS_SRC / backend / "model.py", target / backend / "model.py")
    return target


def cache_directory() -> Path:
    return triton_dir() / "caches"


def _prepend_path(env: dict[str, str], key: str, entries: list[Path]) -> None:
    parts = [str(e) for e in entries]
    if env.get(key):
        parts.append(env[key])
    env[key] = os.pathsep.join(parts)


def server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for `tritonserver`.

    The backend stub takes `sys.executable` and site-packages from the first
    `python3` on PATH, so this environment's `bin/` goes first.
    """
    env = dict(os.environ if base is None else base)
    _prepend_path(env, "LD_LIBRARY_PATH", server_library_dirs())
    _prepend_path(env, "PATH", [Path(sys.executable).parent])
    return env


def perf_analyzer_path() -> Path:
    candidates = [Path(sys.executable).parent / "perf_analyzer"]
    which = shutil.which("perf_analyzer")
    if which:
        candidates.append(Path(which))
    for path in candidates:
        if path.is_file():
            return path
    raise BinaryNotFound(
        "perf_analyzer not found (it ships in tritonclient==2.51.0); run `make setup`"
    )


def perf_analyzer_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for `perf_analyzer`: it loads libcudart at start-up, even on CPU."""
    env = dict(os.environ if base is None else base)
    _prepend_path(env, "LD_LIBRARY_PATH", [_package_dir("nvidia") / "cuda_runtime" / "lib"])
    return env


def perf_analyzer_command(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The argv and environment to run perf_analyzer 2.51 with `args` via subprocess."""
    return [str(perf_analyzer_path()), *args], perf_analyzer_environment()


def _run_once(argv: list[str], env: dict[str, str], expect: str) -> str:
    """Run a binary once; its output must contain `expect` (it loaded its libraries)."""
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    output = (result.stdout + result.stderr).strip()
    if expect not in output:
        raise BinaryNotFound(f"{argv[0]} does not run:\n{output[-2000:]}")
    return output


def check() -> list[str]:
    """Run each binary once; return one line per binary, raise if any fails."""
    server = tritonserver_path()
    backend_directory()
    _run_once([str(server), "--help"], server_environment(), "--model-repository")
    argv, env = perf_analyzer_command(["--version"])
    pa_version = _run_once(argv, env, "Perf Analyzer Version").splitlines()[0]
    return [f"tritonserver: {server}", f"perf_analyzer: {argv[0]} ({pa_version})"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.binaries", description=__doc__)
    parser.add_argument("--check", action="store_true", help="run each binary once")
    args = parser.parse_args(argv)
    try:
        lines = check() if args.check else [f"tritonserver: {tritonserver_path()}"]
    except BinaryNotFound as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
