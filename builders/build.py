"""Build the model repository: every stage of `search` and `recommend`, versioned.

A build writes each selected model at one version number `V` and resolves
every other model it needs to its latest version already in the repository;
later steps read what earlier ones wrote (the encoder ONNX file, the indexes)
from the repository, so a partial rebuild (`only`) works the same way as a
full one. The pipeline versions pin the stage versions they were built with,
and the served versions of each stage follow from those pins.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import py_compile
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from builders import dp, index_stage, names, pipelines, profiles, pseudonyms, tensorrt
from builders.data import Dataset, ids_by_user_index, with_user_indexes
from builders.own_models import OwnModelError, OwnModels, Prepared
from builders.pipelines import PIPELINE_FILE, PipelineSpec, Stage
from builders.progress import progress
from builders.repository import (
    CONFIG,
    MANIFEST,
    RepositoryError,
    VersionExistsError,
    model_versions,
    next_version,
    read_manifest,
    set_served_versions,
    write_config,
    write_version,
)
from builders.retrieval import check_pairing, item_matrix
from builders.runtime.fusion import FusionSettings
from builders.runtime.synonyms import FILE as SYNONYMS_FILE
from builders.runtime.synonyms import Synonyms
from builders.runtime.synonyms import fingerprint as synonyms_fingerprint
from builders.runtime.synonyms import read as read_synonyms_text
from builders.runtime.tokenization import check_buckets
from builders.specs import EnsembleSpec, ModelSpec, parse_pbtxt, with_slo

RUNTIME = Path(__file__).resolve().parent / "runtime"
#: The catalog fields a pipeline release carries for display (clients, demo).
CATALOG_FILE = "catalog.parquet"
CATALOG_DISPLAY_COLUMNS = ("item_id", "title", "category", "brand", "price")
#: Pipeline releases kept served (the newest ones): enough for a canary next to stable.
SERVED_RELEASES = 2
#: Ranker kinds a build trains, and the choices it takes (`BuildOptions.ranker`).
RANKER_KINDS = ("dcn", "lambdamart")
RANKER_CHOICES = ("auto", *RANKER_KINDS)


@dataclass(frozen=True)
class BuildOptions:
    repo: Path
    profile: str = "cpu"
    version: int | None = None  # None: the next free version
    only: tuple[str, ...] = ()  # empty: every model the dataset supports
    num_candidates: int = 100
    max_length: int = 32
    #: Widths the query tokenizer pads to (max_length is always the last); () pads to max_length.
    length_buckets: tuple[int, ...] = (8, 16)
    #: The query encoder search uses: a variant, or auto (the fastest that passes the gate,
    #: `builders.encoder_variants`; the teacher when none does). Items always take the teacher.
    encoder: str = names.AUTO_ENCODER
    seed: int = 0
    index: str = "auto"  # exact, ann or auto (by catalog size: builders.index_stage)
    ann_recall_target: float = 0.99  # recall@100 of the ANN index against exact search
    fusion: FusionSettings = FusionSettings()  # how search fuses dense and BM25 candidates
    #: A p99 latency SLO to bound every stage's queue for (`specs.with_slo`); None leaves the
    #: queues unbounded, the default (`specs.QueuePolicy` says why).
    slo_ms: float | None = None
    #: The rankers' kind: dcn (DCN-v2), lambdamart (LightGBM, `builders.gbdt`) or auto (both
    #: trained on the same groups, the better held-out figure served: `gbdt.choose`; DCN-v2
    #: alone with DP, which covers it only).
    ranker: str = "auto"
    #: A team's own models (`builders.own_models`): they replace the ones the build trains.
    own: OwnModels = OwnModels()
    #: A synonyms file (Solr format) the lexical stage expands queries with (`hybrid_retrieval`).
    synonyms: Path | None = None
    #: Replace raw user ids by keyed hashes before anything is trained or written
    #: (`builders.pseudonyms`); needs `user_key`, which is never written anywhere.
    pseudonymise_users: bool = False
    user_key: bytes | None = field(default=None, repr=False, compare=False)
    #: Train the two-tower model and the DCN rankers with DP-SGD at this epsilon (`builders.dp`,
    #: one user's events as the privacy unit); None: without DP. delta None: 1 / training users.
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    dp_clip_norm: float = dp.DEFAULT_CLIP_NORM

    def __post_init__(self) -> None:
        if self.profile not in profiles.PROFILES:
            raise ValueError(f"profile must be one of {', '.join(profiles.PROFILES)}")
        unknown = sorted(set(self.only) - set(names.ALL_MODELS))
        if unknown:
            raise ValueError(
                f"unknown model(s) {', '.join(unknown)}; models: {', '.join(names.ALL_MODELS)}"
            )
        choices = (names.AUTO_ENCODER, *names.QUERY_ENCODERS)
        if self.encoder not in choices:
            raise ValueError(f"encoder must be one of {', '.join(choices)}")
        if self.version is not None and self.version < 1:
            raise ValueError("versions start at 1")
        if self.index not in index_stage.INDEX_CHOICES:
            raise ValueError(f"index must be one of {', '.join(index_stage.INDEX_CHOICES)}")
        if not 0 < self.ann_recall_target <= 1:
            raise ValueError("ann_recall_target must be in (0, 1]")
        if self.slo_ms is not None and not self.slo_ms > 0:
            raise ValueError(f"slo_ms must be a positive number of milliseconds, got {self.slo_ms}")
        check_buckets(self.length_buckets, self.max_length)
        if self.ranker not in RANKER_CHOICES:
            raise ValueError(f"ranker must be one of {', '.join(RANKER_CHOICES)}")
        if self.dp_epsilon is None and self.dp_delta is not None:
            raise ValueError("a DP delta needs a DP epsilon (--dp-epsilon)")
        if self.privacy is not None and self.ranker == "lambdamart":
            raise ValueError("DP training covers the DCN rankers only: use ranker dcn with DP")
        if self.pseudonymise_users:
            if self.user_key is None:
                raise ValueError(
                    "pseudonymising user ids needs the key: --user-key-file or "
                    f"${pseudonyms.KEY_ENV}"
                )
            pseudonyms.check_key(self.user_key)

    @property
    def privacy(self) -> dp.PrivacySpec | None:
        """What the DP options ask for (checked: epsilon > 0, delta in (0, 1)); None: no DP."""
        if self.dp_epsilon is None:
            return None
        return dp.PrivacySpec(self.dp_epsilon, self.dp_delta, self.dp_clip_norm)

    @property
    def ranker_kinds(self) -> tuple[str, ...]:
        """The ranker kinds to train: the one asked for, or for auto both (DCN-v2 with DP)."""
        if self.ranker != "auto":
            return (self.ranker,)
        return ("dcn",) if self.privacy is not None else RANKER_KINDS

    @property
    def buckets(self) -> tuple[int, ...]:
        """The tokenizer's padded widths, ascending, ending at max_length."""
        return check_buckets(self.length_buckets, self.max_length)

    def encoder_plan_shapes(self) -> tuple[tuple[int, int], ...]:
        """The TensorRT profile (min, opt, max) of the encoder's inputs: batch 1 at the
        narrowest width, 16 at the middle one, the stages' largest batch at max_length."""
        widths = self.buckets
        return ((1, widths[0]), (16, widths[len(widths) // 2]), (names.STAGE_MAX_BATCH, widths[-1]))


@dataclass
class BuildContext:
    options: BuildOptions
    dataset: Dataset
    version: int
    resolved: dict[str, int] = field(default_factory=dict)  # model -> version to use
    built: list[str] = field(default_factory=list)
    #: The teacher's item embeddings, from the encoders' step to the search index's.
    item_embeddings: np.ndarray | None = None
    #: A team's own models, checked and converted before the build writes anything.
    own: Prepared = field(default_factory=Prepared)
    #: The options' synonyms file, read and checked before the build writes anything.
    synonyms: Synonyms | None = None
    #: The served user ids (raw or pseudonyms) in user-index order: `dataset` holds user
    #: indexes instead (`data.with_user_indexes`), and the files that map ids to indexes
    #: (the user tower's lookup, the features stage's tables) are written with these.
    user_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @property
    def repo(self) -> Path:
        return self.options.repo

    def path(self, model: str) -> Path:
        """The version folder of `model` that this build uses."""
        if model not in self.resolved:
            versions = model_versions(self.repo, model)
            if not versions:
                raise RepositoryError(
                    f"{model} is needed but neither built now nor present in {self.repo}"
                )
            self.resolved[model] = versions[-1]
        return self.repo / model / str(self.resolved[model])

    @property
    def encoder(self) -> str:
        """The query encoder search uses: the chosen one, or the one the encoders' build
        chose (recorded in the teacher's manifest; the teacher where none is recorded)."""
        if self.options.encoder != names.AUTO_ENCODER:
            return self.options.encoder
        self.path(names.TEXT_ENCODER)
        manifest = read_manifest(self.repo, names.TEXT_ENCODER, self.resolved[names.TEXT_ENCODER])
        return manifest["metrics"].get("variants", {}).get("chosen", names.TEXT_ENCODER)

    def manifest_base(self, depends_on: dict[str, int] | None = None) -> dict:
        return {
            "dataset": {
                "name": self.dataset.name,
                "fingerprint": self.dataset.fingerprint,
                "params": {k: str(v) for k, v in self.dataset.params.items()},
            },
            "profile": self.options.profile,
            "user_ids": pseudonyms.manifest_record(
                self.options.user_key if self.options.pseudonymise_users else None
            ),
            "depends_on": depends_on or {},
        }

    def write(
        self,
        spec: ModelSpec | EnsembleSpec,
        populate: Callable[[Path], None],
        *,
        depends_on: dict[str, int] | None = None,
        metrics: dict | None = None,
        parity: dict | None = None,
        trees: bool = False,
        privacy: dp.PrivacyPlan | None = None,
    ) -> Path:
        spec = with_slo(spec, self.options.slo_ms)
        gpu = profiles.adapt(spec, "gpu", trees=trees)
        # A tree model rewrites the gpu config too: the one other versions left is not its own.
        named_configs = {"gpu": gpu} if gpu != spec or trees else {}
        spec = profiles.adapt(spec, self.options.profile, trees=trees)
        manifest = self.manifest_base(depends_on)
        # populate() fills `parity` while writing, so keep the very dict it fills.
        manifest["metrics"] = {} if metrics is None else metrics
        manifest["parity"] = {} if parity is None else parity
        if privacy is not None:
            manifest["privacy"] = privacy.manifest()
        target = write_version(
            self.repo, spec, self.version, populate, manifest, named_configs=named_configs
        )
        self.resolved[spec.name] = self.version
        self.built.append(spec.name)
        progress(f"wrote {spec.name} version {self.version}")
        return target


def copy_runtime(folder: Path, *modules: str, glue: str) -> None:
    """Put pure runtime modules, `stage_glue` and the glue (as model.py) into a version
    folder, with their bytecode: a backend stub that imports them then writes no
    `__pycache__` into the repository, which Triton would take for a change to the model
    (it reloads a changed model from its files when it next loads a pipeline of it, or
    polls, dropping the config it was loaded with)."""
    copies = {f"{module}.py": f"{module}.py" for module in (*modules, "stage_glue")}
    copies[f"{glue}.py"] = "model.py"
    for source, name in copies.items():
        shutil.copy2(RUNTIME / source, folder / name)
        py_compile.compile(str(folder / name), doraise=True)


# -- search side ----------------------------------------------------------------------
def build_query_tokenizer(ctx: BuildContext) -> None:
    from builders import text_encoder

    def populate(folder: Path) -> None:
        copy_runtime(folder, "tokenization", glue="tokenizer_model")
        shutil.copy2(text_encoder.tokenizer_json(), folder / "tokenizer.json")

    ctx.write(names.query_tokenizer_spec(ctx.options.max_length, ctx.options.buckets), populate)


def build_text_encoders(ctx: BuildContext) -> None:
    """The teacher and its query students, measured and gated against the teacher
    (`builders.encoder_variants`); the teacher's manifest records every variant's figures
    and the default choice, each student's manifest its training."""
    from builders import encoder_variants, query_students, text_encoder

    teacher_name = names.TEXT_ENCODER
    with tempfile.TemporaryDirectory(prefix="query-encoders-") as folder:
        paths = {name: Path(folder) / f"{name}.onnx" for name in names.QUERY_ENCODERS}
        progress("exporting the text encoder (the teacher) to ONNX")
        teacher = text_encoder.load_reference()
        if ctx.own.encoder_onnx is None:
            parity = {teacher_name: text_encoder.export_onnx(paths[teacher_name], teacher)}
        else:  # exported and checked by own_models.prepare
            shutil.copy2(ctx.own.encoder_onnx, paths[teacher_name])
            parity = {teacher_name: ctx.own.encoder_parity}
        held_out = encoder_variants.held_out_queries(ctx.dataset)
        progress(
            f"distilling query students into the teacher's space ({len(held_out)} graded "
            "queries held out)"
        )
        students = query_students.train_students(
            teacher,
            paths[teacher_name],
            text_encoder.tokenizer_json(),
            ctx.dataset,
            held_out,
            item_texts(ctx.dataset),
            seed=ctx.options.seed,
            max_length=ctx.options.max_length,
        )
        training = {}
        for name, (student, record) in students.items():
            parity[name] = text_encoder.export_onnx(paths[name], student)
            training[name] = record
        ctx.item_embeddings = embed_items(ctx, paths[teacher_name])
        progress("measuring the variants' speed and their search quality against the teacher")
        record = encoder_variants.evaluate(
            paths,
            ctx.dataset,
            held_out,
            served_search(ctx, paths[teacher_name], ctx.item_embeddings),
            ctx.options.max_length,
        )
        for line in encoder_variants.table(record):
            progress(line)
        for name in names.QUERY_ENCODERS:

            def populate(folder: Path, source: Path = paths[name], name: str = name) -> None:
                shutil.copy2(source, folder / "model.onnx")
                if name == teacher_name:
                    shapes = ctx.options.encoder_plan_shapes()
                    tensorrt.build_plan(
                        folder / "model.onnx",
                        folder / "model.plan",
                        {"input_ids": shapes, "attention_mask": shapes},
                    )

            is_teacher = name == teacher_name
            ctx.write(
                names.text_encoder_spec(name, ctx.item_embeddings.shape[1]),
                populate,
                depends_on={} if is_teacher else {teacher_name: ctx.version},
                metrics={"variants": record, **own_record(ctx, name)}
                if is_teacher
                else {**record["variants"][name], "training": training[name]},
                parity=parity[name],
            )


def embed_items(ctx: BuildContext, teacher: Path) -> np.ndarray:
    """The teacher's embeddings of the catalog's item texts, in item-index order."""
    from builders import text_encoder

    progress(f"embedding {len(ctx.dataset.catalog):,} items with {names.TEXT_ENCODER}")
    return text_encoder.embed(teacher, item_texts(ctx.dataset), max_length=ctx.options.max_length)


def served_search(
    ctx: BuildContext,
    teacher: Path,
    item_embeddings: np.ndarray,
    order: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> Callable:
    """What the served search answers without a user (`encoder_variants.Search`): exact
    dense search over the teacher's `item_embeddings`, BM25 over the item texts, the build's
    fusion and, where the data has logged searches, a search ranker: `order` (the ranker's
    `sparse`, `dense` -> `score`), by default the DCN-v2 as `build_search_ranker` trains it,
    on the scores of the `teacher` (its ONNX file), whichever variant embeds the queries."""
    from builders import ranker
    from builders.offline import fused_candidates
    from builders.retrieval import exact_top_k
    from builders.runtime.features import ranker_inputs
    from builders.runtime.lexical import LexicalIndex
    from builders.runtime.topk import top_k

    n = min(ctx.options.num_candidates, len(item_embeddings))

    @functools.cache
    def lexical() -> LexicalIndex:  # at the first call: without graded queries, never
        return LexicalIndex.build(item_texts(ctx.dataset), ctx.synonyms)

    @functools.cache
    def tables() -> ranker.FeatureTables:  # the features the served ranker reads
        return ranker.build_tables(ctx.dataset)

    @functools.cache
    def search_ranker() -> Callable:  # at the first call: without searches, never
        if order is not None:
            return order
        scores = search_scores_of(teacher, item_embeddings, lexical(), ctx.options.max_length)
        trained = ranker.train_search(ctx.dataset, scores, seed=ctx.options.seed)
        return ranker.torch_scores(trained.torch_model)

    def ranked(fused) -> np.ndarray:
        """The fused candidates as the search ranker orders them, [n, N] (-1 padding)."""
        score = search_ranker()
        sparse, dense = ranker_inputs(
            tables(), None, fused.indexes, fused.dense_scores, fused.lexical_scores
        )
        result = np.full(fused.indexes.shape, -1, dtype=np.int64)
        for row, (indexes, row_scores) in enumerate(zip(fused.indexes, score(sparse, dense))):
            best, _ = top_k(indexes, row_scores, n)
            result[row, : len(best)] = best
        return result

    def search(queries: list[str], embeddings: np.ndarray):
        dense = exact_top_k(item_embeddings, embeddings, n)
        fused = fused_candidates(
            queries, embeddings, dense, lexical(), item_embeddings, n, ctx.options.fusion
        )
        served = ranked(fused) if ctx.dataset.has_searches else fused.indexes
        return served, fused.indexes, dense[0]

    return search


def item_texts(dataset: Dataset) -> list[str]:
    """What the encoder embeds for each item, in item-index order."""
    catalog = dataset.catalog.sort_values("item_id")
    return [f"{title}. {category}" for title, category in zip(catalog.title, catalog.category)]


def build_search_index(ctx: BuildContext) -> None:
    """The index over the teacher's item embeddings (whichever variant embeds the queries)."""
    teacher = ctx.path(names.TEXT_ENCODER)
    if ctx.item_embeddings is None:
        ctx.item_embeddings = embed_items(ctx, teacher / "model.onnx")
    index_stage.write_index(
        ctx,
        names.SEARCH_INDEX,
        ctx.item_embeddings,
        np.sort(ctx.dataset.catalog.item_id.to_numpy(dtype=np.int64)),
        depends_on={names.TEXT_ENCODER: ctx.resolved[names.TEXT_ENCODER]},
        progress=progress,
    )
    ctx.item_embeddings = None  # later steps read the index


def build_hybrid_retrieval(ctx: BuildContext) -> None:
    """BM25 over the item texts and the fusion step, with a copy of the search index's item
    embeddings (it scores the lexical candidates the dense list lacks), so it is paired with
    that index version."""
    from builders.runtime.fusion import EMBEDDINGS_FILE
    from builders.runtime.lexical import LexicalIndex

    settings = ctx.options.fusion
    embeddings = item_matrix(ctx.path(names.SEARCH_INDEX))
    progress(f"indexing {len(ctx.dataset.catalog):,} item texts for BM25")
    index = LexicalIndex.build(item_texts(ctx.dataset), ctx.synonyms)

    def populate(folder: Path) -> None:
        copy_runtime(folder, "lexical", "synonyms", "fusion", "tokenization", glue="hybrid_model")
        index.save(folder)  # with its synonyms file
        settings.save(folder)
        np.save(folder / EMBEDDINGS_FILE, embeddings)

    ctx.write(
        names.hybrid_retrieval_spec(ctx.options.num_candidates, embeddings.shape[1]),
        populate,
        depends_on={names.SEARCH_INDEX: ctx.resolved[names.SEARCH_INDEX]},
        metrics={"items": index.n_items, "num_candidates": ctx.options.num_candidates}
        | asdict(settings)
        | {"synonyms": synonyms_record(ctx)},
    )


def synonyms_record(ctx: BuildContext) -> dict | None:
    """What the manifest says of the synonyms file (None without one)."""
    if ctx.synonyms is None:
        return None
    return {
        "file": SYNONYMS_FILE,
        "source": str(ctx.options.synonyms),
        "sha256": synonyms_fingerprint(ctx.synonyms.text),
        "rules": len(ctx.synonyms.rules),
    }


def read_synonyms(options: BuildOptions, models: list[str]) -> Synonyms | None:
    """The options' synonyms file, parsed and analysed; refused (file and line) when a line
    does not parse, or when the build writes no `hybrid_retrieval` to carry it."""
    if options.synonyms is None:
        return None
    if names.HYBRID_RETRIEVAL not in models:
        raise ValueError(
            f"--synonyms {options.synonyms}: the synonyms travel in {names.HYBRID_RETRIEVAL}, "
            f"which this build does not write (add it: --only {names.HYBRID_RETRIEVAL},search)"
        )
    from builders.runtime.lexical import synonyms_of

    return synonyms_of(read_synonyms_text(options.synonyms), str(options.synonyms))


# -- recommendation side and rankers --------------------------------------------------
def build_ranking_features(ctx: BuildContext) -> None:
    from builders import ranker

    tables = dataclasses.replace(ranker.build_tables(ctx.dataset), user_ids=ctx.user_ids)

    def populate(folder: Path) -> None:
        copy_runtime(folder, "features", glue="features_model")
        tables.save(folder / "tables.npz")

    ctx.write(
        names.ranking_features_spec(),
        populate,
        metrics={"users": len(tables.user_ids), "items": len(tables.item_ids)},
    )


def build_two_tower(ctx: BuildContext) -> None:
    """The user tower and the index over the item tower's embeddings, always together."""
    from builders import two_tower

    if ctx.own.user_tower is not None:
        return write_own_two_tower(ctx)
    trained = two_tower.train(ctx.dataset, seed=ctx.options.seed, privacy=ctx.options.privacy)
    result = dataclasses.replace(trained, user_ids=ctx.user_ids)  # served ids in the lookup
    parity: dict = {}

    def populate_tower(folder: Path) -> None:
        parity.update(two_tower.export_user_tower(result, folder / "model.onnx"))

    dim = result.item_embeddings.shape[1]
    ctx.write(
        names.user_tower_spec(dim),
        populate_tower,
        metrics=result.metrics,
        parity=parity,
        privacy=result.privacy,
    )
    index_stage.write_index(
        ctx,
        names.RECOMMEND_INDEX,
        result.item_embeddings,
        np.sort(ctx.dataset.catalog.item_id.to_numpy(dtype=np.int64)),
        depends_on={names.USER_TOWER: ctx.version},
        progress=progress,
    )


def search_scores(ctx: BuildContext):
    """Score items for the logged queries as this build's search stages do with the teacher
    as the query encoder (the search index holds its item embeddings; BM25): a
    `ranker.SearchScores` for a list of queries. The search ranker learns from these, whichever
    query student serves: a student's errors on the queries it was fitted to are not the
    errors it makes on new ones, and a ranker trained on a student's own scores orders worse
    (`builders.encoder_variants`)."""
    from builders.runtime.lexical import LexicalIndex

    return search_scores_of(
        ctx.path(names.TEXT_ENCODER) / "model.onnx",
        item_matrix(ctx.path(names.SEARCH_INDEX)),
        LexicalIndex.load(ctx.path(names.HYBRID_RETRIEVAL)),
        ctx.options.max_length,
    )


def search_scores_of(encoder: Path, items: np.ndarray, lexical, max_length: int):
    """`ranker.SearchScores` of a list of queries: embedded by the `encoder` ONNX file,
    against the `items` embeddings and the `lexical` (BM25) index."""
    from builders import ranker, text_encoder

    def scores(queries: list[str]) -> ranker.SearchScores:
        progress(f"embedding {len(queries):,} logged queries for the search ranker")
        embedded = text_encoder.embed(encoder, queries, max_length=max_length)
        return ranker.SearchScores(queries, embedded, items, lexical.scores)

    return scores


def two_tower_scores(tower_folder: Path, index_folder: Path, user_ids: np.ndarray) -> np.ndarray:
    """Served two-tower scores of every (user index, item), [len(user_ids) + 1, n_items]; row 0
    is the unknown user. Runs the user tower and reads the index of those version folders."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(tower_folder / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (users,) = session.run(["user_embedding"], {"user_id": ids_by_user_index(user_ids)})
    return users @ item_matrix(index_folder).T


def build_search_ranker(ctx: BuildContext) -> None:
    from builders import ranker

    if names.SEARCH_RANKER in ctx.own.rankers:
        return write_own_ranker(
            ctx, names.SEARCH_RANKER, (names.SEARCH_INDEX, ctx.encoder, names.HYBRID_RETRIEVAL)
        )
    examples = ranker.search_training_examples(
        ctx.dataset, search_scores(ctx), seed=ctx.options.seed
    )
    trained = train_ranker(ctx, "search", examples, uses=ranker.SEARCH_RANKER_FEATURES)
    index = read_manifest(ctx.repo, names.SEARCH_INDEX, ctx.resolved[names.SEARCH_INDEX])
    candidates = int(index["metrics"]["num_candidates"])
    parity: dict = {}

    def populate(folder: Path) -> None:
        if trained.trees:
            parity.update(trained.export_trees(folder))
            return
        parity.update(ranker.export_onnx(trained.dcn.torch_model, folder / "model.onnx"))
        build_ranker_plan(folder, candidates)

    ctx.write(
        names.ranker_spec(names.SEARCH_RANKER, "onnxruntime"),
        populate,
        depends_on=_retrieval_dependencies(
            ctx,
            names.SEARCH_INDEX,
            *dict.fromkeys((names.TEXT_ENCODER, ctx.encoder)),
            names.HYBRID_RETRIEVAL,
        ),
        metrics=trained.metrics,
        parity=parity,
        trees=trained.trees,
        privacy=trained.privacy,
    )


def build_recommend_ranker(ctx: BuildContext) -> None:
    from builders import ranker

    if names.RECOMMEND_RANKER in ctx.own.rankers:
        retrieval = (names.RECOMMEND_INDEX, names.USER_TOWER)
        return write_own_ranker(ctx, names.RECOMMEND_RANKER, retrieval)
    scores = two_tower_scores(
        ctx.path(names.USER_TOWER), ctx.path(names.RECOMMEND_INDEX), ctx.user_ids
    )
    examples = ranker.recommend_training_examples(ctx.dataset, scores, seed=ctx.options.seed)
    kinds = ctx.options.ranker_kinds
    config = ctx.repo / names.RECOMMEND_RANKER / CONFIG
    if len(kinds) > 1 and config.exists():
        # The versions of a model share its config, and the kinds differ in backend.
        backend = parse_pbtxt(config.read_text()).get("backend")
        kinds = ("lambdamart",) if backend == "onnxruntime" else ("dcn",)
        progress(f"recommend ranker: auto keeps {kinds[0]}, which the repository serves")
    trained = train_ranker(ctx, "recommend", examples, uses=ranker.ALL_FEATURES, kinds=kinds)
    parity: dict = {}

    def populate(folder: Path) -> None:
        if trained.trees:
            parity.update(trained.export_trees(folder))
            return
        saved_model = folder / "model.savedmodel"
        parity.update(ranker.export_saved_model(trained.dcn.keras_model, saved_model))

    ctx.write(
        names.ranker_spec(names.RECOMMEND_RANKER, "onnxruntime" if trained.trees else "tensorflow"),
        populate,
        depends_on=_retrieval_dependencies(ctx, names.RECOMMEND_INDEX, names.USER_TOWER),
        metrics=trained.metrics,
        parity=parity,
        trees=trained.trees,
        privacy=trained.privacy,
    )


@dataclass
class TrainedRanker:
    """The ranker a build serves (`chosen`), from `train_ranker`."""

    chosen: str  # dcn or lambdamart
    metrics: dict
    dcn: object | None = None  # ranker.RankerResult
    lambdamart: object | None = None  # gbdt.GbdtResult
    examples: tuple = ()  # (tables, training groups, held-out groups)

    @property
    def trees(self) -> bool:
        return self.chosen == "lambdamart"

    @property
    def privacy(self):
        """The DP plan the served DCN ranker trained with (`dp.PrivacyPlan`); None: no DP."""
        return None if self.trees else self.dcn.privacy

    def export_trees(self, folder: Path) -> dict:
        from builders import gbdt

        tables, _, test = self.examples
        model = self.lambdamart
        return gbdt.export_onnx(model.booster, model.uses, folder, [test], tables.vocabulary_sizes)


def train_ranker(
    ctx: BuildContext, kind: str, examples: tuple, *, uses, kinds: tuple[str, ...] = ()
) -> TrainedRanker:
    """Train the ranker `kinds` (by default those the options ask for) on `examples` (tables,
    training and held-out groups); with two, serve the better held-out figure
    (`gbdt.choose`; for search, NDCG@10 on the graded queries where the data has them:
    `graded_search_ndcg`). The manifest records every trained kind's held-out figures."""
    from builders import gbdt, ranker

    tables, train_examples, test_examples = examples
    wanted = kinds or ctx.options.ranker_kinds
    trained = TrainedRanker(chosen=wanted[0], metrics={}, examples=examples)
    figures = {}
    if "dcn" in wanted:
        keras_too = kind == "recommend"  # recommend serves the Keras twin as a SavedModel
        trained.dcn = ranker.fit(
            ctx.dataset,
            tables,
            train_examples,
            test_examples,
            keras_too=keras_too,
            uses=uses,
            seed=ctx.options.seed,
            privacy=ctx.options.privacy,
        )
        predict = ranker.predict_keras if keras_too else ranker.predict_torch
        model = trained.dcn.keras_model if keras_too else trained.dcn.torch_model
        figures["dcn"] = gbdt.held_out_metrics(test_examples, predict(model, test_examples))
    if "lambdamart" in wanted:
        trained.lambdamart = gbdt.train(
            kind, train_examples, test_examples, uses, seed=ctx.options.seed
        )
        figures["lambdamart"] = trained.lambdamart.metrics
        progress(f"{kind} ranker (lambdamart): {ranker.describe_metrics(figures['lambdamart'])}")
    if len(wanted) > 1:
        if kind == "search" and ctx.dataset.relevance is not None:
            for name, score in (
                ("dcn", ranker.torch_scores(trained.dcn.torch_model)),
                ("lambdamart", gbdt.scores_of(trained.lambdamart)),
            ):
                figures[name]["graded_ndcg_at_10"] = graded_search_ndcg(ctx, score)
        trained.chosen = gbdt.choose(kind, figures["dcn"], figures["lambdamart"])
        progress(f"{kind} ranker: serving {trained.chosen} (auto, by held-out figures)")
    chosen = trained.dcn.metrics if trained.chosen == "dcn" else trained.lambdamart.metrics
    keys = ("auc", "group_ndcg_at_10", "graded_ndcg_at_10")
    held_out = {
        name: {key: value for key, value in figures[name].items() if key in keys}
        for name in figures
    }
    trained.metrics = {
        "auc": figures[trained.chosen]["auc"],
        "ranker": trained.chosen,
        "held_out": held_out,
        **chosen,
    }
    return trained


def graded_search_ndcg(ctx: BuildContext, score: Callable) -> float:
    """NDCG@10 of search as served without a user, its fused candidates ordered by `score`
    (a ranker's `sparse`, `dense` -> `score`), on the graded queries the encoders' gate holds
    out: what users see, where the held-out sessions only judge the items a session saw."""
    from builders import encoder_variants

    held_out = encoder_variants.held_out_queries(ctx.dataset)
    items = ctx.item_embeddings
    if items is None:
        items = item_matrix(ctx.path(names.SEARCH_INDEX))
    teacher = ctx.path(names.TEXT_ENCODER) / "model.onnx"
    figures, _ = encoder_variants.search_quality(
        ctx.path(ctx.encoder) / "model.onnx",
        held_out,
        encoder_variants.grades_by_index(ctx.dataset, held_out),
        served_search(ctx, teacher, items, score),
        ctx.options.max_length,
    )
    return figures["ndcg_at_10"]


def _retrieval_dependencies(ctx: BuildContext, *retrieval: str) -> dict[str, int]:
    """The versions a ranker was trained against: its retrieval and feature stages."""
    models = (*retrieval, names.RANKING_FEATURES)
    for model in models:
        ctx.path(model)  # resolves the version when not built in this run
    return {model: ctx.resolved[model] for model in models}


def own_record(ctx: BuildContext, model: str) -> dict:
    """The manifest's record of a team's own model (empty for a model the build trained)."""
    record = ctx.own.sources.get(model)
    return {} if record is None else {"own_model": record}


def write_own_ranker(ctx: BuildContext, name: str, retrieval: tuple[str, ...]) -> None:
    """A team's ranker (`own_models.prepare_ranker`) as `name`, in place of training one."""
    source, parity = ctx.own.rankers[name]
    ctx.path(retrieval[0])
    index = read_manifest(ctx.repo, retrieval[0], ctx.resolved[retrieval[0]])
    candidates = int(index["metrics"]["num_candidates"])

    def populate(folder: Path) -> None:
        shutil.copy2(source, folder / "model.onnx")
        build_ranker_plan(folder, candidates)

    ctx.write(
        names.ranker_spec(name, "onnxruntime"),
        populate,
        depends_on=_retrieval_dependencies(ctx, *retrieval),
        metrics=own_record(ctx, name),
        parity=dict(parity),
    )


def write_own_two_tower(ctx: BuildContext) -> None:
    """A team's user tower and item embeddings (`own_models.prepare`), in place of training."""
    source, parity = ctx.own.user_tower
    embeddings = ctx.own.item_embeddings
    ctx.write(
        names.user_tower_spec(embeddings.shape[1]),
        lambda folder: shutil.copy2(source, folder / "model.onnx"),
        metrics=own_record(ctx, names.USER_TOWER),
        parity=dict(parity),
    )
    index_stage.write_index(
        ctx,
        names.RECOMMEND_INDEX,
        embeddings,
        np.sort(ctx.dataset.catalog.item_id.to_numpy(dtype=np.int64)),
        depends_on={names.USER_TOWER: ctx.version},
        progress=progress,
    )


def kept_encoder_tokenizer(repo: Path, version: int | None = None) -> Path | None:
    """Where work that keeps a team's encoder (`text_encoder` `version`, default the latest)
    reads its tokenizer: the latest tokenizer stage's folder (None for the packaged one)."""
    encoders = model_versions(repo, names.TEXT_ENCODER)
    tokenizers = model_versions(repo, names.QUERY_TOKENIZER)
    if not encoders or not tokenizers:
        return None
    manifest = read_manifest(repo, names.TEXT_ENCODER, version or encoders[-1])
    if "own_model" not in manifest["metrics"]:
        return None
    return repo / names.QUERY_TOKENIZER / str(tokenizers[-1])


def prepare_own(ctx: BuildContext, models: list[str], stack: contextlib.ExitStack) -> Prepared:
    """Check and convert the options' own models before anything is written (into a
    temporary folder `stack` removes). Within `stack`, a given encoder is the teacher; a
    kept team's encoder lends its tokenizer (`kept_encoder_tokenizer`)."""
    own = ctx.options.own
    kept = kept_encoder_tokenizer(ctx.repo) if names.TEXT_ENCODER not in models else None
    if kept is not None:
        from builders import text_encoder

        stack.enter_context(text_encoder.source(kept))
    if not own:
        return Prepared()
    from builders import own_models, text_encoder

    given = {
        names.TEXT_ENCODER: own.encoder,
        names.USER_TOWER: own.two_tower,
        **own.rankers,
    }
    skipped = sorted(model for model, spec in given.items() if spec and model not in models)
    if skipped:
        raise OwnModelError(
            f"own model(s) given for {', '.join(skipped)}, which this build does not write "
            f"(it writes {', '.join(models)})"
        )
    index_dims = {}
    if names.SEARCH_INDEX not in models and model_versions(ctx.repo, names.SEARCH_INDEX):
        config = parse_pbtxt((ctx.repo / names.SEARCH_INDEX / CONFIG).read_text())
        index_dims[names.SEARCH_INDEX] = int(config["input"][0]["dims"][0])
    progress("checking the team's own models: " + ", ".join(m for m, s in given.items() if s))
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="own-models-"))
    prepared = own_models.prepare(own, ctx.dataset, Path(folder), index_dims, ctx.user_ids)
    if prepared.encoder is not None:
        stack.enter_context(text_encoder.source(prepared.encoder))
    return prepared


def build_ranker_plan(folder: Path, num_candidates: int) -> None:
    from builders.runtime import features

    def shape(batch: int, width: int) -> tuple[int, int, int]:
        return (batch, num_candidates, width)

    tensorrt.build_plan(
        folder / "model.onnx",
        folder / "model.plan",
        {
            "sparse": (
                shape(1, features.NUM_SPARSE),
                shape(8, features.NUM_SPARSE),
                shape(64, features.NUM_SPARSE),
            ),
            "dense": (
                shape(1, features.NUM_DENSE),
                shape(8, features.NUM_DENSE),
                shape(64, features.NUM_DENSE),
            ),
        },
    )


def build_top_k(ctx: BuildContext) -> None:
    catalog_ids = np.sort(ctx.dataset.catalog.item_id.to_numpy(dtype=np.int64))

    def populate(folder: Path) -> None:
        copy_runtime(folder, "topk", glue="topk_model")
        np.save(folder / "item_ids.npy", catalog_ids)  # item index -> item id

    ctx.write(names.top_k_spec(), populate, metrics={"items": len(catalog_ids)})


# -- pipelines ------------------------------------------------------------------------
def pipeline_stages(ctx: BuildContext, kind: str) -> dict[str, Stage]:
    """The stage versions a new pipeline version pins; checks the index pairing."""
    if kind == "search":
        roles = {
            "tokenizer": names.QUERY_TOKENIZER,
            "encoder": ctx.encoder,
            "index": names.SEARCH_INDEX,
            "hybrid": names.HYBRID_RETRIEVAL,
        }
        producer_role = "encoder"
    else:
        roles = {"user_tower": names.USER_TOWER, "index": names.RECOMMEND_INDEX}
        producer_role = "user_tower"
    ranker = names.SEARCH_RANKER if kind == "search" else names.RECOMMEND_RANKER
    ranked = ctx.dataset.has_searches if kind == "search" else ctx.dataset.has_interactions
    if ranked:
        roles.update(features=names.RANKING_FEATURES, ranker=ranker)
    roles["top_k"] = names.TOP_K
    stages = {}
    for role, model in roles.items():
        ctx.path(model)
        stages[role] = Stage(model, ctx.resolved[model])
    index = stages["index"]
    producer = stages[producer_role]
    if producer.model != names.TEXT_ENCODER and producer.model in names.QUERY_ENCODERS:
        # A student embeds queries into the space of the teacher it was distilled from.
        teacher = read_manifest(ctx.repo, producer.model, producer.version)["depends_on"]
        producer = Stage(names.TEXT_ENCODER, teacher[names.TEXT_ENCODER])
    check_pairing(
        read_manifest(ctx.repo, index.model, index.version), producer.model, producer.version
    )
    if "hybrid" in stages:  # it holds a copy of the index's item embeddings
        hybrid = stages["hybrid"]
        check_pairing(
            read_manifest(ctx.repo, hybrid.model, hybrid.version), index.model, index.version
        )
    return stages


def build_pipeline(ctx: BuildContext, kind: str) -> None:
    """A release: its record (`pipeline.json`, the catalog) and its ensemble config."""
    stages = pipeline_stages(ctx, kind)
    check_data_fingerprints(ctx, stages)
    index_manifest = read_manifest(ctx.repo, stages["index"].model, stages["index"].version)
    if index_manifest["metrics"]["index"] == "exact":
        stages = build_release_retrieval(ctx, kind, stages)
        if "hybrid" in stages and ctx.options.profile == "cpu":
            stages = build_release_query(ctx, stages)
    if "ranker" in stages and ctx.options.profile == "cpu":
        stages = build_release_ranking(ctx, kind, stages)
    spec = PipelineSpec(kind, int(index_manifest["metrics"]["num_candidates"]), stages)

    def populate(folder: Path) -> None:
        (folder / PIPELINE_FILE).write_text(spec.to_json())
        columns = [c for c in CATALOG_DISPLAY_COLUMNS if c in ctx.dataset.catalog]
        ctx.dataset.catalog[columns].to_parquet(folder / CATALOG_FILE, index=False)

    ctx.write(
        pipelines.ensemble(spec, ctx.version, name=kind),
        populate,
        depends_on={stage.model: stage.version for stage in stages.values()},
    )


def build_release_retrieval(ctx: BuildContext, kind: str, stages: dict) -> dict[str, Stage]:
    """The release's producer and exact index as one model (`retrieval.compose_retrieval`),
    written at the release's version and checked against the two run one after the other;
    it takes their place in the release as the role `retrieval` (its manifest names them)."""
    import onnx
    import onnxruntime as ort

    from builders.retrieval import compose_retrieval, save_index

    role = pipelines.PRODUCER_ROLE[kind]
    producer, index = stages[role], stages["index"]
    name = names.RETRIEVAL_OF[kind]
    progress(f"composing {producer.model} and {index.model} into {name}")
    paths = {s: ctx.repo / s.model / str(s.version) / "model.onnx" for s in (producer, index)}
    config = parse_pbtxt((ctx.repo / producer.model / CONFIG).read_text())
    produced = config["output"][0]["name"]

    def run(path: Path, feeds: dict, outputs: list[str]) -> list[np.ndarray]:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(outputs, feeds)

    feeds = producer_sample(ctx, kind)
    (embedding,) = run(paths[producer], feeds, [produced])
    apart = [embedding, *run(paths[index], {"query_embedding": embedding}, RANKED)]
    with tempfile.TemporaryDirectory(prefix="retrieval-") as folder:
        composed = compose_retrieval(
            onnx.load(str(paths[producer])), produced, onnx.load(str(paths[index]))
        )
        together = run(save_index(composed, Path(folder)), feeds, [produced, *RANKED])
        del composed
        if not np.array_equal(apart[1], together[1]):
            raise ValueError(f"{name}: the composed model retrieves other items than its parts")
        difference = max(float(np.abs(a - b).max()) for a, b in zip(apart, together))
        if difference > RETRIEVAL_ATOL:
            raise ValueError(
                f"{name}: max |difference| {difference:.3g} from its parts exceeds "
                f"{RETRIEVAL_ATOL:g}"
            )
        dim, candidates = int(embedding.shape[1]), int(apart[1].shape[1])
        ctx.write(
            names.retrieval_spec(
                name,
                names.text_encoder_spec(producer.model, dim)
                if kind == names.SEARCH
                else names.user_tower_spec(dim),
                names.index_spec(index.model, dim, candidates),
            ),
            lambda version: shutil.copytree(folder, version, dirs_exist_ok=True),
            depends_on={producer.model: producer.version, index.model: index.version},
            metrics={"num_candidates": candidates},
            parity={"max_abs_diff": difference, "atol": RETRIEVAL_ATOL, "rows": len(embedding)},
        )
    roles = {r: s for r, s in stages.items() if r not in (role, "index")}
    return {"retrieval": Stage(name, ctx.version), **roles}


def build_release_query(ctx: BuildContext, stages: dict) -> dict[str, Stage]:
    """The release's tokenizer, `retrieval` and hybrid stages as one Python model
    (`runtime.query_model`), written at the release's version from their version folders; it
    takes their place in the release as the role `query` (its manifest names them). Only the
    cpu profile composes it: there every stage is a process of its own, and one stage instead
    of three saves two hops; the gpu profile keeps the encoder in a stage of its own, on the
    GPU."""
    parts = {role: stages[role] for role in pipelines.QUERY_PARTS.values()}
    folders = {role: ctx.repo / s.model / str(s.version) for role, s in parts.items()}
    progress(f"composing {', '.join(s.model for s in parts.values())} into {names.SEARCH_QUERY}")
    tokenizer = parse_pbtxt((ctx.repo / parts["tokenizer"].model / CONFIG).read_text())
    parameters = {k: v["string_value"] for k, v in tokenizer.get("parameters", {}).items()}
    hybrid = read_manifest(ctx.repo, parts["hybrid"].model, parts["hybrid"].version)

    def populate(folder: Path) -> None:
        # The hybrid stage's data (BM25 index, synonyms, fusion settings, item embeddings).
        for path in folders["hybrid"].iterdir():
            if path.suffix == ".py" or path.name in (MANIFEST, "__pycache__"):
                continue
            copy = shutil.copytree if path.is_dir() else shutil.copy2
            copy(path, folder / path.name)
        shutil.copy2(folders["tokenizer"] / "tokenizer.json", folder / "tokenizer.json")
        shutil.copy2(folders["retrieval"] / "model.onnx", folder / "model.onnx")
        modules = ("lexical", "synonyms", "fusion", "tokenization")
        # With the tokenizer's and the hybrid stage's own glue, which the composed stage runs.
        copy_runtime(folder, *modules, "tokenizer_model", "hybrid_model", glue="query_model")

    ctx.write(
        names.search_query_spec(int(hybrid["metrics"]["num_candidates"]), parameters),
        populate,
        depends_on={s.model: s.version for s in parts.values()},
    )
    kept = {r: s for r, s in stages.items() if r not in parts}
    return {"query": Stage(names.SEARCH_QUERY, ctx.version), **kept}


#: The ranker formats the composed ranking stage runs (ONNX Runtime, TensorFlow).
RANKER_FILES = ("model.onnx", "model.savedmodel")


def build_release_ranking(ctx: BuildContext, kind: str, stages: dict) -> dict[str, Stage]:
    """The release's features, ranker and top-k stages as one Python model
    (`runtime.ranking_model`), written at the release's version from their version folders; it
    takes their place in the release as the role `ranking` (its manifest names them). Only the
    cpu profile composes it, as `build_release_query`: the gpu profile serves the ranker on
    the GPU. In recommend with an exact index, it holds the release's `retrieval` graph too
    (`retrieval.onnx`), so a recommendation is one stage."""
    retrieves = kind == names.RECOMMEND and "retrieval" in stages
    roles = dict.fromkeys(pipelines.RANKING_PARTS.values())
    parts = {role: stages[role] for role in roles if role != "retrieval" or retrieves}
    folders = {role: ctx.repo / s.model / str(s.version) for role, s in parts.items()}
    found = [folders["ranker"] / f for f in RANKER_FILES if (folders["ranker"] / f).exists()]
    if not found:
        raise ValueError(f"{folders['ranker']} holds no ranker in {' or '.join(RANKER_FILES)}")
    ranker = found[0]
    name = names.RANKING_OF[kind]
    progress(f"composing {', '.join(s.model for s in parts.values())} into {name}")

    def populate(folder: Path) -> None:
        shutil.copy2(folders["features"] / "tables.npz", folder / "tables.npz")
        shutil.copy2(folders["top_k"] / "item_ids.npy", folder / "item_ids.npy")
        copy = shutil.copytree if ranker.is_dir() else shutil.copy2
        copy(ranker, folder / f"ranker{ranker.suffix}")  # as `runtime.ranking_model` reads it
        if retrieves:
            shutil.copy2(folders["retrieval"] / "model.onnx", folder / "retrieval.onnx")
        # With the features stage's and the top-k stage's own glue, which the composed stage runs.
        copy_runtime(
            folder, "features", "topk", "features_model", "topk_model", glue="ranking_model"
        )

    ctx.write(
        names.ranking_spec(name, retrieves),
        populate,
        depends_on={s.model: s.version for s in parts.values()},
    )
    kept = {r: s for r, s in stages.items() if r not in parts}
    return {**kept, "ranking": Stage(name, ctx.version)}


#: The index's outputs, in the order the parity check compares them.
RANKED = ["candidate_indexes", "candidate_scores"]
#: How far the composed model may differ from its two stages run apart (the same graphs).
RETRIEVAL_ATOL = 1e-5


def producer_sample(ctx: BuildContext, kind: str) -> dict[str, np.ndarray]:
    """Inputs for the producer of `kind`: tokenised catalog titles, or user ids (the first
    known ones and an unknown one)."""
    if kind == names.SEARCH:
        from builders.runtime.tokenization import QueryTokenizer

        folder = ctx.path(names.QUERY_TOKENIZER)
        config = parse_pbtxt((folder.parent / CONFIG).read_text())
        tokenizer = QueryTokenizer.from_parameters(
            folder / "tokenizer.json", config.get("parameters", {})
        )
        ids, mask = tokenizer.encode(item_texts(ctx.dataset)[:16])
        return {"input_ids": ids, "attention_mask": mask}
    known = ctx.user_ids[:15]
    unknown = int(known.max(initial=0)) + 1
    return {"user_id": np.append(known, unknown).astype(np.int64)[:, None]}


def reconcile_served_versions(repo: Path) -> dict[str, list[int]]:
    """Serve the newest releases of each pipeline and exactly the stage versions they pin
    (with the parts of their composed stages, `pipelines.apart`).

    Writes the ensembles from the release records: `<kind>` for the newest release and
    `<kind>_v<R>` for each served release R; release ensembles no longer served are removed
    (their records stay in `<kind>/<R>/`).
    """
    served: dict[str, set[int]] = {}
    for kind in pipelines.KINDS:
        releases = model_versions(repo, kind)[-SERVED_RELEASES:]
        for stale in repo.glob(f"{kind}_v*"):
            parsed = pipelines.parse_release_model(stale.name)
            if parsed and parsed[1] not in releases:
                shutil.rmtree(stale)
        if not releases:
            continue
        for release in releases:
            spec = PipelineSpec.load(repo / kind / str(release) / PIPELINE_FILE)
            ensemble = pipelines.ensemble(spec, release)
            write_config(repo / ensemble.name / CONFIG, ensemble)
            (repo / ensemble.name / str(release)).mkdir(exist_ok=True)
            # And the parts of its composed stages, which the bench and the quality report call.
            for stage in (*spec.stages.values(), *pipelines.apart(repo, spec).stages.values()):
                served.setdefault(stage.model, set()).add(stage.version)
        newest = PipelineSpec.load(repo / kind / str(releases[-1]) / PIPELINE_FILE)
        write_config(repo / kind / CONFIG, pipelines.ensemble(newest, releases[-1], name=kind))
        served[kind] = {releases[-1]}
    for model, versions in served.items():
        if model not in pipelines.KINDS:
            set_served_versions(repo, model, sorted(versions))
    return {model: sorted(versions) for model, versions in served.items()}


STEPS: dict[str, Callable[[BuildContext], None]] = {
    names.QUERY_TOKENIZER: build_query_tokenizer,
    **{name: build_text_encoders for name in names.QUERY_ENCODERS},
    names.SEARCH_INDEX: build_search_index,
    names.HYBRID_RETRIEVAL: build_hybrid_retrieval,
    names.RANKING_FEATURES: build_ranking_features,
    names.USER_TOWER: build_two_tower,
    names.RECOMMEND_INDEX: build_two_tower,
    names.SEARCH_RANKER: build_search_ranker,
    names.RECOMMEND_RANKER: build_recommend_ranker,
    names.TOP_K: build_top_k,
    names.SEARCH: lambda ctx: build_pipeline(ctx, "search"),
    names.RECOMMEND: lambda ctx: build_pipeline(ctx, "recommend"),
}


def selected_models(options: BuildOptions, dataset: Dataset) -> list[str]:
    """The models this build writes, in build order."""
    wanted = set(options.only or names.ALL_MODELS)
    if not dataset.has_interactions:
        asked = sorted(wanted & set(names.NEED_INTERACTIONS)) if options.only else []
        if asked:
            raise ValueError(f"{', '.join(asked)} need an interaction log; {dataset.name} has none")
        wanted -= set(names.NEED_INTERACTIONS)
    elif not dataset.has_searches:
        if options.only and names.SEARCH_RANKER in wanted:
            raise ValueError(f"search_ranker needs logged searches; {dataset.name} has none")
        wanted.discard(names.SEARCH_RANKER)
    if wanted & {names.USER_TOWER, names.RECOMMEND_INDEX}:
        wanted |= {names.USER_TOWER, names.RECOMMEND_INDEX}  # one training makes both
    if wanted & set(names.QUERY_ENCODERS):
        wanted |= set(names.QUERY_ENCODERS)  # measured and gated together
    return [model for model in names.ALL_MODELS if model in wanted]


def check_data_fingerprints(ctx: BuildContext, stages: dict[str, Stage]) -> None:
    """Pinned data-dependent stages must come from the data this build reads."""
    stale = [
        f"{stage.model} version {stage.version}"
        for stage in stages.values()
        if stage.model in names.DATA_DEPENDENT
        and read_manifest(ctx.repo, stage.model, stage.version)["dataset"]["fingerprint"]
        != ctx.dataset.fingerprint
    ]
    if stale:
        raise RepositoryError(
            f"{', '.join(stale)} were built from other data than {ctx.dataset.name} "
            f"(fingerprint {ctx.dataset.fingerprint[:12]}); rebuild them with this data"
        )


def build(options: BuildOptions, dataset: Dataset) -> BuildContext:
    """Write every selected model at one version; refuse before any work if it exists."""
    if options.pseudonymise_users:
        dataset = pseudonyms.pseudonymise(dataset, options.user_key)
    dataset, user_ids = with_user_indexes(dataset)
    models = selected_models(options, dataset)
    synonyms = read_synonyms(options, models)
    repo = Path(options.repo)
    repo.mkdir(parents=True, exist_ok=True)
    version = options.version or next_version(repo, list(names.ALL_MODELS))
    taken = [m for m in models if version in model_versions(repo, m)]
    if taken:
        raise VersionExistsError(
            f"version {version} already exists for {', '.join(taken)}; nothing was written "
            "(use --next for the next free version)"
        )
    ctx = BuildContext(
        options=options, dataset=dataset, version=version, synonyms=synonyms, user_ids=user_ids
    )
    progress(
        f"building {', '.join(models)} as version {version} into {repo} "
        f"(profile {options.profile}, dataset {dataset.name} {dataset.fingerprint[:12]})"
    )
    if options.pseudonymise_users:
        key = pseudonyms.key_fingerprint(options.user_key)
        progress(f"user ids pseudonymised before training (key fingerprint {key})")
    with contextlib.ExitStack() as stack:
        ctx.own = prepare_own(ctx, models, stack)
        for model in models:
            if model in ctx.built:
                continue
            started = time.perf_counter()
            STEPS[model](ctx)
            progress(f"{model} done in {time.perf_counter() - started:.1f} s")
    served = reconcile_served_versions(repo)
    if served:
        progress("served versions: " + "; ".join(f"{m} {v}" for m, v in sorted(served.items())))
    return ctx
