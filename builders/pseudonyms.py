"""Pseudonymised user ids: raw ids become keyed hashes before anything is trained or written.

A pseudonym is HMAC-SHA-256(key, the id in decimal), its first 8 bytes read as a big-endian
number modulo 2**63 - 1: a non-negative INT64, so the served contract (`user_id` INT64) and
every id table stay as they are, and the largest pseudonym plus one (the build's unknown-user
row) still fits. The build maps ids once, at the dataset boundary (`pseudonymise`); clients map
them with the same key before sending (`pseudonym`). The key never goes to the server; the
manifests record only `key_fingerprint`, an HMAC of a fixed label, to tell keys apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the clients import this module: keep it light
    import pandas as pd

    from builders.data import Dataset

#: The environment variable that holds the key when no key file is given.
KEY_ENV = "USER_ID_KEY"
#: Shortest key accepted, in bytes (e.g. `openssl rand -hex 32` gives 64).
MIN_KEY_BYTES = 32
_MODULUS = 2**63 - 1
_FINGERPRINT_LABEL = b"user-id key fingerprint"


def check_key(key: bytes) -> bytes:
    """`key` itself; ValueError when it is shorter than MIN_KEY_BYTES."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"the user-id key has {len(key)} bytes; at least {MIN_KEY_BYTES} are needed "
            "(e.g. openssl rand -hex 32)"
        )
    return key


def read_key(
    path: str | Path | None = None, environ: Mapping[str, str] = os.environ
) -> bytes | None:
    """The key from the file `path`, else from $USER_ID_KEY, else None. Surrounding whitespace
    (a trailing newline) is not part of the key; a key that is too short is refused."""
    if path is not None:
        try:
            key = Path(path).read_bytes().strip()
        except OSError as error:
            raise ValueError(f"cannot read the user-id key file {path}: {error.strerror}") from None
        if not key:
            raise ValueError(f"the user-id key file {path} is empty")
    elif environ.get(KEY_ENV):
        key = environ[KEY_ENV].strip().encode()
    else:
        return None
    return check_key(key)


def pseudonym(user_id: int, key: bytes) -> int:
    """The pseudonym of one raw user id: an int in [0, 2**63 - 1)."""
    digest = hmac.new(key, str(int(user_id)).encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % _MODULUS


def pseudonyms(user_ids: np.ndarray, key: bytes) -> np.ndarray:
    """The pseudonyms of an array of raw user ids, int64, same shape (each distinct id hashed
    once)."""
    ids = np.asarray(user_ids, dtype=np.int64)
    distinct, inverse = np.unique(ids, return_inverse=True)
    mapped = np.array([pseudonym(u, key) for u in distinct.tolist()], dtype=np.int64)
    return mapped[inverse].reshape(ids.shape)


def key_fingerprint(key: bytes) -> str:
    """What identifies the key without revealing it: 16 hex digits of an HMAC of a fixed
    label."""
    return hmac.new(key, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:16]


def manifest_record(key: bytes | None) -> dict:
    """What a manifest says about the user ids of a build with `key` (None: raw ids)."""
    if key is None:
        return {"pseudonymised": False}
    return {"pseudonymised": True, "key_fingerprint": key_fingerprint(key)}


def pseudonymise(dataset: Dataset, key: bytes) -> Dataset:
    """`dataset` with every user id (the interaction log's and the users table's) replaced by
    its pseudonym; ValueError if two ids collide (a chance of about n**2 / 2**64)."""
    check_key(key)
    frames = {"interactions": dataset.interactions, "users": dataset.users}
    columns = [
        frame["user_id"].to_numpy(np.int64) for frame in frames.values() if frame is not None
    ]
    raw = np.unique(np.concatenate([np.empty(0, np.int64), *columns]))
    mapped = pseudonyms(raw, key)
    if len(np.unique(mapped)) != len(raw):
        raise ValueError(f"{dataset.name}: two user ids share a pseudonym; use another key")
    replaced = {
        name: None if frame is None else _with_pseudonyms(frame, raw, mapped)
        for name, frame in frames.items()
    }
    return dataclasses.replace(dataset, **replaced)


def _with_pseudonyms(frame: pd.DataFrame, raw: np.ndarray, mapped: np.ndarray) -> pd.DataFrame:
    ids = frame["user_id"].to_numpy(np.int64)
    return frame.assign(user_id=mapped[np.searchsorted(raw, ids)])


def as_built(dataset: Dataset, record: Mapping | None, key: bytes | None) -> Dataset:
    """`dataset` as a build whose manifest holds the `user_ids` `record` saw it: pseudonymised
    with `key` when that build was. ValueError when the key is missing or is not that build's
    (its fingerprint differs)."""
    if not record or not record.get("pseudonymised"):
        return dataset
    expected = record["key_fingerprint"]
    if key is None:
        raise ValueError(
            f"the build pseudonymised user ids (key fingerprint {expected}); give its key "
            f"(${KEY_ENV})"
        )
    if key_fingerprint(key) != expected:
        raise ValueError(
            f"the user-id key given (fingerprint {key_fingerprint(key)}) is not the build's "
            f"(fingerprint {expected})"
        )
    return pseudonymise(dataset, key)
