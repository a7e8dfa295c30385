"""``ragstore plan``: the machine a collection needs, from costs measured on this one.

A calibration (:mod:`ragstore.engine.calibrate`) holds, per index kind, measurements at
a few sizes: process memory, file sizes, build time, and recall and mean single-core
latency at each search breadth. The planner fits one small model per figure and reads
it at the target size:

- **memory** and **files**: bytes = fixed + per-vector * n (least squares);
- **build time**: seconds = n * (a + b * ln n), a and b >= 0;
- **search breadth** for the target recall (``ef_search``, ``nprobe``): the smallest
  breadth reaching it at each measured size and on each patch (a region as crowded as a
  larger collection: :func:`ragstore.engine.calibrate.measure_patches`), read off at the
  target size on a broken line in log-log (:meth:`KindModel.breadth`); kinds without a
  breadth must reach the recall as measured;
- **latency** at that breadth: hnsw a power law in ef and n; the others a linear model
  in the terms that drive their work — ivf/ivfpq: 1, nlist (the coarse search),
  nprobe·n/nlist (the lists scanned); flat/sq8/binary: 1, n — with coefficients kept
  non-negative.

Then per query: embedding the question + the index search + reading the hits; cores =
queries/s * seconds per query / :data:`UTILISATION`; RAM = a serving process + the
index + the exact vectors' pages (re-ranking and exact filtered scans read them) + the
filter columns and sign bits, * :data:`HEADROOM`. ``benchmarks/plan.py`` checks the
predictions against builds at 300k and 1M vectors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ragstore.config import IndexConfig
from ragstore.errors import InvalidConfig, InvalidInput
from ragstore.index import ann
from ragstore.index.segments import SCANNED_KINDS

CALIBRATION_FILE = "calibration.json"
"""Where ``plan --calibrate`` keeps its figures, in the store's directory."""
UTILISATION = 0.7
"""Share of each core planned busy: queries arrive in bursts, and p99 latency grows
fast past this."""
HEADROOM = 1.25
"""RAM planned over the estimate: the operating system, SQLite's page cache, and
segments being rebuilt beside the ones serving."""
RAM_PER_CORE_GIB = 4.0
"""Without a price list, a GiB of RAM weighs a quarter of a core (general-purpose cloud
machines sell about 4 GiB per vCPU)."""
FILTER_COLUMN_BYTES = 4
"""Bytes per chunk of one in-memory filter column (a dictionary code)."""
FILTER_PATHS = 2
"""Filter columns assumed when queries filter (a tenant and one more, typically)."""
GIB = 1 << 30
FAR = 3
"""Past this many times the largest calibrated size, the plan warns about the breadth."""


@dataclass(frozen=True)
class Target:
    """What the collection must do. ``growth`` multiplies ``vectors`` (plan for the size
    it will reach); ``filter_share`` is the share of queries that filter, and
    ``selectivity`` the share of the vectors such a filter lets through."""

    vectors: int
    dim: int = 384
    qps: float = 10.0
    recall: float = 0.95
    filter_share: float = 0.0
    selectivity: float = 0.01
    metadata_bytes: int = 200
    growth: float = 1.0

    def __post_init__(self) -> None:
        _check(self.vectors >= 1, "vectors", "must be at least 1")
        _check(1 <= self.dim <= 65_536, "dim", "must be between 1 and 65536")
        _check(self.qps > 0, "qps", "must be above 0")
        _check(0 < self.recall <= 1, "recall", "must be above 0 and at most 1")
        _check(0 <= self.filter_share <= 1, "filter_share", "must be between 0 and 1")
        _check(0 < self.selectivity <= 1, "selectivity", "must be above 0 and at most 1")
        _check(self.metadata_bytes >= 0, "metadata_bytes", "must be 0 or more")
        _check(self.growth >= 1, "growth", "must be 1 or more (a multiplier)")

    @property
    def planned(self) -> int:
        """Vectors planned for."""
        return math.ceil(self.vectors * self.growth)


def _check(ok: bool, name: str, problem: str) -> None:
    if not ok:
        raise InvalidInput(f"{name} {problem}", field=name)


@dataclass(frozen=True)
class Machine:
    """One machine type of a price list."""

    name: str
    vcpus: int
    ram_gib: float
    price_per_hour: float


@dataclass
class KindPlan:
    """What one index kind needs for the target; ``viable`` is false (with ``reason``)
    when it cannot reach the recall."""

    kind: str
    viable: bool
    reason: str = ""
    setting: dict[str, int] = field(default_factory=dict)
    recall: float | None = None
    index_ms: float | None = None
    query_ms: float | None = None
    qps_per_core: float | None = None
    cores: int | None = None
    ram_bytes: int | None = None
    disk_bytes: int | None = None
    build_s: float | None = None
    arithmetic: list[str] = field(default_factory=list)
    machine: dict[str, Any] | None = None


@dataclass
class Plan:
    """The planner's answer: every kind's needs, and the one recommended."""

    target: Target
    recommended: str | None
    kinds: list[KindPlan]
    calibration: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "target": asdict(self.target) | {"planned_vectors": self.target.planned},
            "recommended": self.recommended,
            "kinds": [asdict(k) for k in self.kinds],
            "calibration": self.calibration,
            "notes": self.notes,
        }


# -- calibrations ---------------------------------------------------------------------


def shipped_calibration() -> dict[str, Any]:
    """The calibration that ships with ragstore (its machine is named inside)."""
    text = resources.files("ragstore.engine").joinpath(CALIBRATION_FILE).read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def load_calibration(path: Path) -> dict[str, Any]:
    """A calibration file; :class:`InvalidConfig` when it is not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidConfig(f"cannot read calibration {path}: {exc}", field="calibration") from None
    if not isinstance(data, dict) or not isinstance(data.get("kinds"), dict):
        raise InvalidConfig(f"{path} is not a ragstore calibration", field="calibration")
    return data


def calibration_for(store_path: Path | None) -> tuple[dict[str, Any], str]:
    """The calibration a store plans with: its own (written by ``plan --calibrate``) when
    it has one, else the shipped one; and where it came from."""
    if store_path is not None and (store_path / CALIBRATION_FILE).exists():
        own = store_path / CALIBRATION_FILE
        return load_calibration(own), str(own)
    return shipped_calibration(), "shipped with ragstore"


def load_machines(path: Path) -> list[Machine]:
    """A price list: a JSON list of ``{"name", "vcpus", "ram_gib", "price_per_hour"}``."""
    try:
        rows = json.loads(path.read_text())
        machines = [Machine(str(r["name"]), int(r["vcpus"]), float(r["ram_gib"]),
                            float(r["price_per_hour"])) for r in rows]  # fmt: skip
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise InvalidConfig(
            f"cannot read price list {path}: {exc!s} (want a JSON list of objects with "
            "name, vcpus, ram_gib and price_per_hour)",
            field="prices",
        ) from None
    if not machines or any(m.vcpus < 1 or m.ram_gib <= 0 for m in machines):
        raise InvalidConfig(f"price list {path} has no usable machine", field="prices")
    return machines


# -- models ---------------------------------------------------------------------------


def fit_linear(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """``y = a + b·x`` by least squares, with ``a`` and ``b`` kept at 0 or more."""
    coef = nonnegative_fit(np.column_stack([np.ones(len(x)), x]), np.asarray(y, float))
    return float(coef[0]), float(coef[1])


def nonnegative_fit(features: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0: a term fitted negative is dropped and
    the rest refitted (a negative cost would make large sizes look cheaper)."""
    keep = list(range(features.shape[1]))
    while True:
        coef, *_ = np.linalg.lstsq(features[:, keep], y, rcond=None)
        if (coef >= 0).all() or len(keep) == 1:
            full = np.zeros(features.shape[1])
            full[keep] = np.maximum(coef, 0)
            return full
        keep.pop(int(np.argmin(coef)))


def _features(kind: str, n: float, setting: float | None, config: IndexConfig) -> list[float]:
    if kind == "hnsw":
        assert setting is not None
        return [1.0, setting, setting * math.log(n)]
    if kind in ("ivf", "ivfpq"):
        assert setting is not None
        nlist = ann.nlist_for(int(n), config)
        return [1.0, float(nlist), setting * n / nlist]
    return [1.0, n]


def breadth_for(sweep: Sequence[Mapping[str, Any]], recall: float) -> float | None:
    """The smallest search breadth reaching ``recall`` in one size's sweep, interpolated
    in log(breadth) between the breadths measured; ``None`` when none reaches it."""
    points = sorted((row["setting"], row["recall"]) for row in sweep)
    below = None
    for setting, reached in points:
        if reached >= recall:
            if below is None or below[1] >= reached:
                return float(setting)
            share = (recall - below[1]) / (reached - below[1])
            return float(below[0] * (setting / below[0]) ** share)
        below = (setting, reached)
    return None


def loglog_line(points: Sequence[tuple[float, float]], x: float) -> float:
    """``y`` at ``x`` on the broken line through ``points`` (x ascending) in log-log:
    the first ``y`` below the first point, the last segment's slope (at 0 or more) past
    the last."""
    xs, ys = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    at = math.log(x)
    if len(points) == 1 or at <= xs[-1]:
        return float(np.exp(np.interp(at, xs, ys)))
    slope = max((ys[-1] - ys[-2]) / (xs[-1] - xs[-2]), 0.0)
    return float(np.exp(ys[-1] + slope * (at - xs[-1])))


@dataclass
class KindModel:
    """The fitted models of one index kind."""

    kind: str
    config: IndexConfig
    dim: int
    points: list[dict[str, Any]]
    patches: list[dict[str, Any]] = field(default_factory=list)
    """Recall sweeps on patches (:func:`ragstore.engine.calibrate.measure_patches`)."""

    @property
    def knob(self) -> str | None:
        """The breadth setting's name, if the kind has one."""
        return {"hnsw": "ef_search", "ivf": "nprobe", "ivfpq": "nprobe"}.get(self.kind)

    def memory(self, n: int) -> tuple[float, float]:
        """(fixed bytes, bytes per vector) of process memory."""
        return fit_linear([p["n"] for p in self.points],
                          [p["anon_bytes_after_search"] for p in self.points])  # fmt: skip

    def files(self) -> tuple[float, float]:
        """(fixed bytes, bytes per vector) of the segment's files."""
        return fit_linear([p["n"] for p in self.points],
                          [sum(p["files"].values()) for p in self.points])  # fmt: skip

    def build(self) -> tuple[float, float]:
        """(a, b) of build seconds = n·(a + b·ln n), both at least 0: every vector is
        added (``a``), and adding one costs more the larger the index it joins (``b``: a
        graph's search for its neighbours grows with its depth). A power law fitted at
        small sizes bends too steeply: the caches the smallest indexes fit in make them
        look cheap per vector."""
        ns = np.array([p["n"] for p in self.points], float)
        seconds = np.array([p["build_s"] for p in self.points], float)
        a, b = nonnegative_fit(np.column_stack([ns, ns * np.log(ns)]), seconds)
        return float(a), float(b)

    def build_s(self, n: int) -> float:
        """Build seconds at ``n`` vectors."""
        a, b = self.build()
        return n * (a + b * math.log(n))

    def breadth(self, n: int, recall: float) -> tuple[float | None, str]:
        """The breadth reaching ``recall`` at ``n`` vectors (and how it was found).

        Each measured size, and each patch for the collection it stands for, gives the
        smallest breadth reaching the recall (:func:`breadth_for`); between those sizes
        the breadth is read off a straight line in log-log, past the largest it follows
        the last segment's slope (at 0 or more: more vectors never make a recall
        easier). A size where no breadth measured reached the recall makes every
        larger target unreachable.
        """
        measured = sorted((p["n"], breadth_for(p["sweep"], recall))
                          for p in [*self.points, *self.patches])  # fmt: skip
        unreached = [size for size, found in measured if found is None]
        if unreached and n >= min(unreached):
            return None, f"recall {recall} not reached at {min(unreached):,} vectors"
        known = [(size, found) for size, found in measured if found is not None]
        if not known:
            return None, f"recall {recall} not reached at {_sizes(self.points)} vectors"
        wanted = max(loglog_line(known, n), 1.0)
        how = (f"{self.knob} reaching recall {recall}: "
               + ", ".join(f"{found:.1f} at {size:,}" for size, found in known)
               + (" (the larger sizes measured on patches)" if self.patches else ""))  # fmt: skip
        return wanted, how

    def recall_without_knob(self, n: int) -> float:
        """Recall of a kind without a breadth, extrapolated linearly in ln n."""
        xs = [math.log(p["n"]) for p in self.points]
        ys = [p["sweep"][0]["recall"] for p in self.points]
        if len(set(xs)) < 2:
            return float(ys[0])
        slope, intercept = np.polyfit(xs, ys, 1)
        return float(min(1.0, slope * math.log(n) + intercept))

    def latency_ms(self, n: int, setting: float | None) -> float:
        """Mean single-core milliseconds of one search. HNSW: ``e^a * ef^b * n^c`` (a
        plane in logs, ``c`` at 0 or more: a larger graph misses the CPU caches more);
        the others linear in the terms that drive their work, coefficients >= 0."""
        rows = [(p["n"], r["setting"], r["ms"]) for p in self.points for r in p["sweep"]]
        if self.kind == "hnsw":
            assert setting is not None
            return _hnsw_latency(rows, n, setting)
        x = np.array([_features(self.kind, size, s, self.config) for size, s, _ in rows])
        coef = nonnegative_fit(x, np.array([ms for *_, ms in rows]))
        return float(np.dot(coef, _features(self.kind, n, setting, self.config)))

    def filtered_ms(self, n: int, selectivity: float) -> float:
        """Mean single-core milliseconds of a filtered search (between the shares
        measured, interpolated in log(share); outside them, the nearest)."""
        shares = sorted({f["share"] for p in self.points for f in p["filtered"]})
        at = {}
        for share in shares:
            rows = [(p["n"], f["ms"]) for p in self.points for f in p["filtered"]
                    if f["share"] == share]  # fmt: skip
            a, b = fit_linear([r[0] for r in rows], [r[1] for r in rows])
            at[share] = a + b * n
        s = min(max(selectivity, shares[0]), shares[-1])
        lo = max(x for x in shares if x <= s)
        hi = min(x for x in shares if x >= s)
        if lo == hi:
            return at[lo]
        t = math.log(s / lo) / math.log(hi / lo)
        return at[lo] + t * (at[hi] - at[lo])


def _hnsw_latency(rows: list[tuple[int, int, float]], n: int, ef: float) -> float:
    y = np.log([ms for *_, ms in rows])
    ln_ef, ln_n = np.log([r[1] for r in rows]), np.log([r[0] for r in rows])
    (a, b, c), *_ = np.linalg.lstsq(np.column_stack([np.ones_like(y), ln_ef, ln_n]), y)
    if c < 0:
        c = 0.0
        (a, b), *_ = np.linalg.lstsq(np.column_stack([np.ones_like(y), ln_ef]), y)
    return float(math.exp(a + b * math.log(ef) + c * math.log(n)))


def _sizes(points: Sequence[Mapping[str, Any]]) -> str:
    return "/".join(f"{p['n']:,}" for p in points)


def models(calibration: Mapping[str, Any]) -> dict[str, KindModel]:
    """One model per kind the calibration measured (at two sizes or more)."""
    config = IndexConfig.model_validate(calibration.get("index", {}))
    found = {}
    for kind, points in calibration["kinds"].items():
        usable = [p for p in points if p.get("kind", kind) == kind]
        if len(usable) >= 2:
            patches = calibration.get("patches", {}).get(kind, [])
            found[kind] = KindModel(kind, config, int(calibration["dim"]), usable, patches)
    return found


# -- the plan -------------------------------------------------------------------------


def code_bytes(kind: str, dim: int, config: IndexConfig) -> float:
    """Bytes of a vector's code in an index of ``kind``."""
    if kind == "binary":
        return math.ceil(dim / 8)
    if kind == "sq8":
        return dim
    if kind == "ivfpq":
        return config.pq_m * config.nbits / 8
    return 4 * dim


def plan_kind(model: KindModel, target: Target, calibration: Mapping[str, Any]) -> KindPlan:
    """What ``model``'s kind needs for ``target``."""
    n, kind = target.planned, model.kind
    out = KindPlan(kind, viable=True)
    say = out.arithmetic.append
    scale = target.dim / model.dim
    setting: float | None = None
    if model.knob:
        setting, how = model.breadth(n, target.recall)
        if setting is None:
            return KindPlan(kind, viable=False, reason=how)
        rounded = math.ceil(setting)
        out.setting = {model.knob: rounded}
        say(f"{how} → {model.knob} {rounded} reaches recall {target.recall} at {n:,} vectors")
        out.recall = target.recall
    else:
        out.recall = round(model.recall_without_knob(n), 4)
        if out.recall < target.recall:
            reason = f"recall {out.recall} at {n:,} vectors is below {target.recall}"
            return KindPlan(kind, viable=False, reason=reason, recall=out.recall)
        say(f"recall {out.recall} at {n:,} vectors (measured at {_sizes(model.points)})")
    index_ms = model.latency_ms(n, setting) * (scale if scale != 1 else 1)
    costs = calibration.get("costs", {})
    embed_ms, read_ms = costs.get("query_embed_ms", 0.0), costs.get("hit_read_ms", 0.0)
    search_ms = index_ms
    if target.filter_share:
        filtered = model.filtered_ms(n, target.selectivity) * scale
        search_ms = (1 - target.filter_share) * index_ms + target.filter_share * filtered
        say(f"filtered search {filtered:.3f} ms at {target.selectivity:.1%} of the vectors, "
            f"{target.filter_share:.0%} of queries → {search_ms:.3f} ms mean")  # fmt: skip
    query_ms = embed_ms + search_ms + read_ms
    out.index_ms, out.query_ms = round(index_ms, 4), round(query_ms, 4)
    out.qps_per_core = round(1000 / query_ms, 1)
    out.cores = max(1, math.ceil(target.qps * query_ms / 1000 / UTILISATION))
    say(f"index search {index_ms:.3f} ms (single core, fitted on {_sizes(model.points)}) "
        f"+ query embedding {embed_ms:.3f} ms + reading hits {read_ms:.3f} ms = "
        f"{query_ms:.3f} ms → {out.qps_per_core:,} queries/s per core")  # fmt: skip
    say(f"cores = ceil({target.qps:g} q/s * {query_ms:.3f} ms / {UTILISATION}) = {out.cores}")
    out.ram_bytes = _ram(model, target, calibration, say)
    out.disk_bytes = _disk(model, target, calibration, say)
    a, b = model.build()
    out.build_s = round(model.build_s(n) * scale, 1)
    threads = calibration.get("build_threads")
    say(f"build n * ({a:.3g} + {b:.3g} * ln n) = {out.build_s:,} s on {threads} threads")
    return out


def _ram(model: KindModel, target: Target, cal: Mapping[str, Any], say: Any) -> int:
    n, dim = target.planned, target.dim
    fixed, per_vector = model.memory(n)
    per_vector += code_bytes(model.kind, dim, model.config) - code_bytes(
        model.kind, model.dim, model.config
    )
    index = fixed + per_vector * n
    exact = 4 * dim * n
    columns = FILTER_PATHS * FILTER_COLUMN_BYTES * n if target.filter_share else 0
    if target.filter_share and model.kind in SCANNED_KINDS:
        columns += math.ceil(dim / 8) * n  # the sign bits a selective filter scans
    base = cal.get("costs", {}).get("process_bytes", 0)
    total = int((base + index + exact + columns) * HEADROOM)
    say(f"RAM = ({_gib(base)} serving process + {per_vector:,.0f} B * {n:,} index "
        f"+ {_gib(fixed)} fixed + 4 * {dim} B * {n:,} exact vectors "
        f"+ {_gib(columns)} filters) * {HEADROOM} = {_gib(total)}")  # fmt: skip
    return total


def _disk(model: KindModel, target: Target, cal: Mapping[str, Any], say: Any) -> int:
    n = target.planned
    fixed, per_vector = model.files()
    per_vector += code_bytes(model.kind, target.dim, model.config) - code_bytes(
        model.kind, model.dim, model.config
    )
    per_vector += 4 * (target.dim - model.dim)  # the exact vectors' file
    costs = cal.get("costs", {})
    row = costs.get("store_bytes_per_chunk", 4 * target.dim + costs.get("chunk_text_bytes", 0))
    store = (row + target.metadata_bytes) * n
    total = int(fixed + per_vector * n + store)
    say(f"disk = {per_vector:,.0f} B * {n:,} segment files + ({row:,.0f} B store row "
        f"+ {target.metadata_bytes} B metadata) * {n:,} = {_gib(total)}")  # fmt: skip
    return total


def _gib(value: float) -> str:
    return f"{value / GIB:,.2f} GiB"


def plan(target: Target, calibration: Mapping[str, Any], machines: Sequence[Machine] = ()) -> Plan:
    """Every calibrated kind's needs for ``target``, and the kind to use: the cheapest
    machine fleet from ``machines`` when given, else the fewest cores + RAM / 4 GiB."""
    found = models(calibration)
    if not found:
        raise InvalidConfig("the calibration measured no index kind at two sizes or more",
                            field="calibration")  # fmt: skip
    kinds = [plan_kind(model, target, calibration) for model in found.values()]
    viable = [k for k in kinds if k.viable]
    notes = _notes(target, calibration)
    if machines:
        for kind in viable:
            kind.machine = _cheapest(kind, machines)
        priced = [k for k in viable if k.machine is not None]
        best = min(priced, key=lambda k: (k.machine or {})["cost_per_hour"], default=None)
        if viable and not priced:
            notes.append("no machine in the price list has the RAM any kind needs")
    else:
        best = min(viable, key=weight, default=None)
    return Plan(target, best.kind if best else None, kinds, _about(calibration), notes)


def weight(kind: KindPlan) -> float:
    """Cores plus RAM in units of :data:`RAM_PER_CORE_GIB`: how the kinds are compared
    without a price list."""
    return (kind.cores or 0) + (kind.ram_bytes or 0) / GIB / RAM_PER_CORE_GIB


def _cheapest(kind: KindPlan, machines: Sequence[Machine]) -> dict[str, Any] | None:
    """The fleet of one machine type that serves ``kind`` at the least cost per hour:
    every node holds the whole index, nodes share the queries."""
    options: list[dict[str, Any]] = []
    for machine in machines:
        if machine.ram_gib * GIB < (kind.ram_bytes or 0):
            continue
        nodes = max(1, math.ceil((kind.cores or 1) / machine.vcpus))
        options.append({"name": machine.name, "nodes": nodes,
                        "cost_per_hour": round(nodes * machine.price_per_hour, 4)})  # fmt: skip
    return min(options, key=lambda o: float(o["cost_per_hour"]), default=None)


def _notes(target: Target, calibration: Mapping[str, Any]) -> list[str]:
    notes = []
    dim = int(calibration["dim"])
    if target.dim != dim:
        scaled = f"search and build times scaled by {target.dim}/{dim}"
        notes.append(f"calibrated at {dim} dimensions: {scaled}; calibrate at {target.dim}")
    measured = [*calibration["kinds"].values(), *calibration.get("patches", {}).values()]
    largest = max(p["n"] for points in measured for p in points)
    if target.planned > FAR * largest:
        notes.append(f"{target.planned:,} vectors is over {FAR} times the largest size "
                     f"calibrated ({largest:,}, patches included): the search breadth a "
                     "recall needs is extrapolated; check the built index with "
                     "`ragstore index --check-recall`")  # fmt: skip
    return notes


def _about(calibration: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("measured_at", "machine", "source", "dim", "build_threads")
    return {key: calibration.get(key) for key in keys}
