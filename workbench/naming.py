"""Run folder names: a readable prefix plus a short hash of everything that changes what is
trained, so two different settings never share a folder (and refuse or, worse, mix each other),
while rerunning the same command finds its folder again (resume).

``<dataset>_<teacher arch>-<student>_<method>[+ctkd][+ctc][+dot]_s<seed>-<hash>``, e.g.
``digits_resnet8x4-resnet8_gpd-dkd_s0-1f2e3d4c``. The teacher part is the *resolved*
architecture (a checkpoint file is named by the architecture it holds, not by its file name).
The hash covers the *effective* config (:meth:`workbench.config.RunConfigBase.effective`: keys
left to the method, such as ``grad_clip=None`` or ``amp=auto`` for GPD, count as the values they
resolve to, so the notebook's and the preset's spelling of one recipe name one folder) minus the
runtime keys (:data:`workbench.keys.RUNTIME_KEYS`) and minus every key whose effective value is
that of its default, with ``base`` always present, the data resolved the same way for every
dataset (:func:`workbench.data.identity`: the folder it is read from -- ``data_root=`` /
``$WORKBENCH_DATA`` / default, fashion_mnist's full files where they are found, none for data
that is not read from a folder -- and imagefolder's file-list fingerprint; ``train_data``'s class
folders and file names, :func:`workbench.data.train_data.fingerprint`), the teacher as
:meth:`workbench.references.TeacherRef.identity` records it, and the teacher keys dropped when no
teacher is used. Leaving defaults out means a later version that adds keys (a new method's options) names
the same command's run folder, and its cached teacher, as before, so an upgrade resumes instead
of silently starting over; a default whose value changed is caught by the resume check, which
compares every recorded value (:func:`workbench.engine.resume.config_diff`).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from . import data, references
from .data import train_data
from .keys import RUNTIME_KEYS, ConfigError
from .methods import EXTENSIONS

HASH_CHARS = 8  # 32 bits: collisions need ~65k runs in one out_dir, and resume re-checks the config
TEACHER_KEYS = ("teacher", "teacher_arch", "teacher_epochs")
# A run name is one folder under out_dir: no separators, no leading dot (hidden, '.', '..').
PLAIN_NAME = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]*$")


def check_name(name: str) -> None:
    if not PLAIN_NAME.match(name):
        raise ConfigError(f"name: {name!r} is not a plain folder name; use letters, digits and . _ - + "
                          f"(no '/', no leading '.'): the run is written to out_dir/<name>")


def teacher_arch(cfg) -> str:
    """The static teacher's architecture (what a checkpoint file holds), or ``snapshot<E>``."""
    try:
        return references.teacher_ref(cfg.teacher, cfg.teacher_arch, cfg.student, check=False).name_part()
    except ConfigError:  # unreadable/unknown: prepare() reports it; the name falls back to the file
        return Path(cfg.teacher).stem


def identity(cfg) -> dict:
    """The settings that change what is trained, normalised (what the name's hash covers)."""
    defaults = cfg.effective_defaults()
    d = {k: v for k, v in cfg.effective().items() if k not in RUNTIME_KEYS and not (k in defaults and defaults[k] == v)}
    d["base"] = cfg.resolved_base
    where = data.identity(cfg.dataset, **cfg.dataset_options())
    d["data_root"] = where.folder
    if where.fingerprint:
        d["data_fingerprint"] = where.fingerprint
    if cfg.train_data.strip():  # DM-KD: what the other training set holds, not only its path
        try:
            d["train_data_fingerprint"] = train_data.fingerprint(train_data.parse(cfg.train_data))
        except ValueError:  # malformed: the config check reports it
            pass
    if cfg.loads_teacher:
        try:
            d.update(references.teacher_ref(cfg.teacher, cfg.teacher_arch, cfg.student, check=False).identity())
        except ConfigError:
            d["teacher_arch"] = teacher_arch(cfg)
    else:
        for k in TEACHER_KEYS:
            d.pop(k, None)
    return d


def config_hash(cfg) -> str:
    blob = json.dumps(identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:HASH_CHARS]


def method_part(cfg) -> str:
    """What a run trains, as its name spells it: the method, its resolved base where it has another
    (``gpd-dkd``), and the active extensions (``+ctkd``, ``+ctc``, ``+dot``)."""
    method = cfg.method if cfg.resolved_base in ("none", cfg.method) else f"{cfg.method}-{cfg.resolved_base}"
    on = [name for name in EXTENSIONS if EXTENSIONS.get(name).active(cfg)] + (["dot"] if cfg.dot else [])
    return method + "".join(f"+{name}" for name in on)


def default_name(cfg) -> str:
    pair = f"{teacher_arch(cfg)}-{cfg.student}" if cfg.loads_teacher else cfg.student
    return f"{cfg.dataset}_{pair}_{method_part(cfg)}_s{cfg.seed}-{config_hash(cfg)}"


def earlier_folder(root: Path, cfg) -> Path | None:
    """A folder under ``root`` that holds this run under another name: written before run names
    hashed the effective config (the notebook's and the preset's spellings of one recipe had two
    names then), or by any other spelling of the same settings. Same readable prefix, and its
    recorded ``config.json`` has the same effective identity -- the data's identity as recorded in
    its checkpoint (:func:`recorded_data`), since recomputing it from today's files would match a
    folder trained on data that has changed since. A finished run is preferred, then the first by
    name; None if there is none (the run then starts in its own folder)."""
    cls = type(cfg)
    name = default_name(cfg)
    prefix = name.rsplit("-", 1)[0] + "-"
    if not root.is_dir():
        return None
    me, found = identity(cfg), []
    now = data.identity(cfg.dataset, **cfg.dataset_options())  # the data read today, once for every candidate
    for folder in sorted(root.glob(prefix + "*")):
        if folder.name == name or not (folder / "config.json").is_file():
            continue
        try:
            saved = json.loads((folder / "config.json").read_text())
            keys = set(cls.keys()) - {"preset"}
            other = cls.from_dict({k: v for k, v in saved.items() if k in keys})
        except (OSError, ValueError, ConfigError, TypeError):
            continue  # unreadable or from another version: not this run's
        if identity(other) == me and _same_data(folder, now):
            found.append(folder)
    finished = [f for f in found if (f / "summary.json").exists()]
    return (finished or found or [None])[0]


def recorded_data(folder: Path) -> dict | None:
    """The data identity a run folder's last checkpoint recorded (``provenance["data"]``: source,
    folder, fingerprint), or None when it has none (no checkpoint, unreadable, or written before
    checkpoints recorded it)."""
    import torch

    try:
        ckpt = torch.load(Path(folder) / "last.pt", map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 -- any unreadable checkpoint: nothing recorded
        return None
    return ((ckpt.get("provenance") or {}).get("data") if isinstance(ckpt, dict) else None) or None


def _same_data(folder: Path, now) -> bool:
    """Whether ``folder`` was trained on the data read now (``now``: its :class:`DataIdentity`):
    its recorded source and fingerprint equal today's; a folder that recorded none counts only for
    data without a fingerprint (nothing there could have changed unseen)."""
    was = recorded_data(folder)
    if was is None:
        return not now.fingerprint
    return was.get("source", "") == now.source and was.get("fingerprint", "") == now.fingerprint
