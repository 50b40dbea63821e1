"""Distiller search after Auto-KD, on Optuna (``python -m workbench search <spec.yaml>``).

Auto-KD (Li et al., ICCV 2023) searches distillers -- a transformation x a distance x weights --
per teacher-student pair with cheap proxy runs, rewarded by the student's loss and its
representation gap to the teacher. Here the space is the workbench's own parts: the composed
distiller's terms (:mod:`workbench.methods.composed`: taps valid for the pair, transforms,
distances, weights), the named methods and their keys (temperature, DKD's beta, ...), GPD on/off
and its ratio; Optuna's samplers (TPE, random) and pruners (median, successive halving) pick the
trials (no home-made optimiser); every trial is a sweep cell (:mod:`workbench.sweep`: local
processes in parallel, a SLURM array or this process) trained with ``eval_on=val`` on a
validation split carved from the training data, so the test set is never built by a search.

    from workbench import search
    spec = search.check(search.load("bench/search_fashion.yaml"))   # one line per problem, before any trial
    study = search.run(spec)                                          # resumes a killed search
    # preset=search/<name>/best: the winner at the full budget (<runs>/searches/<name>/best.json)

- :mod:`.space`: the spec (keys and ranges), its checks, a trial's config;
- :mod:`.objective`: a trial's score per epoch from its records (weights documented there);
- :mod:`.study`: the Optuna study in the search folder, the trial loop, pruning, resume, the best preset;
- :mod:`.figures`: Optuna's plotly figures of a search (history, importances, parallel coordinates).
"""
from __future__ import annotations

from .objective import epoch_scores, read_records
from .space import Range, Spec, SpecError, check, load, pair_taps, parse, sample, trial_config
from .study import spec_data as space_data, counted, load_study, run, search_dir, summary, write_best

__all__ = ["Range", "Spec", "SpecError", "check", "load", "parse", "pair_taps", "sample", "trial_config", "run",
           "space_data", "counted", "load_study", "search_dir", "summary", "write_best", "epoch_scores", "read_records"]
