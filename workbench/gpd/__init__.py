"""GPD model surgery: Inverse Reparameterization (IR), hard parameter sharing and
Channel-Branch Reparameterization (CBR). Model surgery only -- no losses, no training loops.

>>> dt = expand(student, ratio=2.0)            # T_d: wider, multi-branch, starts as the student
>>> z_d, z_s = dt(x, view="both")              # one call, both views, all parameters used
>>> deployable = extract_student(dt)           # type(deployable) is type(student)

IR (``expand``): every hidden width C becomes C' = round(r C); wide channel j copies student
channel j mod C (full-scale copies); weights reading a replicated channel are divided by its
copy count; BN/LN params and stats copied; depthwise convs keep groups = width; ViT heads are
duplicated whole (head_dim fixed), cls token / position embedding copied. Every kxk stride-1
'same' conv becomes a ``MultiBranchConv2d`` (original + extra branches folded into one kernel).
N(0, noise^2) goes on the replicated entries only. The widening is checked module by module on
an example batch; anything that cannot be widened exactly raises ``UnsupportedLayerError``.

CBR (student view, ``extract_student``): fold the branches, keep the first C channels of every
dim (of every segment for ``qkv``) and multiply the read dims by the copy count.

Guarantees (float32; "equal" = max abs diff <= 1e-5 x max |logit|, measured in the tests):
- student view vs the student it came from: equal in eval AND train mode, for any noise, any
  ratio, any branch set and scale init (CBR undoes IR exactly up to rounding).
- ``extract_student(dt)`` vs the student view: equal in eval mode at any time (same weights,
  same BN stats); in train mode both use batch statistics and agree on the output too, but each
  updates its own running stats.
- T_d vs student, ``noise=0`` and ``scale_init="one_zero"``: equal in eval mode for every ratio
  (uneven copy counts included; LayerNorm statistics are replica-aware when counts are uneven)
  and in train mode too for a batch (BN batch statistics of copies are copies), as long as the
  model has no active dropout. With ``noise > 0`` T_d differs from the student by O(noise);
  ``scale_init="reference"`` does not preserve the function at all (by design).
- BatchNorm: the student view keeps its OWN running statistics (``student_template`` buffers),
  T_d keeps its own; a forward of one view never touches the other's stats. Affine BN params
  are shared (sliced).
- Sharing is real: an optimizer step on T_d's parameters changes the student view and the
  extracted student; the student loss sends gradient into T_d's parameters.
- ``student_grad="faithful"``: plain autograd through slice x cnt, so a student-loss gradient on
  a slice that reads replicated channels is multiplied by cnt (under SGD those student weights
  move ~cnt^2 as far as a standalone student's; BN/bias slices are unaffected -- the reference
  code's behaviour). ``"compensated"``: same forward, the backward of that multiply uses 1/cnt,
  so the student's weights move as a standalone student's would. Only the student path changes.
"""
from .branches import BRANCH_KINDS, BRANCH_ORDER, DEFAULT_BRANCHES, MultiBranchConv2d
from .expand import DEFAULT_NOISE, expand
from .plan import UnsupportedLayerError
from .teacher import DynamicTeacher, StudentView, extract_student

__all__ = [
    "expand", "extract_student", "DynamicTeacher", "StudentView", "MultiBranchConv2d",
    "UnsupportedLayerError", "DEFAULT_BRANCHES", "DEFAULT_NOISE", "BRANCH_KINDS", "BRANCH_ORDER",
]
