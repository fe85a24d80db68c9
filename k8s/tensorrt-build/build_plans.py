"""Build TensorRT plans from the ONNX exports of a Triton model repository.

Runs on a GPU node inside the NGC TensorRT image whose release matches the serving
Triton image (24.10 for Triton 2.51): a plan only loads on the TensorRT version and
GPU model it was built with. For each entry of the plan list it runs trtexec, writes
``<model>/<version>/<plan>`` next to the ONNX file (atomically) and a
``<plan>.build.json`` recording the GPU, TensorRT version and ONNX hash; entries whose
record matches are skipped.

Plan list (JSON)::

    {"plans": [{"model": "text_encoder", "version": "1",
                "onnx": "model.onnx", "plan": "model.plan", "fp16": true,
                "workspace_mib": 4096,
                "shapes": {"input_ids": ["1x32", "16x32", "64x32"],
                           "attention_mask": ["1x32", "16x32", "64x32"]}}]}

``shapes`` gives min, opt and max shapes per dynamic input (the optimization profile);
they must match the build's ``--max-length`` and ``--num-candidates``. The model
builder already writes ``configs/gpu.pbtxt`` (backend "tensorrt", ``model.plan``) for
the models served as plans; this script only produces ``model.plan``, which Triton
serves with the chart's ``modelConfigName: gpu``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REQUIRED = ("model", "version", "onnx", "plan", "shapes")


class PlanError(ValueError):
    """The plan list is malformed or a build failed."""


def load_plans(text: str) -> list[dict]:
    """Parse and check the plan list."""
    try:
        plans = json.loads(text)["plans"]
    except (ValueError, KeyError, TypeError) as err:
        raise PlanError(f'the plan list must be JSON {{"plans": [...]}}: {err}') from err
    for index, entry in enumerate(plans):
        missing = [key for key in REQUIRED if key not in entry]
        if missing:
            raise PlanError(f"plan {index} lacks {', '.join(missing)}")
        for name, shapes in entry["shapes"].items():
            if len(shapes) != 3 or not all(isinstance(s, str) and s for s in shapes):
                raise PlanError(
                    f"plan {index} ({entry['model']}): shapes of {name!r} must be "
                    f'["min", "opt", "max"] strings like "1x16", got {shapes!r}'
                )
    return plans


def trtexec_command(entry: dict, onnx: Path, output: Path) -> list[str]:
    """The trtexec argv that builds one plan."""
    shapes = entry["shapes"]
    argv = ["trtexec", f"--onnx={onnx}", f"--saveEngine={output}"]
    if shapes:
        for flag, index in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            argv.append(
                f"{flag}=" + ",".join(f"{name}:{dims[index]}" for name, dims in shapes.items())
            )
    if entry.get("fp16", True):
        argv.append("--fp16")
    argv.append(f"--memPoolSize=workspace:{int(entry.get('workspace_mib', 4096))}M")
    return argv


def build_record(onnx_sha256: str, gpu: str, tensorrt: str, argv: list[str]) -> dict:
    """What a plan was built from; the input and output paths (argv[1:3]) are left out."""
    return {"onnx_sha256": onnx_sha256, "gpu": gpu, "tensorrt": tensorrt, "flags": argv[3:]}


def is_current(record_path: Path, plan: Path, expected: dict) -> bool:
    """True when the plan exists and was built from the same ONNX, GPU, TensorRT and flags."""
    if not plan.is_file() or not record_path.is_file():
        return False
    try:
        return json.loads(record_path.read_text()) == expected
    except ValueError:
        return False


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gpu_name() -> str:
    result = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().splitlines()[0]


def tensorrt_version() -> str:
    import tensorrt

    return tensorrt.__version__


def build(repository: Path, plans: list[dict], force: bool = False) -> list[str]:
    """Build every plan; return one line per entry (built or up to date)."""
    gpu, tensorrt = gpu_name(), tensorrt_version()
    lines = []
    for entry in plans:
        folder = repository / entry["model"] / str(entry["version"])
        onnx = folder / entry["onnx"]
        if not onnx.is_file():
            raise PlanError(f"{onnx} does not exist")
        plan = folder / entry["plan"]
        partial = plan.with_name(plan.name + ".partial")
        argv = trtexec_command(entry, onnx, partial)
        record = build_record(sha256(onnx), gpu, tensorrt, argv)
        record_path = plan.with_name(plan.name + ".build.json")
        if not force and is_current(record_path, plan, record):
            lines.append(f"{plan}: up to date")
            continue
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            raise PlanError(
                f"trtexec failed for {onnx}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        os.replace(partial, plan)
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        lines.append(f"{plan}: built on {gpu} with TensorRT {tensorrt}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, required=True, help="model repository root")
    parser.add_argument("--plans", type=Path, required=True, help="plan list (JSON)")
    parser.add_argument("--force", action="store_true", help="rebuild plans that are up to date")
    args = parser.parse_args(argv)
    try:
        for line in build(args.repository, load_plans(args.plans.read_text()), args.force):
            print(line, flush=True)
    except (PlanError, OSError, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
