"""Differentially private training (DP-SGD) with one user's events as the privacy unit.

Each step samples users independently with probability `sample_rate` (Poisson sampling),
takes up to `events_per_user` of each sampled user's training examples, computes
per-example gradients with `torch.func` (vmap + grad), sums them per user, clips each
user's sum to `clip_norm`, adds Gaussian noise of standard deviation
`noise_multiplier * clip_norm` to every shared parameter, and divides by the expected
number of users per step. Opacus's RDP accountant picks the smallest noise multiplier
whose (epsilon, delta) over all steps stays within the target.

Embedding tables are not differentiated whole per example: a loss reads rows through
`Lookup`s, and the per-example gradients of the rows it read are scattered back. A
*personal* table's row r > 0 belongs to the user r (a user's own embedding): it is
updated from that user's own examples only, without clipping or noise, so the guarantee
covers every other parameter (joint differential privacy); row 0 (the unknown user) is
shared and private like the rest.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch loads only when a private training runs
    import torch

PRIVACY_UNIT = "user"
DEFAULT_CLIP_NORM = 1.0
ACCOUNTANT = "rdp (opacus 1.6.0)"


@dataclass(frozen=True)
class PrivacySpec:
    """What a private training is asked for. `delta` None: 1 / number of training users."""

    epsilon: float
    delta: float | None = None
    clip_norm: float = DEFAULT_CLIP_NORM
    #: Expected users per step: sample_rate = users_per_step / training users.
    users_per_step: int = 64
    #: Most examples of one sampled user used in a step.
    events_per_user: int = 16

    def __post_init__(self) -> None:
        if not (isinstance(self.epsilon, int | float) and 0 < self.epsilon < math.inf):
            raise ValueError(f"DP epsilon must be a positive finite number, got {self.epsilon}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ValueError(f"DP delta must be in (0, 1), got {self.delta}")
        if not 0 < self.clip_norm < math.inf:
            raise ValueError(f"DP clip norm must be a positive number, got {self.clip_norm}")
        if self.users_per_step < 1 or self.events_per_user < 1:
            raise ValueError("DP users_per_step and events_per_user must be at least 1")


@dataclass(frozen=True)
class PrivacyPlan:
    """The noise and sampling that meet a `PrivacySpec`; what a manifest records."""

    epsilon: float  # the target
    delta: float
    noise_multiplier: float
    clip_norm: float
    sample_rate: float
    steps: int
    users: int  # privacy units in the training data
    events_per_user: int
    epsilon_spent: float  # the accountant's epsilon for these settings (<= the target)

    @property
    def expected_users(self) -> float:
        return self.sample_rate * self.users

    def manifest(self) -> dict:
        return {
            **asdict(self),
            "privacy_unit": PRIVACY_UNIT,
            "accountant": ACCOUNTANT,
            "not_covered": "each user's own embedding row (built from that user's events "
            "only) and the user-id vocabulary",
        }


def spent_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of `steps` Poisson-subsampled Gaussian steps (RDP accountant)."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    with warnings.catch_warnings():
        # "Optimal order is the largest alpha": the epsilon is still an upper bound.
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(delta))


def plan(spec: PrivacySpec, users: int, epochs: int) -> PrivacyPlan:
    """Sampling rate, steps (`epochs` passes over the users) and the noise for `spec`."""
    from opacus.accountants.utils import get_noise_multiplier

    if users < 1:
        raise ValueError("DP training needs at least one user with training events")
    delta = spec.delta if spec.delta is not None else 1.0 / users
    sample_rate = min(1.0, spec.users_per_step / users)
    steps = max(1, math.ceil(epochs / sample_rate))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        noise = get_noise_multiplier(
            target_epsilon=spec.epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
        )
    return PrivacyPlan(
        epsilon=spec.epsilon,
        delta=delta,
        noise_multiplier=float(noise),
        clip_norm=spec.clip_norm,
        sample_rate=sample_rate,
        steps=steps,
        users=users,
        events_per_user=spec.events_per_user,
        epsilon_spent=spent_epsilon(noise, sample_rate, steps, delta),
    )


def user_batches(owners: np.ndarray, privacy: PrivacyPlan, seed: int) -> Iterator[np.ndarray]:
    """Example indexes of each step: Poisson-sampled users, up to `events_per_user` random
    examples of each. `owners` maps each example to its user (any integer id)."""
    rng = np.random.default_rng(seed)
    users, slots = np.unique(owners, return_inverse=True)
    for _ in range(privacy.steps):
        chosen = rng.random(len(users)) < privacy.sample_rate
        candidates = np.flatnonzero(chosen[slots])
        # A random order within each user; keep the first events_per_user of each.
        order = np.lexsort((rng.random(len(candidates)), slots[candidates]))
        candidates = candidates[order]
        starts = np.searchsorted(slots[candidates], slots[candidates], side="left")
        yield candidates[np.arange(len(candidates)) - starts < privacy.events_per_user]


@dataclass(frozen=True)
class Lookup:
    """Rows of an embedding table (a parameter name) each example reads, int64 [B, L]."""

    table: str
    rows: torch.Tensor
    personal: bool = False  # row r > 0 belongs to the example's own user r


#: (shared parameters, one [L, dim] tensor per lookup, per-example inputs...) -> loss of
#: one example.
ExampleLoss = Callable[..., "torch.Tensor"]


def private_step(
    model: torch.nn.Module,
    example_loss: ExampleLoss,
    lookups: Sequence[Lookup],
    inputs: Sequence[torch.Tensor],
    owners: torch.Tensor,
    privacy: PrivacyPlan,
    generator: torch.Generator,
) -> None:
    """Set every parameter's `.grad` to the DP-SGD gradient of one step's examples
    (`inputs` and `lookups` batched on dim 0, `owners` [B] their users' indexes, the rows
    of theirs in a personal table)."""
    import torch

    parameters = dict(model.named_parameters())
    tables = [lookup.table for lookup in lookups]
    if len(set(tables)) != len(tables) or not set(tables) <= set(parameters):
        raise ValueError(f"lookups must name distinct embedding parameters, got {tables}")
    shared = {name: p.detach() for name, p in parameters.items() if name not in tables}
    vectors = tuple(parameters[lookup.table].detach()[lookup.rows] for lookup in lookups)
    per_example = torch.func.vmap(
        torch.func.grad(example_loss, argnums=(0, 1)),
        in_dims=(None, 0, *[0] * len(inputs)),
    )
    dense_grads, row_grads = per_example(shared, vectors, *inputs)

    local_users, slot = torch.unique(owners, return_inverse=True)
    n = len(local_users)
    squared = torch.zeros(n)
    per_user = {}
    for name, grad in dense_grads.items():
        summed = torch.zeros(n, *grad.shape[1:]).index_add_(0, slot, grad)
        squared += summed.flatten(1).pow(2).sum(1)
        per_user[name] = summed
    scattered = {}
    for lookup, grad in zip(lookups, row_grads):
        size, dim = parameters[lookup.table].shape
        rows = lookup.rows.reshape(len(owners), -1)
        grad = grad.reshape(*rows.shape, dim)
        own = (rows > 0) if lookup.personal else torch.zeros_like(rows, dtype=torch.bool)
        if lookup.personal:
            _check_owned(rows[own], owners[:, None].expand_as(rows)[own])
        keys = (slot[:, None] * size + rows)[~own]
        unique_keys, inverse = torch.unique(keys, return_inverse=True)
        summed = torch.zeros(len(unique_keys), dim).index_add_(0, inverse, grad[~own])
        squared.index_add_(0, unique_keys // size, summed.pow(2).sum(1))
        personal = torch.zeros(size, dim).index_add_(0, rows[own], grad[own])
        scattered[lookup.table] = (unique_keys, summed, personal)

    clip = privacy.clip_norm
    factor = (clip / squared.sqrt().clamp(min=1e-12)).clamp(max=1.0)
    scale = 1.0 / privacy.expected_users
    std = privacy.noise_multiplier * clip

    def noise(*shape: int) -> torch.Tensor:
        return torch.normal(0.0, std, shape, generator=generator)

    for name, summed in per_user.items():
        clipped = torch.einsum("u,u...->...", factor, summed)
        parameters[name].grad = (clipped + noise(*clipped.shape)) * scale
    for lookup in lookups:
        unique_keys, summed, personal = scattered[lookup.table]
        size, dim = parameters[lookup.table].shape
        users = unique_keys // size
        grad = torch.zeros(size, dim).index_add_(
            0, unique_keys % size, summed * factor[users, None]
        )
        if lookup.personal:
            grad[0] += noise(dim)
        else:
            grad += noise(size, dim)
        parameters[lookup.table].grad = grad * scale + personal * scale


def _check_owned(rows: torch.Tensor, owners: torch.Tensor) -> None:
    """A personal row must be read by its own user's examples only."""
    if len(rows) and not bool((rows == owners).all()):
        raise ValueError("a personal embedding row was read by another user's example")
