"""Optuna's plotly figures of a search: optimisation history, parameter importances (fANOVA,
Optuna's default evaluator) and parallel coordinates, with titled axes."""
from __future__ import annotations

from .study import load_study


def figures(folder) -> dict:
    """``{"history": fig, "importance": fig, "parallel": fig}`` for a search folder (importances
    need at least two complete trials with varying parameters; absent otherwise)."""
    import optuna.visualization as vis

    study = load_study(folder)
    out = {"history": vis.plot_optimization_history(study)}
    out["history"].update_layout(title=f"search {study.study_name}: score per trial (validation split)",
                                 xaxis_title="trial", yaxis_title="score (val top-1 fraction - weighted gap)")
    try:
        out["importance"] = vis.plot_param_importances(study)
        out["importance"].update_layout(title=f"search {study.study_name}: parameter importance (fANOVA)",
                                        xaxis_title="importance for the score (fraction, sums to 1)")
    except (ValueError, RuntimeError):
        pass
    out["parallel"] = vis.plot_parallel_coordinate(study)
    out["parallel"].update_layout(title=f"search {study.study_name}: parameters of each trial, coloured by score")
    return out
