"""GPD workbench: knowledge-distillation trainers and gap probes, centred on Gap Preserving
Distillation (Guo et al., ICLR 2025).

Layers (bottom to top): ``data``, ``models``, ``losses``, ``gpd`` (model surgery), ``methods``,
``engine``, ``probes``, ``config``/``cli``. Notebooks in ``notebooks/`` are thin front ends.
"""

__version__ = "0.1.0"
