"""The training engine: one ``Trainer`` loop, callbacks, checkpoints, metrics, device/AMP/DDP."""
from .callbacks import PAIRS, ROLE_LABELS, ROLES, Callback, RoleOutputs, role_label
from .checkpoint import CheckpointError, load_checkpoint
from .lock import RunLockedError
from .metrics import MetricsError, MetricsLog, read_metrics
from .preempt import Preempted
from .trainer import NonFiniteLossError, Trainer

__all__ = ["Trainer", "Callback", "RoleOutputs", "ROLES", "PAIRS", "ROLE_LABELS", "role_label", "CheckpointError", "load_checkpoint",
           "MetricsLog", "MetricsError", "read_metrics", "NonFiniteLossError", "RunLockedError", "Preempted"]
