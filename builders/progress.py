"""Progress lines on stderr: the build's (and the benchmarks') timestamped ones, and the
trainers' optional ones."""

from __future__ import annotations

import sys
import time


def progress(message: str, tag: str = "build") -> None:
    """`[<tag> HH:MM:SS] <message>` on stderr."""
    print(f"[{tag} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def say(enabled: bool, message: str) -> None:
    """`message` on stderr when `enabled` (a trainer's `progress` flag)."""
    if enabled:
        print(message, file=sys.stderr, flush=True)
