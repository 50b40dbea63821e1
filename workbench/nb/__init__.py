"""The notebooks' helpers, one module per job (imported by the notebooks as ``workbench.notebook``):

- :mod:`.params`: each notebook's parameters (defaults derived from ``RunConfig``, explicit
  overrides, notebook-only checks) and reading back what papermill injected;
- :mod:`.setup`: parameter values -> validated run config (auto preset, pre-flight checks);
- :mod:`.run`: training from a notebook, live curves, the saved-student re-check;
- :mod:`.tables`, :mod:`.figures`: display; :mod:`.teaching`: surgery-demo helpers;
- :mod:`.explorer`: the interactive run explorer;
- :mod:`.errors`: one-line errors for Jupyter.
"""
