"""Notebook figures: plotly set-up for JupyterLab and HTML reports, and feature-map panels of
trained models on the run's evaluation set (the test split, or the validation split under ``eval_on=val``)."""
from __future__ import annotations

from typing import Optional, Sequence

from ..config import RunConfig
from ..engine.roles import by_rank, role_label
from .run import eval_set


def init_plotly() -> None:
    """Figures that render in JupyterLab (plotly mimetype) and in the HTML report of
    :mod:`workbench.nb.report` (an HTML fallback using the plotly.js the report inlines once):
    plotly.js is not embedded in each output, so executed notebooks and reports stay small."""
    from .report import use_renderer

    use_renderer()


def class_names(cfg: RunConfig):
    """The run's dataset's label names (legends say "Sneaker", not 7), or None if it has none."""
    from .. import data

    return data.info(cfg.dataset, **cfg.dataset_options()).class_names or None


def feature_map_figure(models: dict, cfg: RunConfig, points: int, method: str = "tsne",
                       roles: Optional[Sequence[str]] = None, title: str = ""):
    """Side-by-side penultimate-feature maps of the given roles on the first ``points`` test
    evaluation examples (shared PCA init, aligned panels); ``None`` if no model of those roles is given."""
    from ..probes import extract_many, feature_maps, figures

    chosen = {role_label(r): models[r] for r in (roles or by_rank()) if r in models}
    if not chosen:
        return None
    sets = extract_many(chosen, eval_set(cfg), max_samples=points, cache_dir=False)
    fig = figures.feature_map_panels(feature_maps(sets, method=method, seed=cfg.seed), class_names=class_names(cfg))
    if title:
        fig.update_layout(title=title)
    return fig


def method_feature_maps(models_by_panel: dict, cfg: RunConfig, points: int, method: str = "tsne"):
    """compare.ipynb: one feature-map panel per method (e.g. each method's student), same test
    examples, shared PCA init, aligned panels."""
    from ..probes import extract_many, feature_maps, figures

    if not models_by_panel:
        return None
    sets = extract_many(dict(models_by_panel), eval_set(cfg), max_samples=points, cache_dir=False)
    cols = min(4, len(sets))
    fig = figures.feature_map_panels(feature_maps(sets, method=method, seed=cfg.seed), class_names=class_names(cfg),
                                     cols=cols)
    fig.update_layout(title="Student feature maps per method")
    return fig
