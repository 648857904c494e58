"""mapd: Metadata Archaeology via Probe Dynamics (MAP-D, ICLR 2023).

Python API: :func:`audit` an in-memory data set; :func:`load_dataset` from the registry;
:func:`build_probe_suite`, :func:`train_trajectories`, :func:`assign_metadata` for the steps.
"""

__version__ = "0.1.0"

from mapd.api import AuditResult, audit, run_audit
from mapd.assign import assign_metadata, heldout_accuracy
from mapd.data import ImageDataset, load_dataset
from mapd.engine.run import train_trajectories
from mapd.knn import knn_proba
from mapd.probes import ProbeSuite, build_probe_suite

__all__ = [
    "AuditResult",
    "ImageDataset",
    "ProbeSuite",
    "assign_metadata",
    "audit",
    "build_probe_suite",
    "heldout_accuracy",
    "knn_proba",
    "load_dataset",
    "run_audit",
    "train_trajectories",
]
