"""mapd: Metadata Archaeology via Probe Dynamics (MAP-D, ICLR 2023).

Python API: :func:`audit` an in-memory data set; :func:`load_dataset` from the registry;
:func:`build_probe_suite`, :func:`train_trajectories`, :func:`assign_metadata` for the steps.

Names are imported on first use, so that ``mapd <step>`` loads only what its step needs.
"""

from __future__ import annotations

from mapd._lazy import lazy_attributes

__version__ = "0.1.0"

_WHERE = {
    "AuditResult": "mapd.api",
    "audit": "mapd.api",
    "run_audit": "mapd.api",
    "assign_metadata": "mapd.assign",
    "heldout_accuracy": "mapd.assign",
    "ImageDataset": "mapd.data",
    "load_dataset": "mapd.data",
    "train_trajectories": "mapd.engine.run",
    "knn_proba": "mapd.knn",
    "ProbeSuite": "mapd.probes",
    "build_probe_suite": "mapd.probes",
}

__all__ = sorted(_WHERE)


__getattr__ = lazy_attributes(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
