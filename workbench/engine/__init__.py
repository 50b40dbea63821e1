"""The training engine: one ``Trainer`` loop, callbacks, checkpoints, metrics, device/AMP/DDP."""
from .callbacks import Callback, RoleOutputs
from .roles import gap_pairs, register_role, role_label, role_labels
from .checkpoint import CheckpointError, load_checkpoint
from .lock import RunLockedError
from .metrics import MetricsError, MetricsLog, read_metrics
from .preempt import Preempted
from .divergence import NonFiniteLossError
from .trainer import Trainer

__all__ = ["Trainer", "Callback", "RoleOutputs", "gap_pairs", "role_labels", "role_label", "register_role", "CheckpointError", "load_checkpoint",
           "MetricsLog", "MetricsError", "read_metrics", "NonFiniteLossError", "RunLockedError", "Preempted"]
