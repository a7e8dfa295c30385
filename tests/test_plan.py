"""The capacity planner: its fits, a real calibration on a real store, and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import ragstore
from ragstore.cli import cli
from ragstore.config import IndexConfig
from ragstore.engine import calibrate as cal
from ragstore.engine import plan
from ragstore.engine.shape import VectorShape, normalize

DIM = 384
SIZES = (2_000, 4_000)
KINDS = ("flat", "hnsw", "binary")


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 40 random centres: neighbourhoods an index can find."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM))
    picked = centres[rng.integers(0, 40, n)]
    return normalize(picked + 0.6 * rng.standard_normal((n, DIM)))


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "store"
    with ragstore.open(path) as store:
        col = store.create_collection("vectors", embedder=None, dim=DIM)
        vectors = clustered(1_500)
        col.upsert_vectors([f"v{i}" for i in range(len(vectors))], vectors)
    return path


@pytest.fixture(scope="module")
def calibration(store_path: Path) -> dict[str, Any]:
    with ragstore.open(store_path, create=False) as store:
        return cal.calibrate_store(store, sizes=SIZES, kinds=KINDS)


# -- the fits -------------------------------------------------------------------------


def test_the_linear_fit_recovers_its_parameters() -> None:
    x = [1_000.0, 2_000.0, 4_000.0]
    assert plan.fit_linear(x, [500 + 3 * v for v in x]) == pytest.approx((500, 3))


def test_the_breadth_line_interpolates_in_log_log_and_never_falls_past_the_last_point() -> None:
    points = [(1_000.0, 10.0), (4_000.0, 20.0), (16_000.0, 40.0)]
    assert plan.loglog_line(points, 500) == pytest.approx(10)  # below the first: its value
    assert plan.loglog_line(points, 2_000) == pytest.approx(10 * 2**0.5)
    assert plan.loglog_line(points, 64_000) == pytest.approx(80)  # the last slope, 1/2
    falling = [(1_000.0, 30.0), (4_000.0, 20.0)]
    assert plan.loglog_line(falling, 64_000) == pytest.approx(20)


def test_build_time_is_per_vector_cost_growing_with_log_n() -> None:
    sizes = [25_000, 50_000, 100_000]
    points = [{"n": n, "build_s": n * (1e-4 + 2e-5 * math.log(n))} for n in sizes]
    model = plan.KindModel("hnsw", IndexConfig(), 384, points)
    assert model.build() == pytest.approx((1e-4, 2e-5), rel=1e-6)
    assert model.build_s(1_000_000) == pytest.approx(1e6 * (1e-4 + 2e-5 * math.log(1e6)))


def test_a_term_fitted_negative_is_dropped() -> None:
    features = np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]])
    coef = plan.nonnegative_fit(features, np.array([3.0, 2.0, 1.0]))  # falls with x
    assert coef[1] == 0 and coef[0] == pytest.approx(2.0)


def test_breadth_for_interpolates_between_measured_breadths() -> None:
    sweep = [{"setting": 16, "recall": 0.8}, {"setting": 64, "recall": 0.9},
             {"setting": 256, "recall": 1.0}]  # fmt: skip
    assert plan.breadth_for(sweep, 0.8) == 16
    assert plan.breadth_for(sweep, 0.95) == pytest.approx(128)  # halfway in log2
    assert plan.breadth_for(sweep, 1.01) is None


def test_the_shape_draws_unit_vectors_of_the_real_dimension() -> None:
    shape = VectorShape.fit(clustered(1_000), 20, seed=0)
    drawn = shape.sample(np.random.default_rng(1), 300)
    assert drawn.shape == (300, DIM)
    assert np.allclose(np.linalg.norm(drawn, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vectors", 0),
        ("dim", 0),
        ("qps", 0),
        ("recall", 1.5),
        ("filter_share", 2),
        ("selectivity", 0),
        ("metadata_bytes", -1),
        ("growth", 0.5),
    ],
)
def test_a_bad_target_names_its_field(field: str, value: float) -> None:
    with pytest.raises(ragstore.InvalidInput) as bad:
        plan.Target(**{"vectors": 1_000, field: value})
    assert bad.value.field == field


# -- a real calibration ---------------------------------------------------------------


def test_calibration_measures_every_kind_at_every_size(calibration: dict[str, Any]) -> None:
    assert set(calibration["kinds"]) == set(KINDS)
    assert calibration["dim"] == DIM and calibration["machine"]["cores"] >= 1
    assert "vectors" in calibration["source"]
    for points in calibration["kinds"].values():
        assert [p["n"] for p in points] == list(SIZES)
        for point in points:
            assert point["build_s"] > 0 and all(row["ms"] > 0 for row in point["sweep"])
            assert sum(point["files"].values()) > 4 * DIM * point["n"]  # vectors.npy + index
    flat = calibration["kinds"]["flat"]
    assert all(p["sweep"][0]["recall"] == 1.0 for p in flat)  # exact search is exact
    hnsw = calibration["kinds"]["hnsw"][-1]["sweep"]
    assert hnsw[-1]["recall"] >= hnsw[0]["recall"]  # wider search, no lower recall
    assert calibration["costs"]["process_bytes"] > 10 << 20
    assert calibration["costs"]["store_bytes_per_chunk"] > 4 * DIM


def test_calibration_measures_patches_for_the_kinds_with_a_breadth(
    calibration: dict[str, Any],
) -> None:
    assert set(calibration["patches"]) == {"hnsw"}  # flat and binary have no breadth
    points = calibration["patches"]["hnsw"]
    assert [p["n"] for p in points] == [SIZES[-1] * d for d in cal.PATCH_DENSITIES]
    for point in points:
        assert [row["setting"] for row in point["sweep"]] == list(cal.SWEEPS["hnsw"])
        assert all(0 < row["recall"] <= 1 for row in point["sweep"])
        assert point["sweep"][-1]["recall"] >= point["sweep"][0]["recall"]


def test_a_patch_is_the_share_of_components_nearest_one() -> None:
    shape = VectorShape.fit(clustered(1_000), 20, seed=0)
    region, inner = shape.patch(4, np.random.default_rng(3))
    assert len(region.weights) == 5 and len(inner.weights) == 1
    assert region.weights.sum() == pytest.approx(1) and inner.weights.sum() == pytest.approx(1)
    seed = inner.centroids[0]
    similarity = shape.centroids @ seed
    assert sorted(region.centroids @ seed) == pytest.approx(sorted(similarity)[-5:])
    drawn = region.sample(np.random.default_rng(4), 50)
    assert drawn.shape == (50, DIM)


def test_patches_carry_the_breadth_to_the_sizes_they_stand_for() -> None:
    def point(n: int, reached: dict[int, float]) -> dict[str, Any]:
        return {"n": n, "sweep": [{"setting": s, "recall": r} for s, r in reached.items()]}

    sizes = [point(10_000, {10: 0.96, 20: 0.99}), point(40_000, {10: 0.9, 20: 0.95})]
    patches = [point(100_000, {20: 0.9, 40: 0.95}), point(400_000, {40: 0.9, 80: 0.95})]
    model = plan.KindModel("hnsw", IndexConfig(), DIM, sizes, patches)
    assert model.breadth(40_000, 0.95)[0] == pytest.approx(20)
    assert model.breadth(100_000, 0.95)[0] == pytest.approx(40)
    assert model.breadth(1_600_000, 0.95)[0] == pytest.approx(160)  # the last slope, 1/2
    assert "on patches" in model.breadth(100_000, 0.95)[1]
    unreachable = [*patches, point(1_200_000, {40: 0.8, 80: 0.9})]
    model = plan.KindModel("hnsw", IndexConfig(), DIM, sizes, unreachable)
    assert model.breadth(400_000, 0.95)[0] == pytest.approx(80)
    assert model.breadth(2_000_000, 0.95)[0] is None


def test_flat_memory_is_its_vectors(calibration: dict[str, Any]) -> None:
    model = plan.models(calibration)["flat"]
    _, per_vector = model.memory(10_000)
    assert 0.8 * 4 * DIM <= per_vector < 1.5 * 4 * DIM  # page-granular RSS


def test_the_plan_grows_with_the_target(calibration: dict[str, Any]) -> None:
    small = plan.plan(plan.Target(vectors=50_000, qps=5), calibration)
    large = plan.plan(plan.Target(vectors=50_000, qps=5, growth=4), calibration)
    busy = plan.plan(plan.Target(vectors=50_000, qps=200_000), calibration)
    assert small.recommended in KINDS
    for kind in KINDS:
        a, b, c = (next(k for k in p.kinds if k.kind == kind) for p in (small, large, busy))
        if not a.viable:
            continue
        assert b.ram_bytes > a.ram_bytes and b.disk_bytes > a.disk_bytes
        assert c.cores > a.cores
        assert a.arithmetic and any("cores = ceil" in line for line in a.arithmetic)
    flat = next(k for k in busy.kinds if k.kind == "flat")
    expected = math.ceil(200_000 * flat.query_ms / 1000 / plan.UTILISATION)
    assert flat.cores == expected


def test_an_unreachable_recall_makes_a_kind_not_viable(calibration: dict[str, Any]) -> None:
    result = plan.plan(plan.Target(vectors=10_000, recall=1.0), calibration)
    binary = next(k for k in result.kinds if k.kind == "binary")
    flat = next(k for k in result.kinds if k.kind == "flat")
    assert flat.viable
    if binary.recall is not None and binary.recall < 1.0:
        assert not binary.viable and "below" in binary.reason


def test_a_price_list_picks_the_cheapest_fleet_that_holds_the_index(
    calibration: dict[str, Any],
) -> None:
    target = plan.Target(vectors=200_000, qps=2_000)
    machines = [plan.Machine("tiny", 2, 0.25, 0.01), plan.Machine("small", 4, 16, 0.2),
                plan.Machine("big", 32, 128, 1.0)]  # fmt: skip
    result = plan.plan(target, calibration, machines)
    chosen = next(k for k in result.kinds if k.kind == result.recommended)
    assert chosen.machine is not None and chosen.machine["name"] != "tiny"  # too little RAM
    for kind in result.kinds:
        if kind.machine:
            assert kind.machine["cost_per_hour"] >= chosen.machine["cost_per_hour"]


def test_calibration_needs_enough_real_vectors(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "s") as store:
        col = store.create_collection("few", embedder=None, dim=DIM)
        col.upsert_vectors(["a", "b"], clustered(2))
        with pytest.raises(ragstore.InvalidInput, match="at least 1000") as few:
            cal.calibrate_store(store, sizes=SIZES, kinds=("flat",))
        assert few.value.field == "collection"


# -- the command ----------------------------------------------------------------------


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_plan_prints_the_arithmetic_from_the_shipped_calibration(tmp_path: Path) -> None:
    result = run("--store", str(tmp_path / "none"), "plan", "--vectors", "100000000", "--qps", "50")
    assert result.exit_code == 0, result.output
    assert "shipped with ragstore" in result.output
    assert "recommended:" in result.output and "cores = ceil(50" in result.output
    assert "is extrapolated" in result.output  # far past the largest size calibrated


def test_plan_json_uses_the_stores_own_calibration(
    store_path: Path, calibration: dict[str, Any], tmp_path: Path
) -> None:
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(calibration))
    result = run("plan", "--vectors", "30000", "--calibration", str(mine), "--json",
                 "--filter-share", "0.5", "--selectivity", "0.05")  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["calibration_file"] == str(mine)
    assert body["target"]["planned_vectors"] == 30_000
    assert {k["kind"] for k in body["kinds"]} == set(KINDS)
    assert any("filtered search" in line for k in body["kinds"] for line in k["arithmetic"])


def test_plan_calibrate_writes_beside_the_store(store_path: Path) -> None:
    result = run("--store", str(store_path), "plan", "--calibrate", "--sizes", "1500,3000")
    assert result.exit_code == 0, result.output
    written = json.loads((store_path / plan.CALIBRATION_FILE).read_text())
    assert [p["n"] for p in written["kinds"]["hnsw"]] == [1_500, 3_000]
    used = run("--store", str(store_path), "plan", "--vectors", "5000", "--json")
    assert json.loads(used.output)["calibration_file"] == str(store_path / plan.CALIBRATION_FILE)


@pytest.mark.parametrize(
    "args",
    [
        ["plan"],
        ["plan", "--vectors", "0"],
        ["plan", "--vectors", "10", "--recall", "1.5"],
        ["plan", "--calibrate", "--sizes", "10,x"],
        ["plan", "--calibrate", "--sizes", "5000"],
    ],
)
def test_plan_usage_errors_exit_2(args: list[str], store_path: Path) -> None:
    result = run("--store", str(store_path), *args)
    assert result.exit_code == 2, result.output


def test_a_bad_price_list_is_a_usage_error(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text('[{"name": "m"}]')
    result = run("plan", "--vectors", "1000", "--prices", str(prices))
    assert result.exit_code == 2 and "price_per_hour" in result.output
