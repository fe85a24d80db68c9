"""The Triton binaries are found and run in this environment."""

import subprocess
import sys

from server import binaries


def test_backend_directory_layout(tmp_path):
    target = binaries.backend_directory(tmp_path / "backends")
    stub = target / "python" / "triton_python_backend_stub"
    assert stub.is_file() and stub.stat().st_mode & 0o111
    assert (target / "python" / "libtriton_python.so").is_file()
    for name in ("onnxruntime", "tensorflow"):
        assert (target / name / "model.py").read_bytes() == (
            binaries.CPU_BACKENDS_SRC / name / "model.py"
        ).read_bytes()


def test_backend_directory_refreshes_changed_files(tmp_path):
    target = binaries.backend_directory(tmp_path / "backends")
    copied = target / "onnxruntime" / "model.py"
    copied.write_text("stale")
    binaries.backend_directory(target)
    assert copied.read_text() != "stale"


def test_server_environment_puts_this_python_first():
    env = binaries.server_environment({"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib"})
    assert env["PATH"].split(":")[0] == str(binaries.Path(sys.executable).parent)
    assert env["PATH"].endswith(":/usr/bin")
    assert env["LD_LIBRARY_PATH"].endswith(":/opt/lib")
    assert "nvidia_pytriton.libs" in env["LD_LIBRARY_PATH"]


def test_perf_analyzer_runs():
    argv, env = binaries.perf_analyzer_command(["--version"])
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert "Perf Analyzer Version 2.51.0" in result.stdout + result.stderr


def test_check_cli_reports_both_binaries():
    result = subprocess.run(
        [sys.executable, "-m", "server.binaries", "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "tritonserver:" in result.stdout and "perf_analyzer:" in result.stdout
