"""The engine benchmark at a tiny size: JSON structure, consistent derived numbers, validation.

No timing thresholds: the numbers depend on the machine and its load, only their shape and
internal consistency are checked here.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch

from mapd.bench.engine import TARGETS, run_engine_benchmark
from mapd.engine.trainer import TrainSettings
from mapd.errors import ConfigError
from mapd.io import load_json

N = 256
ENGINE = ("engine_none", "engine_online", "engine_eval", "engine_eval_augment")
WORKERS = (0, 1)
CONVENTIONAL = tuple(
    f"conventional_w{w}{suffix}" for w in WORKERS for suffix in ("", "_noeval", "_eval_augment")
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    result = run_engine_benchmark(
        out_dir=out,
        n=N,
        epochs=1,
        warmup_epochs=1,
        settle_epochs=1,
        image_size=16,
        num_workers=WORKERS,  # one worker process exercises the multi-process loader cheaply
        repeats=2,
        log=lambda msg: None,
    )
    return result, out


def _positive(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_json_on_disk_is_the_returned_result(bench: tuple[dict[str, Any], Path]) -> None:
    result, out = bench
    assert sorted(p.name for p in out.iterdir()) == ["engine.json"]  # no temporary left over
    assert load_json(out / "engine.json") == result
    assert {
        "configs",
        "overheads",
        "speedup_vs_conventional",
        "targets",
        "passed",
        "machine",
        "settings",
        "baseline",
    } <= set(result)
    assert result["targets"] == {
        "online_overhead_max": 0.05,
        "eval_overhead_max": 0.35,
        "speedup_min": 1.5,
    }


def test_every_configuration_has_positive_finite_timings(
    bench: tuple[dict[str, Any], Path],
) -> None:
    configs = bench[0]["configs"]
    assert set(configs) == set(ENGINE) | set(CONVENTIONAL)
    for name, cfg in configs.items():
        # epochs=1 per run, repeats=2: two timed epochs each (the warm-up epochs are dropped)
        assert len(cfg["epoch_s"]) == 2, name
        assert all(_positive(t) for t in cfg["epoch_s"]), name
        assert cfg["images_per_s"] == pytest.approx(N / statistics.median(cfg["epoch_s"]))
        assert cfg["images_per_s_best"] == pytest.approx(N / min(cfg["epoch_s"]))
        assert cfg["images_per_s_best"] >= cfg["images_per_s"] > 0
        if "train_s" in cfg:  # epoch = training pass + recording pass
            sums = [a + b for a, b in zip(cfg["train_s"], cfg["record_s"], strict=True)]
            assert cfg["epoch_s"] == pytest.approx(sums)
            assert all(_positive(t) for t in cfg["train_s"])
    assert configs["engine_none"]["record"] == "none"
    assert configs["engine_online"]["record"] == "online"
    assert configs["engine_eval"]["record_augment"] is False
    assert configs["engine_eval_augment"]["record_augment"] is True
    # recording passes actually ran (and took time) where there is one
    for name in ("engine_eval", "engine_eval_augment", "conventional_w0", "conventional_w1"):
        assert all(_positive(t) for t in configs[name]["record_s"]), name
    assert configs["conventional_w1"]["num_workers"] == 1
    assert configs["conventional_w1"]["persistent_workers"] is True
    assert configs["conventional_w0"]["pin_memory"] is False  # CPU
    # the three conventional variants share their training passes
    assert configs["conventional_w0_noeval"]["epoch_s"] == configs["conventional_w0"]["train_s"]


def test_overheads_speedups_and_verdicts_follow_from_the_timings(
    bench: tuple[dict[str, Any], Path],
) -> None:
    result = bench[0]
    configs = result["configs"]

    def med(name: str) -> float:
        return statistics.median(configs[name]["epoch_s"])

    for mode in ("online", "eval", "eval_augment"):
        expected = (med(f"engine_{mode}") - med("engine_none")) / med("engine_none")
        assert result["overheads_vs_engine_none"][mode] == pytest.approx(expected)
    for mode in ("online", "eval", "eval_augment"):
        cfg = configs[f"engine_{mode}"]
        share = statistics.median(cfg["record_s"]) / statistics.median(cfg["train_s"])
        assert result["overheads"][mode] == pytest.approx(share) and share > 0
    baseline = max(
        (f"conventional_w{w}" for w in WORKERS), key=lambda k: configs[k]["images_per_s"]
    )
    assert result["baseline"] == baseline
    speedup = configs["engine_eval"]["images_per_s"] / configs[baseline]["images_per_s"]
    assert result["speedup_vs_conventional"] == pytest.approx(speedup)
    assert result["speedups"]["eval"] == pytest.approx(speedup)
    assert all(_positive(v) for v in result["speedups"].values())
    passed = result["passed"]
    assert passed["online_overhead"] == (result["overheads"]["online"] <= 0.05)
    assert passed["eval_overhead"] == (result["overheads"]["eval"] <= 0.35)
    assert passed["speedup"] == (speedup >= 1.5)
    assert passed["all"] == (
        passed["online_overhead"] and passed["eval_overhead"] and passed["speedup"]
    )
    assert TARGETS == result["targets"]
    quality = result["timing_quality"]
    spreads = [max(c["epoch_s"]) / min(c["epoch_s"]) for c in configs.values()]
    assert quality["max_spread"] == pytest.approx(max(spreads)) and quality["max_spread"] >= 1
    assert quality["noisy"] == (quality["max_spread"] > quality["spread_limit"])


def test_machine_and_settings_are_recorded(bench: tuple[dict[str, Any], Path]) -> None:
    result = bench[0]
    machine, settings = result["machine"], result["settings"]
    assert machine["cpu_count"] == os.cpu_count()
    assert machine["torch_version"] == torch.__version__
    assert machine["torch_threads"] >= 1
    assert machine["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert machine["model"] == "small_cnn" and machine["model_parameters"] > 0
    assert settings["n"] == N and settings["image_size"] == 16
    assert settings["epochs"] == 1 and settings["warmup_epochs"] == 1 and settings["repeats"] == 2
    assert settings["settle_epochs"] == 1
    assert settings["data"] == "synthetic" and settings["num_workers"] == list(WORKERS)
    assert settings["eval_batch_size"] == TrainSettings.from_config().eval_batch_size  # the default


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n": 0}, "n must be an int >= 1"),
        ({"epochs": 0}, "epochs must be an int >= 1"),
        ({"image_size": 4}, "image_size must be an int >= 8"),
        ({"data": "imagenet"}, "data must be 'synthetic' or 'cifar10'"),
        ({"data": "cifar10"}, "needs cifar10_root"),
        ({"data": "cifar10", "cifar10_root": "x", "image_size": 16}, "32x32"),
        ({"num_workers": ()}, "num_workers"),
        ({"num_workers": (0, -1)}, "num_workers"),
        ({"repeats": 0}, "repeats must be an int >= 1"),
        ({"settle_epochs": -1}, "settle_epochs must be an int >= 0"),
    ],
)
def test_bad_options_are_one_clear_error(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        run_engine_benchmark(out_dir=tmp_path, **options)
    assert not (tmp_path / "engine.json").exists()


@pytest.mark.shared
def test_real_cifar10_subset(shared_cifar10_root: Path, tmp_path: Path) -> None:
    result = run_engine_benchmark(
        out_dir=tmp_path,
        n=N,
        epochs=1,
        warmup_epochs=1,
        settle_epochs=0,
        data="cifar10",
        cifar10_root=shared_cifar10_root,
        num_workers=(0,),
        log=lambda msg: None,
    )
    assert result["settings"]["data"] == "cifar10"
    assert result["settings"]["image_size"] == 32
    assert all(
        math.isfinite(v) and v > 0 for cfg in result["configs"].values() for v in cfg["epoch_s"]
    )
    assert load_json(tmp_path / "engine.json")["baseline"] == "conventional_w0"
