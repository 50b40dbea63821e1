"""Analysis probes: teacher-student gap metrics, feature extraction, feature maps,
discriminability vs transferability, and plotly figures -- all reading and writing plain
data (record dicts in the schema of :mod:`workbench.engine.metrics`, numpy arrays).

Modules (each usable alone):
- :mod:`.metrics`   pure functions (accuracy, agreement, KL, CKA, DIST gaps, kNN, separability...)
- :mod:`.gap`       :class:`GapProbe` callback and :func:`gap_records`
- :mod:`.features`  frozen feature extraction from models or checkpoints, :func:`collect_outputs`
- :mod:`.embed`     t-SNE/UMAP/PCA maps with shared init, alignment and quality numbers
- :mod:`.transfer`  :class:`DiscriminabilityProbe`, :class:`TransferabilityProbe`, linear probes
- :mod:`.figures`   plotly builders (imported on first use: ``workbench.probes.figures``)
- :mod:`.cache`     content-addressed atomic ``.npz`` cache
"""
from __future__ import annotations

import importlib

from .embed import aligned_embeddings, embedding_quality, feature_maps  # (embed.embed: see the module)
from .features import FeatureSet, collect_outputs, extract_features, extract_many
from .gap import DEFAULT_GAP_METRICS, GAP_METRICS, GapProbe, gap_records, logit_diff_matrix
from .transfer import (DiscriminabilityProbe, TransferabilityProbe, checkpoint_curve, discriminability_records,
                       linear_probe, target_datasets, target_label)


def __getattr__(name):  # lazy: plotly is only imported when figures are wanted
    if name == "figures":
        return importlib.import_module(".figures", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["GapProbe", "gap_records", "logit_diff_matrix", "GAP_METRICS", "DEFAULT_GAP_METRICS",
           "FeatureSet", "extract_features", "extract_many", "collect_outputs",
           "embedding_quality", "feature_maps", "aligned_embeddings",
           "DiscriminabilityProbe", "TransferabilityProbe", "discriminability_records", "linear_probe",
           "checkpoint_curve", "target_datasets", "target_label", "figures"]
