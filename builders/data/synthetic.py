"""A seeded synthetic e-commerce dataset: catalog, users, session logs and graded relevance.

The generative story, all vectorised with numpy:

* Items fall into the leaves of `taxonomy.LEAVES`. Each gets a brand of its department, attribute
  values of its leaf, a lognormal price around the leaf's median (scaled by a brand price tier)
  and a title composed from these. A hidden Zipf-like popularity ranks the items.
* Users have latent preferences: a favourite and a second category, a favourite brand, a price
  level, and a Zipf-like activity that decides how many sessions they have.
* A session has an intent: a leaf (mostly one the user prefers) and some attribute values taken
  from an "anchor" item. Search sessions turn the intent into a query, using a synonym for the
  category noun and sometimes a typo, and see what a search engine over the whole catalog
  shows for it: candidates from the intended category, the department's other categories and
  anywhere, ranked by what the engine sees (category, named attributes, popularity, noise);
  the user reaches position p with a probability falling as p ** -POSITION_BIAS and opens
  (views) a result they reach the more likely the more they want it. Browsing sessions view
  the items of the leaf they like best. How much a user wants an item follows the intent
  (its category first, then the named attributes), the favourite brand and the price level;
  the more, the more likely a view goes on to a click, a cart and a purchase.
* Each row of the log is one (session, item) with the deepest event reached.
* Graded relevance for a sample of logged queries follows from the intent behind them.
"""

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .dataset import Dataset
from .taxonomy import ATTRIBUTE_KINDS, BRANDS, LEAVES

ITEM_ZIPF_EXPONENT = 1.0
USER_ZIPF_EXPONENT = 0.8
BRAND_ZIPF_EXPONENT = 1.0
START_TIMESTAMP = 1_704_067_200  # 2024-01-01T00:00:00Z
LOG_DAYS = 90

# Per session: where its leaf comes from (favourite, second, anywhere by popularity) ...
_FAVOURITE_SHARE, _SECOND_SHARE = 0.6, 0.25
# ... how likely its intent names each attribute of the anchor item
# (in the order queries usually name them) ...
_INTENT_SHARE = {"brand": 0.25, "color": 0.35, "feature": 0.3, "material": 0.15}
# ... how strongly a match moves the user towards an item ...
_MATCH_SCORE = {"brand": 1.2, "feature": 0.8, "material": 0.6, "color": 1.0}
_FAVOURITE_BRAND_SCORE = 0.8
_PRICE_MISFIT_SCORE = 1.2
# ... how much less a candidate outside the intended category is wanted ...
_OFF_CATEGORY_SCORE = 3.0
# ... which candidates a session meets: browsing, the anchor and popular items of the leaf
# (1 + Poisson of them viewed); search, what the search engine shows, of which this many
# come from other leaves of the department and from any leaf ...
_POOL_SIZE = 24
_MEAN_EXTRA_VIEWS = 2.5
_SEARCH_NEAR_MISSES, _SEARCH_ANYWHERE = 6, 6
# ... how the search engine that logged the sessions orders them, and how much more often a
# user reaches the top of the list (position bias) ...
_ENGINE_LEAF_SCORE, _ENGINE_DEPARTMENT_SCORE = 1.5, 0.5
_ENGINE_MATCH_SCORE, _ENGINE_POPULARITY_SCORE, _ENGINE_NOISE = 0.5, 0.15, 1.0
POSITION_BIAS = 1.0
# ... and how likely a result the user reaches is opened: scale * sigmoid(score + offset) ...
_SEARCH_EXAMINATION, _VIEW_OFFSET = 2.0, 0.5
# ... and the funnel: P(click) = sigmoid(score - offset), scaled down outside search, then
# P(cart | click) = sigmoid(score - offset), then P(purchase | cart).
_CLICK_OFFSET, _BROWSE_CLICK_SCALE = 0.5, 0.7
_CART_OFFSET = 1.5
_PURCHASE_AFTER_CART = 0.55
_CANONICAL_NOUN_SHARE = 0.4
_EVENTS = np.array(["view", "click", "add_to_cart", "purchase"], dtype=object)
_MODEL_NAMES = ("Air", "Pro", "Max", "Lite", "Ultra", "Classic", "Sport", "Plus", "Neo", "Flex")
_LARGE_SIZE = 200_000  # report progress on stderr from this many items or sessions

_DEPARTMENTS = tuple(dict.fromkeys(leaf.department for leaf in LEAVES))
_LEAF_DEPARTMENT = np.array([_DEPARTMENTS.index(leaf.department) for leaf in LEAVES])
_BRAND_NAMES = tuple(brand for department in _DEPARTMENTS for brand in BRANDS[department])
_DEPARTMENT_BRANDS = tuple(
    np.array([_BRAND_NAMES.index(brand) for brand in BRANDS[department]])
    for department in _DEPARTMENTS
)
# Global vocabularies of attribute values; item codes index them, -1 meaning "not applicable".
_VOCABULARY = {
    kind: tuple(sorted({value for leaf in LEAVES for value in leaf.values(kind)}))
    for kind in ATTRIBUTE_KINDS
}
_VOCABULARY["brand"] = _BRAND_NAMES


def _leaf_codes(leaf_index: int, kind: str) -> np.ndarray:
    return np.array([_VOCABULARY[kind].index(v) for v in LEAVES[leaf_index].values(kind)], int)


def _zipf_weights(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


def _lookup(kind: str, codes: np.ndarray, form: Callable[[str], str] = str) -> np.ndarray:
    """Attribute strings (in the given form) for codes, None where the code is -1."""
    table = np.array([*map(form, _VOCABULARY[kind]), None], dtype=object)  # -1 reads the None
    return table[codes]


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.started = time.perf_counter()

    def stage(self, message: str) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.started
            print(f"synthetic: {message} ({elapsed:.1f} s)", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class _Items:
    """Catalog columns as arrays indexed by item position (item_id - 1)."""

    leaf: np.ndarray
    codes: dict[str, np.ndarray]  # ATTRIBUTE_KINDS and "brand"
    price: np.ndarray
    popularity: np.ndarray
    by_leaf: np.ndarray  # item positions ordered by leaf
    leaf_start: np.ndarray  # by_leaf[leaf_start[l]:leaf_end[l]] are leaf l's items
    leaf_end: np.ndarray
    cumulative_popularity: np.ndarray  # cumsum of popularity in by_leaf order

    @property
    def leaf_popularity(self) -> np.ndarray:
        totals = np.bincount(self.leaf, weights=self.popularity, minlength=len(LEAVES))
        return totals / totals.sum()

    def sample_in_leaf(self, rng: np.random.Generator, leaves: np.ndarray) -> np.ndarray:
        """One popularity-weighted item position from each given (non-empty) leaf."""
        cumulative = self.cumulative_popularity
        low = np.where(self.leaf_start > 0, cumulative[self.leaf_start - 1], 0.0)[leaves]
        high = cumulative[self.leaf_end - 1][leaves]
        draws = low + rng.random(leaves.shape) * (high - low)
        slots = np.searchsorted(cumulative, draws, side="right")
        return self.by_leaf[np.minimum(slots, self.leaf_end[leaves] - 1)]


def generate(
    seed: int = 0,
    n_items: int = 10_000,
    n_users: int = 2_000,
    n_sessions: int | None = None,
    search_share: float = 0.7,
    typo_rate: float = 0.08,
    n_relevance_queries: int = 300,
) -> Dataset:
    """Build the synthetic dataset.

    `n_sessions` defaults to 10 per user. `search_share` of the sessions start with a query, and
    `typo_rate` of the queries carry a typo. Relevance is graded for `n_relevance_queries`
    distinct logged queries drawn at random.
    """
    if n_items < 1 or n_users < 1:
        raise ValueError("n_items and n_users must be at least 1")
    n_sessions = 10 * n_users if n_sessions is None else n_sessions
    if n_sessions < 1:
        raise ValueError("n_sessions must be at least 1")
    rng = np.random.default_rng(seed)
    progress = _Progress(max(n_items, n_sessions) >= _LARGE_SIZE)

    items = _make_items(rng, n_items)
    catalog = _catalog_frame(rng, items)
    progress.stage(f"catalog of {n_items:,} items")
    users = _make_users(rng, n_users, items)
    sessions = _make_sessions(rng, n_sessions, users, items, search_share)
    queries = _make_queries(rng, sessions, typo_rate)
    interactions = _make_interactions(rng, sessions, queries, users, items)
    progress.stage(f"{n_sessions:,} sessions, {len(interactions):,} interactions")
    logged = np.zeros(n_sessions, dtype=bool)  # a search may open no result: no rows
    logged[interactions["session_id"].to_numpy() - 1] = True
    relevance = _grade_queries(rng, queries, sessions, items, n_relevance_queries, logged)
    progress.stage("relevance")
    dataset = Dataset(
        name="synthetic",
        catalog=catalog,
        interactions=interactions,
        users=_users_frame(users),
        relevance=relevance,
        params={
            "seed": seed,
            "n_items": n_items,
            "n_users": n_users,
            "n_sessions": n_sessions,
            "search_share": search_share,
            "typo_rate": typo_rate,
            "n_relevance_queries": n_relevance_queries,
        },
    )
    progress.stage("dataset checked and fingerprinted")
    return dataset


def _make_items(rng: np.random.Generator, n_items: int) -> _Items:
    leaf_weights = np.array([leaf.weight for leaf in LEAVES])
    leaf = rng.choice(len(LEAVES), size=n_items, p=leaf_weights / leaf_weights.sum())
    popularity = _zipf_weights(n_items, ITEM_ZIPF_EXPONENT)[rng.permutation(n_items)]
    codes = {kind: np.full(n_items, -1) for kind in (*ATTRIBUTE_KINDS, "brand")}
    for leaf_index, spec in enumerate(LEAVES):
        members = np.flatnonzero(leaf == leaf_index)
        brands = _DEPARTMENT_BRANDS[_DEPARTMENTS.index(spec.department)]
        brand_weights = _zipf_weights(len(brands), BRAND_ZIPF_EXPONENT)
        codes["brand"][members] = rng.choice(brands, size=len(members), p=brand_weights)
        for kind in ATTRIBUTE_KINDS:
            allowed = _leaf_codes(leaf_index, kind)
            if len(allowed):
                codes[kind][members] = rng.choice(allowed, size=len(members))
    brand_price_tier = np.exp(rng.normal(0.0, 0.25, size=len(_BRAND_NAMES)))
    median = np.array([spec.price for spec in LEAVES])[leaf]
    spread = np.array([spec.price_spread for spec in LEAVES])[leaf]
    raw_price = median * brand_price_tier[codes["brand"]] * np.exp(rng.normal(0.0, spread))
    price = np.maximum(np.round(raw_price) - 0.01, 0.99)
    by_leaf = np.argsort(leaf, kind="stable")
    sorted_leaves = leaf[by_leaf]
    leaf_ids = np.arange(len(LEAVES))
    return _Items(
        leaf=leaf,
        codes=codes,
        price=price,
        popularity=popularity,
        by_leaf=by_leaf,
        leaf_start=np.searchsorted(sorted_leaves, leaf_ids, side="left"),
        leaf_end=np.searchsorted(sorted_leaves, leaf_ids, side="right"),
        cumulative_popularity=np.cumsum(popularity[by_leaf]),
    )


def _catalog_frame(rng: np.random.Generator, items: _Items) -> pd.DataFrame:
    n_items = len(items.leaf)
    columns = {kind: _lookup(kind, items.codes[kind]) for kind in (*ATTRIBUTE_KINDS, "brand")}
    shown = {kind: _lookup(kind, items.codes[kind], _display) for kind in ATTRIBUTE_KINDS}
    models = np.array(_MODEL_NAMES, dtype=object)[rng.integers(len(_MODEL_NAMES), size=n_items)]
    model_numbers = rng.integers(1, 10, size=n_items).astype(str).astype(object)
    nouns = np.array([leaf.nouns[0].title() for leaf in LEAVES], dtype=object)[items.leaf]
    # E.g. "Kestrel Air 3 Waterproof Leather Hiking Boots, Brown, Size 42".
    titles = [
        " ".join(word for word in words[:6] if word) + "".join(f", {d}" for d in words[6:] if d)
        for words in zip(
            columns["brand"],
            models,
            model_numbers,
            shown["feature"],
            shown["material"],
            nouns,
            shown["color"],
            shown["size"],
            strict=True,
        )
    ]
    return pd.DataFrame(
        {
            "item_id": np.arange(1, n_items + 1, dtype=np.int64),
            "title": titles,
            "category": np.array([leaf.name for leaf in LEAVES], dtype=object)[items.leaf],
            "category_path": np.array([leaf.path for leaf in LEAVES], dtype=object)[items.leaf],
            "brand": columns["brand"],
            "price": items.price,
            **{kind: columns[kind] for kind in ATTRIBUTE_KINDS},
        }
    )


def _display(value: str) -> str:
    """Title-case an attribute value unless it is already written with capitals ("USB-C")."""
    return value.title() if value == value.lower() else value


@dataclass(frozen=True)
class _Users:
    favourite_leaf: np.ndarray
    second_leaf: np.ndarray
    favourite_brand: np.ndarray
    price_level: np.ndarray
    activity: np.ndarray  # share of all sessions


def _make_users(rng: np.random.Generator, n_users: int, items: _Items) -> _Users:
    leaf_popularity = items.leaf_popularity
    favourite_leaf = rng.choice(len(LEAVES), size=n_users, p=leaf_popularity)
    favourite_brand = np.empty(n_users, dtype=int)
    for department, brands in enumerate(_DEPARTMENT_BRANDS):
        members = np.flatnonzero(_LEAF_DEPARTMENT[favourite_leaf] == department)
        weights = _zipf_weights(len(brands), BRAND_ZIPF_EXPONENT)
        favourite_brand[members] = rng.choice(brands, size=len(members), p=weights)
    return _Users(
        favourite_leaf=favourite_leaf,
        second_leaf=rng.choice(len(LEAVES), size=n_users, p=leaf_popularity),
        favourite_brand=favourite_brand,
        price_level=np.exp(rng.normal(0.0, 0.35, size=n_users)),
        activity=_zipf_weights(n_users, USER_ZIPF_EXPONENT)[rng.permutation(n_users)],
    )


def _users_frame(users: _Users) -> pd.DataFrame:
    leaf_names = np.array([leaf.name for leaf in LEAVES], dtype=object)
    return pd.DataFrame(
        {
            "user_id": np.arange(1, len(users.activity) + 1, dtype=np.int64),
            "favorite_category": leaf_names[users.favourite_leaf],
            "second_category": leaf_names[users.second_leaf],
            "favorite_brand": _lookup("brand", users.favourite_brand),
            "price_level": users.price_level,
            "activity": users.activity,
        }
    )


@dataclass(frozen=True)
class _Sessions:
    user: np.ndarray
    leaf: np.ndarray
    anchor: np.ndarray  # the item the intent's attributes come from
    is_search: np.ndarray
    intent: dict[str, np.ndarray]  # attribute code per session, -1 when the intent omits it


def _make_sessions(
    rng: np.random.Generator, n_sessions: int, users: _Users, items: _Items, search_share: float
) -> _Sessions:
    user = rng.choice(len(users.activity), size=n_sessions, p=users.activity)
    source = rng.random(n_sessions)
    anywhere = rng.choice(len(LEAVES), size=n_sessions, p=items.leaf_popularity)
    leaf = np.where(
        source < _FAVOURITE_SHARE,
        users.favourite_leaf[user],
        np.where(source < _FAVOURITE_SHARE + _SECOND_SHARE, users.second_leaf[user], anywhere),
    )
    anchor = items.sample_in_leaf(rng, leaf)
    intent = {
        kind: np.where(rng.random(n_sessions) < share, items.codes[kind][anchor], -1)
        for kind, share in _INTENT_SHARE.items()
    }
    return _Sessions(user, leaf, anchor, rng.random(n_sessions) < search_share, intent)


def _make_queries(rng: np.random.Generator, sessions: _Sessions, typo_rate: float) -> np.ndarray:
    """The query of each session (None for sessions without search)."""
    n_sessions = len(sessions.leaf)
    queries = np.full(n_sessions, None, dtype=object)
    # Modifiers keep their usual order unless the noise swaps neighbours.
    order_noise = 1.5 * rng.random((n_sessions, len(_INTENT_SHARE)))
    noun_draws = rng.random(n_sessions)
    has_typo = rng.random(n_sessions) < typo_rate
    kinds = tuple(_INTENT_SHARE)
    for session in np.flatnonzero(sessions.is_search):
        modifiers = [
            (k + order_noise[session, k], _VOCABULARY[kind][sessions.intent[kind][session]])
            for k, kind in enumerate(kinds)
            if sessions.intent[kind][session] >= 0
        ]
        words = [word for _, word in sorted(modifiers)]
        words.append(_noun(LEAVES[sessions.leaf[session]].nouns, noun_draws[session]))
        query = " ".join(words).lower()
        queries[session] = _add_typo(rng, query) if has_typo[session] else query
    return queries


def _noun(nouns: tuple[str, ...], draw: float) -> str:
    """The canonical noun with _CANONICAL_NOUN_SHARE, otherwise one of its synonyms."""
    if draw < _CANONICAL_NOUN_SHARE or len(nouns) == 1:
        return nouns[0]
    synonym = int((draw - _CANONICAL_NOUN_SHARE) / (1 - _CANONICAL_NOUN_SHARE) * (len(nouns) - 1))
    return nouns[1 + min(synonym, len(nouns) - 2)]


def _add_typo(rng: np.random.Generator, query: str) -> str:
    """Drop, double, swap or replace one inner letter of a word of four or more letters."""
    words = query.split(" ")
    candidates = [i for i, word in enumerate(words) if len(word) >= 4 and word.isalpha()]
    if not candidates:
        return query
    index = candidates[rng.integers(len(candidates))]
    word = words[index]
    at = int(rng.integers(1, len(word) - 1))
    operation = rng.integers(4)
    if operation == 0:
        typo = word[:at] + word[at + 1 :]
    elif operation == 1:
        typo = word[:at] + word[at] + word[at:]
    elif operation == 2:
        typo = word[:at] + word[at + 1] + word[at] + word[at + 2 :]
    else:
        letters = [c for c in "abcdefghijklmnopqrstuvwxyz" if c != word[at]]
        typo = word[:at] + letters[rng.integers(len(letters))] + word[at + 1 :]
    if typo == word:  # swapping two equal letters
        typo = word[:at] + word[at + 1 :]
    words[index] = typo
    return " ".join(words)


def _make_interactions(
    rng: np.random.Generator,
    sessions: _Sessions,
    queries: np.ndarray,
    users: _Users,
    items: _Items,
) -> pd.DataFrame:
    n_sessions = len(sessions.leaf)
    pool = _candidate_pool(rng, sessions, items)
    duplicate = np.zeros(pool.shape, dtype=bool)
    duplicate[:, 1:] = pool[:, 1:] == pool[:, :-1]

    matches = np.zeros(pool.shape)
    for kind, weight in _MATCH_SCORE.items():
        wanted = sessions.intent[kind][:, None]
        matches += weight * ((items.codes[kind][pool] == wanted) & (wanted >= 0))
    in_leaf = items.leaf[pool] == sessions.leaf[:, None]
    in_department = _LEAF_DEPARTMENT[items.leaf[pool]] == _LEAF_DEPARTMENT[sessions.leaf][:, None]
    # How much the user wants each candidate: intent first, then their own taste.
    score = matches - _OFF_CATEGORY_SCORE * ~in_leaf
    favourite_brand = users.favourite_brand[sessions.user][:, None]
    score += _FAVOURITE_BRAND_SCORE * (items.codes["brand"][pool] == favourite_brand)
    leaf_median = np.array([leaf.price for leaf in LEAVES])[sessions.leaf]
    preferred_price = (leaf_median * users.price_level[sessions.user])[:, None]
    score -= _PRICE_MISFIT_SCORE * np.abs(np.log(items.price[pool] / preferred_price))

    # Search: the engine ranks the candidates by what it can see of the query (category and
    # department, named attributes, popularity; with noise); the user reaches position p with
    # probability min(1, _SEARCH_EXAMINATION * p ** -POSITION_BIAS) and opens what they reach
    # with probability sigmoid(score + _VIEW_OFFSET). Browsing: the user looks at the
    # candidates they like best (after Gumbel noise), 1 + Poisson of them.
    engine = (
        _ENGINE_LEAF_SCORE * in_leaf
        + _ENGINE_DEPARTMENT_SCORE * in_department
        + _ENGINE_MATCH_SCORE * matches
        + _ENGINE_POPULARITY_SCORE * np.log(items.popularity[pool] * len(items.leaf))
        + _ENGINE_NOISE * rng.gumbel(size=pool.shape)
    )
    browse = np.where(duplicate, -np.inf, score + rng.gumbel(size=pool.shape))
    order_key = np.where(sessions.is_search[:, None], np.where(duplicate, -np.inf, engine), browse)
    view_order = np.argsort(-order_key, axis=1)
    positions = np.arange(1, _POOL_SIZE + 1)[None, :]
    distinct = (~duplicate).sum(axis=1)[:, None]
    examined = rng.random(pool.shape) < np.minimum(
        1.0, _SEARCH_EXAMINATION * positions.astype(float) ** -POSITION_BIAS
    ) * _sigmoid(np.take_along_axis(score, view_order, axis=1) + _VIEW_OFFSET)
    n_views = 1 + rng.poisson(_MEAN_EXTRA_VIEWS, size=n_sessions)[:, None]
    viewed = np.where(sessions.is_search[:, None], examined, positions <= n_views)
    viewed &= positions <= distinct
    viewed_items = np.take_along_axis(pool, view_order, axis=1)
    viewed_score = np.take_along_axis(score, view_order, axis=1)

    click_scale = np.where(sessions.is_search, 1.0, _BROWSE_CLICK_SCALE)[:, None]
    clicked = rng.random(pool.shape) < click_scale * _sigmoid(viewed_score - _CLICK_OFFSET)
    carted = clicked & (rng.random(pool.shape) < _sigmoid(viewed_score - _CART_OFFSET))
    purchased = carted & (rng.random(pool.shape) < _PURCHASE_AFTER_CART)
    stage = clicked.astype(int) + carted + purchased

    start = START_TIMESTAMP + rng.integers(0, LOG_DAYS * 86_400, size=n_sessions)
    offsets = np.cumsum(rng.exponential(40.0, size=pool.shape), axis=1).astype(np.int64)
    session_of_row = np.repeat(np.arange(n_sessions), viewed.sum(axis=1))
    shown_at = np.where(sessions.is_search[:, None], positions, 0)
    return pd.DataFrame(
        {
            "user_id": sessions.user[session_of_row].astype(np.int64) + 1,
            "item_id": viewed_items[viewed].astype(np.int64) + 1,
            "event": _EVENTS[stage[viewed]],
            "timestamp": (start[:, None] + offsets)[viewed],
            "query": queries[session_of_row],
            "session_id": session_of_row.astype(np.int64) + 1,
            "position": np.broadcast_to(shown_at, pool.shape)[viewed].astype(np.int64),
        }
    )


def _candidate_pool(rng: np.random.Generator, sessions: _Sessions, items: _Items) -> np.ndarray:
    """_POOL_SIZE candidate item positions per session, sorted (duplicates adjacent).

    Browsing: the anchor and popular items of the intent's leaf. Search: what an engine over
    the whole catalog retrieves for the query: the anchor and popular items of the leaf, then
    items of the department's other leaves and of any leaf (near misses and lexical matches
    of the named attributes elsewhere).
    """
    n_sessions = len(sessions.leaf)
    leaves = np.repeat(sessions.leaf[:, None], _POOL_SIZE, axis=1)
    # LEAVES lists each department's leaves together: a department is a range of leaves.
    department = _LEAF_DEPARTMENT[sessions.leaf]
    first_leaf = np.searchsorted(_LEAF_DEPARTMENT, department, side="left")
    leaf_count = np.searchsorted(_LEAF_DEPARTMENT, department, side="right") - first_leaf
    near = first_leaf + (rng.random(n_sessions) * leaf_count).astype(int)
    anywhere = rng.choice(len(LEAVES), size=n_sessions, p=items.leaf_popularity)
    first_near = _POOL_SIZE - _SEARCH_NEAR_MISSES - _SEARCH_ANYWHERE
    search = sessions.is_search
    leaves[search, first_near : _POOL_SIZE - _SEARCH_ANYWHERE] = near[search, None]
    leaves[search, _POOL_SIZE - _SEARCH_ANYWHERE :] = anywhere[search, None]
    pool = items.sample_in_leaf(rng, leaves)
    pool[:, 0] = sessions.anchor
    pool.sort(axis=1)
    return pool


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _grade_queries(
    rng: np.random.Generator,
    queries: np.ndarray,
    sessions: _Sessions,
    items: _Items,
    n_queries: int,
    logged: np.ndarray,
) -> pd.DataFrame | None:
    """Grades for distinct logged queries from the intent of the first session that used each
    (`logged`: the sessions with rows in the log).

    3: the query's category and every attribute it names; 2: the category only; 1: every named
    attribute in another category of the same department (queries naming no attribute have none).
    None when no session searched.
    """
    searched = np.flatnonzero(sessions.is_search & logged)
    distinct, first_use = np.unique(queries[searched].astype(str), return_index=True)
    chosen = np.sort(rng.choice(len(distinct), size=min(n_queries, len(distinct)), replace=False))
    positions, grades = [], []
    for session in searched[first_use[chosen]]:
        leaf = sessions.leaf[session]
        named = [
            (items.codes[kind], sessions.intent[kind][session])
            for kind in _INTENT_SHARE
            if sessions.intent[kind][session] >= 0
        ]
        in_leaf = items.by_leaf[items.leaf_start[leaf] : items.leaf_end[leaf]]
        partial = in_leaf[:0]
        if named:
            # LEAVES lists each department's leaves together, so its items are one by_leaf slice.
            department_leaves = np.flatnonzero(_LEAF_DEPARTMENT[leaf] == _LEAF_DEPARTMENT)
            first, last = department_leaves[0], department_leaves[-1]
            department = items.by_leaf[items.leaf_start[first] : items.leaf_end[last]]
            partial = department[(items.leaf[department] != leaf) & _matches(department, named)]
        positions += [in_leaf, partial]
        grades += [np.where(_matches(in_leaf, named), 3, 2), np.ones(len(partial), dtype=int)]
    if not positions:
        return None
    per_query = [len(a) + len(b) for a, b in zip(positions[::2], positions[1::2], strict=True)]
    return pd.DataFrame(
        {
            "query": np.repeat(np.array(distinct[chosen].tolist(), dtype=object), per_query),
            "item_id": np.concatenate(positions).astype(np.int64) + 1,
            "grade": np.concatenate(grades).astype(np.int64),
        }
    )


def _matches(positions: np.ndarray, named: list[tuple[np.ndarray, int]]) -> np.ndarray:
    matched = np.ones(len(positions), dtype=bool)
    for codes, wanted in named:
        matched &= codes[positions] == wanted
    return matched
