"""Helpers that keep the notebooks' cells short: parameter checking, running, figures, tables.
The code lives in :mod:`workbench.nb`, one module per job; this module is the one name the
notebooks import (``import workbench.notebook as nb``).

Guarantees:
- :func:`setup` validates every notebook parameter before any expensive work. Problems raise
  :class:`ParameterError` (a ``ValueError``) whose message names the parameter, the bad value
  and what is allowed; in Jupyter/papermill it renders as that one line instead of a deep
  traceback (IPython's ``_render_traceback_`` protocol).
- Config keys are converted and checked by :class:`workbench.config.RunConfig` (one place);
  their notebook defaults are RunConfig's unless a notebook states an override
  (:data:`OVERRIDES`); notebook-only parameters (``nproc``, ``embed_method``, ``embed_points``,
  ``methods``, ``seeds``, ``live``) are checked with the package's wording.
- ``preset="auto"`` on ``dataset="digits"``: every parameter still at its notebook default takes
  the measured CPU demo value (:mod:`workbench.presets`, ``digits/demo/...``); parameters the
  caller changed always win. Other presets are applied the same way.
- A name passed with ``papermill -p`` or typed in the parameters cell in JupyterLab that is not
  a parameter of the notebook (``epoch = 5``) stops the validation cell with one line and a
  did-you-mean (:func:`params_from` reads the names the parameters cell, papermill's injected
  cell and any ``name = value``-only cell just above assigned from the kernel's input history).
- Failures while training (a run folder in use, a refused resume, divergence, Ctrl-C) are
  shown as one line too (:class:`RunError`).
"""
from .engine.roles import role_label, role_labels  # noqa: F401
from .nb.errors import OneLine, ParameterError, RunError  # noqa: F401
from .nb.explorer import TOP1, Explorer, find_runs, run_config, run_labels, run_state, runs_table, training  # noqa: F401
from .nb.figures import feature_map_figure, init_plotly, method_feature_maps  # noqa: F401
from .nb.params import (  # noqa: F401
    ALL_RUN_KEYS, AUTO, COMPARE_METHODS, EMBED_METHODS, INJECTED_HEADER, MIN_EMBED_POINTS, NOTEBOOK_CHECKS,
    NOTEBOOK_ONLY, OVERRIDES, PARAMETERS, config_default, defaults, every_other_run_key, injected_names,
    papermill_help, parameters_cell_names, params_from,
)
from .nb.progress import LiveGapFigure, NotebookProgress  # noqa: F401
from .nb.run import (CaptureModels, LiveCurves, check_student, eval_set, in_kernel, live_figure,  # noqa: F401
                     show_traceback, test_set, train)
from .nb.setup import (  # noqa: F401
    DEMO_EXTRAS, DEMO_PRESETS, DIGITS_BASE_PRESET, DIGITS_EXTRAS, METHOD_KEYS, Setup, apply_preset, preset_name, setup,
    setup_many,
)
from .nb.sweep import (  # noqa: F401
    NotebookSweepMonitor, first_students, plan_compare, results_table, run_sweep, sweep_records,
)
from .nb.search import search_figures, search_folders, search_root  # noqa: F401
from .nb.study import mean_curves, study_disc_transfer, study_root, study_runs  # noqa: F401
from .nb.summary import Headline, gap_sentence, gap_summary, gap_takeaway, headline, outcome  # noqa: F401
from .nb.tables import Table, Tables, accuracy_table, compare_table, final_table, gap_table  # noqa: F401
from .nb.teaching import EQUAL_LOGITS, max_logit_diff, param_count, surgery_table  # noqa: F401
