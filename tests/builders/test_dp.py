"""DP-SGD (builders.dp): the accountant meets the target, per-user clipping and noise are
what DP-SGD prescribes, bad settings are refused, and private builds record their privacy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from builders import dp, names, ranker, two_tower
from builders.build import BuildOptions, build
from builders.data import load_dataset
from builders.repository import read_manifest


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"epsilon": 0}, "epsilon must be a positive finite number"),
        ({"epsilon": -1.0}, "epsilon must be a positive finite number"),
        ({"epsilon": math.nan}, "epsilon must be a positive finite number"),
        ({"epsilon": math.inf}, "epsilon must be a positive finite number"),
        ({"epsilon": 1.0, "delta": 0.0}, r"delta must be in \(0, 1\)"),
        ({"epsilon": 1.0, "delta": 1.0}, r"delta must be in \(0, 1\)"),
        ({"epsilon": 1.0, "clip_norm": 0.0}, "clip norm must be a positive number"),
    ],
)
def test_bad_privacy_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        dp.PrivacySpec(**settings)


def test_build_options_check_the_dp_settings(tmp_path):
    with pytest.raises(ValueError, match="epsilon must be a positive"):
        BuildOptions(repo=tmp_path, dp_epsilon=0.0)
    with pytest.raises(ValueError, match=r"delta must be in \(0, 1\)"):
        BuildOptions(repo=tmp_path, dp_epsilon=1.0, dp_delta=2.0)
    with pytest.raises(ValueError, match="needs a DP epsilon"):
        BuildOptions(repo=tmp_path, dp_delta=1e-5)
    with pytest.raises(ValueError, match="DCN rankers only"):
        BuildOptions(repo=tmp_path, dp_epsilon=1.0, ranker="lambdamart")
    assert BuildOptions(repo=tmp_path).privacy is None
    assert BuildOptions(repo=tmp_path, dp_epsilon=2.0).privacy == dp.PrivacySpec(2.0)


@pytest.mark.parametrize("epsilon", [0.5, 2.0, 8.0])
def test_the_chosen_noise_spends_at_most_the_target(epsilon):
    plan = dp.plan(dp.PrivacySpec(epsilon), users=1000, epochs=5)
    assert plan.delta == pytest.approx(1 / 1000)
    assert plan.sample_rate == pytest.approx(64 / 1000)
    assert plan.steps == math.ceil(5 / plan.sample_rate)
    spent = dp.spent_epsilon(plan.noise_multiplier, plan.sample_rate, plan.steps, plan.delta)
    assert spent == plan.epsilon_spent
    assert 0.9 * epsilon <= spent <= epsilon
    # Less noise would overspend: the multiplier is not needlessly large.
    less = dp.spent_epsilon(0.9 * plan.noise_multiplier, plan.sample_rate, plan.steps, plan.delta)
    assert less > epsilon


def test_user_batches_cap_each_users_examples():
    owners = np.repeat(np.arange(50), 30)  # 50 users, 30 examples each
    privacy = _plan(sample_rate=0.2, steps=40, events_per_user=4)
    sizes = []
    for batch in dp.user_batches(owners, privacy, seed=0):
        users, counts = np.unique(owners[batch], return_counts=True)
        assert (counts == 4).all()
        sizes.append(len(users))
    assert len(sizes) == 40
    assert 0.15 * 50 < np.mean(sizes) < 0.25 * 50


class _Tiny(nn.Module):
    """An embedding table (optionally personal) and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(5, 3)
        self.linear = nn.Linear(3, 1)

    def forward(self, vector, target):
        return (self.linear(vector).squeeze() - target).pow(2).sum()


def _plan(**settings) -> dp.PrivacyPlan:
    values = {
        "epsilon": 1.0,
        "delta": 1e-3,
        "noise_multiplier": 0.0,
        "clip_norm": 0.5,
        "sample_rate": 0.5,
        "steps": 1,
        "users": 4,
        "events_per_user": 8,
        "epsilon_spent": 1.0,
    }
    return dp.PrivacyPlan(**(values | settings))


def _step(model, rows, targets, owners, privacy, personal=False):
    def example_loss(params, vectors, target):
        return torch.func.functional_call(model, params, (vectors[0], target))

    lookup = dp.Lookup("table.weight", rows, personal)
    generator = torch.Generator().manual_seed(0)
    dp.private_step(model, example_loss, [lookup], (targets,), owners, privacy, generator)


@pytest.mark.parametrize("personal", [False, True])
def test_each_users_gradient_is_clipped_and_personal_rows_are_not(personal):
    torch.manual_seed(0)
    model = _Tiny()
    rows = torch.tensor([[1], [1], [2], [0], [3]])
    owners = torch.tensor([1, 1, 2, 2, 3])  # user 2 reads the shared row 0 too
    targets = torch.tensor([3.0, 2.0, -4.0, 5.0, 0.1])
    privacy = _plan()
    _step(model, rows, targets, owners, privacy, personal)
    private = {name: p.grad.clone() for name, p in model.named_parameters()}

    expected = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for user in (1, 2, 3):
        model.zero_grad()
        mine = owners == user
        for row, target in zip(rows[mine, 0], targets[mine]):
            model(model.table.weight[row], target).backward()
        own_row = model.table.weight.grad.clone()
        own_row[0] = 0
        if personal:  # the user's own row: unclipped, and not part of the clipped norm
            model.table.weight.grad[1:] = 0
        norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))
        factor = min(1.0, privacy.clip_norm / norm.item())
        for name, p in model.named_parameters():
            expected[name] += factor * p.grad
        if personal:
            expected["table.weight"] += own_row
    for name, grad in private.items():
        torch.testing.assert_close(grad, expected[name] / privacy.expected_users)


def test_noise_has_the_planned_scale():
    model = _Tiny()
    privacy = _plan(noise_multiplier=2.0, clip_norm=0.5)
    rows, targets, owners = torch.tensor([[1]]), torch.tensor([0.0]), torch.tensor([1])
    _step(model, rows, targets, owners, privacy)
    # Rows nobody read hold noise alone: std noise_multiplier * clip_norm / expected users.
    untouched = model.table.weight.grad[[0, 2, 3, 4]]
    expected = privacy.noise_multiplier * privacy.clip_norm / privacy.expected_users
    assert 0.3 * expected < untouched.std().item() < 2.0 * expected


def test_a_personal_row_read_by_another_user_is_refused():
    model = _Tiny()
    rows, targets, owners = torch.tensor([[2]]), torch.tensor([0.0]), torch.tensor([1])
    with pytest.raises(ValueError, match="personal embedding row was read by another user"):
        _step(model, rows, targets, owners, _plan(), personal=True)


@pytest.fixture(scope="module")
def tiny_dataset():
    return load_dataset("synthetic", seed=5, n_items=300, n_users=60)


def test_private_two_tower_and_ranker_train_within_the_budget(tiny_dataset):
    privacy = dp.PrivacySpec(2.0)
    towers = two_tower.train(tiny_dataset, dim=16, epochs=2, progress=False, privacy=privacy)
    assert towers.privacy.epsilon_spent <= 2.0
    assert towers.privacy.users == tiny_dataset.split().train["user_id"].nunique()
    assert np.isfinite(towers.item_embeddings).all()
    assert 0 <= towers.metrics["recall_at_10"] <= 1
    scores = towers.user_embeddings @ towers.item_embeddings.T
    result = ranker.train(tiny_dataset, scores, epochs=1, progress=False, privacy=privacy)
    assert result.privacy.epsilon_spent <= 2.0
    # The Keras twin carries the private PyTorch weights.
    sample = result.test_examples
    np.testing.assert_allclose(
        ranker.predict_keras(result.keras_model, sample),
        ranker.predict_torch(result.torch_model, sample),
        atol=1e-5,
    )


def test_a_private_build_records_its_privacy_in_the_manifests(tmp_path, tiny_dataset):
    models = (
        names.USER_TOWER,
        names.RECOMMEND_INDEX,
        names.RANKING_FEATURES,
        names.RECOMMEND_RANKER,
    )
    options = BuildOptions(repo=tmp_path, only=models, dp_epsilon=3.0, dp_clip_norm=0.5)
    build(options, tiny_dataset)
    for model in (names.USER_TOWER, names.RECOMMEND_RANKER):
        privacy = read_manifest(tmp_path, model, 1)["privacy"]
        assert privacy["epsilon"] == 3.0
        assert privacy["epsilon_spent"] <= 3.0
        assert privacy["delta"] == pytest.approx(1 / privacy["users"])
        assert privacy["clip_norm"] == 0.5
        assert privacy["noise_multiplier"] > 0
        assert privacy["privacy_unit"] == "user"
    assert "privacy" not in read_manifest(tmp_path, names.RANKING_FEATURES, 1)


def test_private_search_ranker_groups_belong_to_their_sessions_users(tiny_dataset):
    rng = np.random.default_rng(0)
    queries = sorted(tiny_dataset.interactions["query"].dropna().unique().tolist())
    n_items = len(tiny_dataset.catalog)
    scores = ranker.SearchScores(
        queries,
        rng.normal(size=(len(queries), 4)).astype(np.float32),
        rng.normal(size=(n_items, 4)).astype(np.float32),
        lambda query: np.ones(n_items, np.float32),
    )
    tables, train, _ = ranker.search_training_examples(tiny_dataset, lambda _: scores)
    # A quarter of the groups are built as for an unknown user, yet stay their user's.
    assert (train.sparse[:, 0, 0] == 0).any()
    assert (train.owners > 0).all()
    model, plan = ranker.train_torch_private(
        tables.vocabulary_sizes,
        train,
        dp.PrivacySpec(1.0),
        epochs=1,
        batch_size=128,
        learning_rate=2e-3,
        seed=0,
        uses=ranker.SEARCH_RANKER_FEATURES,
        progress=False,
    )
    assert plan.users == len(np.unique(train.owners))
    assert plan.epsilon_spent <= 1.0
    assert np.isfinite(ranker.predict_torch(model, train)).all()
