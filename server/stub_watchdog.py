"""Reload a model whose Python backend stub process died.

Triton 2.51's Python backend does not start a new stub when one dies (killed, out of
memory): the model stays READY and every request sent to that instance fails with INTERNAL
"Stub process '<instance>' is not healthy." until the model is reloaded. `StubWatchdog`
watches the stub processes of a `TritonServer` in explicit model control and reloads the
model of a stub that died through the repository API. Triton reloads only a model whose
config changed, so the config is loaded with a `stub_restart` parameter counting the
restarts; the new instances serve before the old ones are released.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from server.launcher import ServerError, TritonServer, processes_in_group

STUB_BINARY = "triton_python_backend_stub"
RESTART_PARAMETER = "stub_restart"


@dataclass(frozen=True)
class Stub:
    """One stub process: the model version and instance it serves."""

    pid: int
    model: str
    version: int
    instance: str

    @property
    def key(self) -> tuple[str, int, str]:
        return self.model, self.version, self.instance


def parse_stub(pid: int, argv: list[str]) -> Stub | None:
    """The instance stub a command line runs (`<stub> <repo>/<model>/<version>/<file> ...
    <model>_<group>_<index>`), or None for another process. Loading a model also runs a
    short-lived stub named after the model alone (to complete its config): not an instance."""
    if len(argv) < 9 or not argv[0].endswith(STUB_BINARY):
        return None
    version_dir = Path(argv[1]).parent
    model, instance = version_dir.parent.name, argv[8]
    if not version_dir.name.isdigit() or not re.fullmatch(rf"{re.escape(model)}_\d+_\d+", instance):
        return None
    return Stub(pid, model, int(version_dir.name), instance)


def server_stubs(server_pid: int) -> dict[int, Stub]:
    """The live stub processes of the server whose process group is `server_pid`."""
    stubs = {}
    for pid in processes_in_group(server_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        stub = parse_stub(pid, argv)
        if stub is not None:
            stubs[pid] = stub
    return stubs


def restarted_config(config: dict) -> dict:
    """`config` with its `stub_restart` parameter counted up (so Triton reloads it)."""
    parameters = dict(config.get("parameters") or {})
    count = int((parameters.get(RESTART_PARAMETER) or {}).get("string_value", "0"))
    parameters[RESTART_PARAMETER] = {"string_value": str(count + 1)}
    return {**config, "parameters": parameters}


@dataclass
class Restart:
    """A stub found dead and its model reloaded (times from `time.monotonic`)."""

    model: str
    version: int
    instance: str
    pid: int
    detected_at: float
    reloaded_at: float | None = None
    error: str = ""


class StubWatchdog:
    """Reloads the model of every stub process of `server` that dies (explicit mode).

    A stub that goes away is dead when, `grace` seconds later, no other process serves its
    model version and instance (a reload starts the new one first) and Triton still
    reports that version READY (an unload is not a death).
    """

    def __init__(self, server: TritonServer, interval: float = 0.1, grace: float = 0.2) -> None:
        if server.model_control != "explicit":
            raise ValueError("StubWatchdog needs a server in explicit model control")
        self.server, self.interval, self.grace = server, interval, grace
        self.restarts: list[Restart] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StubWatchdog:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="stub-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        pid = self.server.pid
        known = server_stubs(pid)
        gone: dict[int, tuple[Stub, float]] = {}
        while not self._stop.wait(self.interval):
            current = server_stubs(pid)
            now = time.monotonic()
            for stub_pid, stub in known.items():
                if stub_pid not in current:
                    gone.setdefault(stub_pid, (stub, now))
            served = {stub.key for stub in current.values()}
            reloaded: set[str] = set()
            for stub_pid, (stub, since) in list(gone.items()):
                if stub.key in served or stub.model in reloaded:
                    del gone[stub_pid]
                elif now - since >= self.grace:
                    del gone[stub_pid]
                    if self.server.is_model_ready(stub.model, stub.version):
                        self._reload(stub, since)
                        reloaded.add(stub.model)
            known = server_stubs(pid) if reloaded else current

    def _reload(self, stub: Stub, since: float) -> None:
        restart = Restart(stub.model, stub.version, stub.instance, stub.pid, since)
        self.restarts.append(restart)
        try:
            config = self.server.model_config(stub.model)
            self.server.load_model(stub.model, config=restarted_config(config))
            restart.reloaded_at = time.monotonic()
        except (ServerError, OSError) as err:
            restart.error = str(err)
