"""The local Triton server: launcher, CPU backends and the binaries they need.

`from server import TritonServer` works; the launcher is imported on first use
so that `python -m server.binaries` runs without importing it first.
"""

__all__ = ["ServerError", "ServerOptions", "TritonServer"]


def __getattr__(name: str):
    if name in __all__:
        from server import launcher

        return getattr(launcher, name)
    raise AttributeError(f"module 'server' has no attribute {name!r}")
