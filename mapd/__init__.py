"""mapd: Metadata Archaeology via Probe Dynamics (MAP-D, ICLR 2023)."""

__version__ = "0.1.0"
