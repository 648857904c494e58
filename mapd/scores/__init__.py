"""Per-example scores: plain functions of recorded arrays, one score per example, higher = more
suspect (more likely mislabeled, atypical, minority, ...), picked by name from :data:`SCORES`.

Each scorer declares the arrays it needs from :class:`Inputs` (``loss``, ``correct``, ``labels``,
``probe_loss``, ``probe_suspect``, ...) and its default decision threshold. :func:`compute_score`
is the public entry: it validates the inputs once (shapes, dtypes, finiteness) and calls the
scorer with exactly what it declared plus its options (the config's ``scores/<name>``).

A score that needs reference probes (``probe_loss``, ``probe_suspect``) also takes ``k``, MAP-D's
one k (the config's ``assign/k``), from its caller, and has an option ``suspect``: the probe
categories that mark a reference as suspect, and may have ``clean``: the categories of the other
references (:func:`probe_references` picks them).

To add a score: write ``fn(*, <needs>..., **options) -> (N,) array``, decorate it with
:func:`register_score`, and add its options section under ``definitions/scores`` in the
schema (or pass ``schema=``, e.g. for a test's toy score).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from mapd.errors import ConfigError, DataError


@dataclass(frozen=True)
class Inputs:
    """The arrays scores are computed from; rows are examples, columns epochs.

    Attributes:
        loss: (N, T) float per-example loss after each epoch.
        correct: (N, T) bool, predicted correctly after each epoch.
        labels: (N,) int, the label each example was trained with.
        probe_loss: (M, T) float trajectories of reference probes (k-NN scores).
        probe_suspect: (M,) bool, whether each reference probe is of a suspect category.
        margin: (N, T) float, logit of the given label minus the largest other logit.
        probs: (N, C) float predicted probabilities, e.g. out-of-sample (cross-validated) ones
            for confident learning, or those of an early epoch for EL2N.
        threshold_margin: (M, T) float margins of AUM's threshold samples (examples given a
            fake extra class in a run of their own).
        probe_margin: (M, T) float margins of the reference probes.
    """

    loss: np.ndarray | None = None
    correct: np.ndarray | None = None
    labels: np.ndarray | None = None
    probe_loss: np.ndarray | None = None
    probe_suspect: np.ndarray | None = None
    margin: np.ndarray | None = None
    probs: np.ndarray | None = None
    threshold_margin: np.ndarray | None = None
    probe_margin: np.ndarray | None = None


INPUT_NAMES = tuple(f.name for f in fields(Inputs))


@dataclass(frozen=True)
class Scorer:
    name: str
    fn: Callable[..., np.ndarray]
    needs: tuple[str, ...]
    threshold: float | None  # default decision threshold on the score; None: ranking only
    description: str
    # the method's own decision (N,) bool where a fixed threshold does not describe it (AUM's
    # threshold samples, confident learning's rule); called like ``fn``
    flag: Callable[..., np.ndarray] | None = None


SCORES: dict[str, Scorer] = {}


def register_score(
    name: str,
    *,
    needs: tuple[str, ...],
    threshold: float | None = None,
    description: str = "",
    schema: dict[str, Any] | None = None,
    flag: Callable[..., np.ndarray] | None = None,
) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    """Decorator: register ``fn`` as the score ``name`` computed from the arrays ``needs``.

    ``threshold`` is the default decision (flag where score >= threshold); ``flag``, called
    with the same arrays and options, replaces it where the method decides otherwise."""
    if unknown := set(needs) - set(INPUT_NAMES):
        raise ValueError(f"score {name!r}: unknown inputs {sorted(unknown)}; known {INPUT_NAMES}")

    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        if name in SCORES and SCORES[name].fn is not fn:
            raise ConfigError(f"a score named {name!r} is already registered")
        if schema is not None:
            from mapd.config import register_schema

            register_schema("scores", name, schema)
        SCORES[name] = Scorer(name, fn, tuple(needs), threshold, description, flag)
        return fn

    return deco


def _validate(inputs: Inputs, needs: tuple[str, ...], name: str) -> int:
    """Check the arrays ``needs`` once; returns N."""
    arrays = {k: getattr(inputs, k) for k in INPUT_NAMES}
    if missing := [k for k in needs if arrays[k] is None]:
        raise DataError(f"score {name!r} needs {missing}, which this run does not provide")
    n = t = None
    for key in ("loss", "correct", "margin"):
        a = arrays[key]
        if a is None:
            continue
        if a.ndim != 2:
            raise DataError(f"score {name!r}: {key} must be (N, T), got shape {a.shape}")
        if (n, t) != (None, None) and a.shape != (n, t):
            raise DataError(f"score {name!r}: {key} has shape {a.shape}, expected {(n, t)}")
        n, t = a.shape
    for key in ("loss", "margin"):
        if arrays[key] is not None and not np.isfinite(arrays[key]).all():
            raise DataError(f"score {name!r}: {key} contains NaN or inf")
    if arrays["correct"] is not None and arrays["correct"].dtype != np.bool_:
        raise DataError(f"score {name!r}: correct must be bool, got {arrays['correct'].dtype}")
    if arrays["labels"] is not None:
        if n is not None and arrays["labels"].shape != (n,):
            raise DataError(f"score {name!r}: labels must be ({n},), got {arrays['labels'].shape}")
        n = len(arrays["labels"]) if n is None else n
    probe, suspect = arrays["probe_loss"], arrays["probe_suspect"]
    if probe is not None or suspect is not None:
        if probe is None or suspect is None:
            raise DataError(f"score {name!r}: give probe_loss and probe_suspect together")
        if probe.ndim != 2 or (t is not None and probe.shape[1] != t):
            raise DataError(f"score {name!r}: probe_loss must be (M, {t}), got {probe.shape}")
        if suspect.shape != (len(probe),) or suspect.dtype != np.bool_:
            raise DataError(f"score {name!r}: probe_suspect must be bool ({len(probe)},)")
        if not np.isfinite(probe).all():
            raise DataError(f"score {name!r}: probe_loss contains NaN or inf")
    probs = arrays["probs"]
    if probs is not None:
        if probs.ndim != 2 or (n is not None and probs.shape[0] != n):
            raise DataError(f"score {name!r}: probs must be ({n}, C), got {probs.shape}")
        if not np.isfinite(probs).all() or (probs < 0).any():
            raise DataError(f"score {name!r}: probs must be finite and non-negative")
        n = probs.shape[0] if n is None else n
    if arrays["labels"] is not None and probs is not None:
        if arrays["labels"].min() < 0 or arrays["labels"].max() >= probs.shape[1]:
            raise DataError(f"score {name!r}: labels outside the {probs.shape[1]} classes of probs")
    pm = arrays["probe_margin"]
    if pm is not None and (probe is None or pm.shape != probe.shape or not np.isfinite(pm).all()):
        raise DataError(f"score {name!r}: probe_margin must be finite and shaped like probe_loss")
    thr = arrays["threshold_margin"]
    if thr is not None and (thr.ndim != 2 or not np.isfinite(thr).all()):
        raise DataError(f"score {name!r}: threshold_margin must be finite (M, T)")
    if n is None:
        raise DataError(f"score {name!r}: no per-example array given")
    return n


def compute_score(name: str, inputs: Inputs, **options: Any) -> np.ndarray:
    """Score every example with the registered score ``name``: float64 (N,), higher = more suspect.

    ``options`` are the score's settings (the config's ``scores/<name>``).
    """
    if name not in SCORES:
        raise ConfigError(f"unknown score {name!r}; registered: {sorted(SCORES)}")
    sc = SCORES[name]
    n = _validate(inputs, sc.needs, name)
    out = np.asarray(sc.fn(**{k: getattr(inputs, k) for k in sc.needs}, **options), np.float64)
    if out.shape != (n,):
        raise DataError(f"score {name!r} returned shape {out.shape}, expected ({n},)")
    return out


def flag_issues(name: str, inputs: Inputs, **options: Any) -> np.ndarray | None:
    """The score's own decision (N,) bool: its ``flag`` rule, else score >= its threshold;
    None for a score that only ranks."""
    sc = SCORES[name] if name in SCORES else None
    if sc is None:
        raise ConfigError(f"unknown score {name!r}; registered: {sorted(SCORES)}")
    if sc.flag is not None:
        n = _validate(inputs, sc.needs, name)
        out = np.asarray(sc.flag(**{k: getattr(inputs, k) for k in sc.needs}, **options), bool)
        if out.shape != (n,):
            raise DataError(f"score {name!r}: its flags have shape {out.shape}, expected ({n},)")
        return out
    if sc.threshold is None:
        return None
    return compute_score(name, inputs, **options) >= sc.threshold


def probe_references(
    category: np.ndarray, candidates: np.ndarray, options: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """The reference probes of a probe score: the rows ``candidates`` (positions into
    ``category``, the (R,) category name of every row) of the score's ``suspect`` categories and
    of its ``clean`` ones (all other candidates when the score has no ``clean`` option).
    Returns the rows (M,) and whether each is suspect (M,) bool."""
    cats = np.asarray(category)[candidates]
    suspect = np.isin(cats, options["suspect"])
    keep = suspect | (np.isin(cats, options["clean"]) if "clean" in options else True)
    return np.asarray(candidates)[keep], suspect[keep]


def describe(name: str) -> str:
    """A score's description: its own, else its schema section's, else its docstring."""
    from mapd.config import schema

    sc = SCORES[name]
    section = schema()["definitions"]["scores"]["properties"].get(name, {})
    return sc.description or section.get("description") or (sc.fn.__doc__ or "").strip()


# the built-in scores register themselves on import
from mapd.scores import dynamics as _dynamics  # noqa: E402, F401, I001  (MAP-D first)
from mapd.scores import detectors as _detectors  # noqa: E402, F401
from mapd.scores import groups as _groups  # noqa: E402, F401

__all__ = [
    "SCORES",
    "Inputs",
    "Scorer",
    "compute_score",
    "flag_issues",
    "probe_references",
    "register_score",
]
