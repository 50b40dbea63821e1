"""GPD model surgery: Inverse Reparameterization (IR), hard parameter sharing and
Channel-Branch Reparameterization (CBR). Model surgery only -- no losses, no training loops.

>>> dt = expand(student, ratio=2.0)            # T_d: wider, multi-branch, computes student(x) at init
>>> z_d, z_s = dt(x, view="both")              # one call, both views, all parameters used
>>> deployable = extract_student(dt)           # type(deployable) is type(student)

IR (``expand``), in the reference code's order: (1) every kxk stride-1 'same' conv of the
STUDENT becomes a ``MultiBranchConv2d`` (original + extra branches, per-output-channel scales,
a zero-initialised bias) at the student's width; (2) every tensor of that multi-branch student
is widened: C becomes C' = round(r C), wide channel j copies student channel j mod C, and the
copies are divided by their count so the next layer sums them back (see ``plan`` for the two
conventions: ``"reference"`` divides outputs, T_d features = student features / cnt, with hooks
on per-channel modules; ``"full_scale"`` divides inputs, T_d features = copies); (3) the result
is verified module by module on an example batch (anything that cannot be widened exactly
raises ``UnsupportedLayerError`` naming the module); (4) N(0, noise^2) on the replicated
entries. ViT heads are duplicated whole; grouped convs and the ShuffleNets' channel
shuffle/split/concat are followed with layout hooks (integer ratio).

CBR (student view, ``extract_student``): slice every T_d tensor to the student block (internal
channels of the branches included), multiply the divided dims by the copy count, THEN fold the
branches into one kernel -- the reference order: the student never depends on T_d-only
channels.

Guarantees (float32; "equal" = max abs diff <= 1e-5 x max |logit|, measured in the tests):
- T_d vs the student view at ``noise=0``: equal in eval mode for every ratio, branch set, scale
  init and convention (uneven copy counts included; LayerNorm statistics are replica-aware),
  and in train mode for a batch too (BN batch statistics of copies are copies), as long as the
  model has no active dropout. With ``noise > 0`` they differ by O(noise).
- the student view vs the student passed in: equal with ``scale_init="one_zero"`` (the default
  of ``expand``, and the reference's fine-tuning init: the branches start at scale 0), so
  ``expand(student)`` computes the student's function (T_d up to the noise). With
  ``scale_init="reference"`` (the reference's distillation / from-scratch init, which
  ``method=gpd`` passes explicitly for those runs) the student is re-initialised as a
  multi-branch net, so its function changes -- T_d still equals the student view.
- perturbing T_d-only entries (outside the student block) never changes the student view.
- ``extract_student(dt)`` vs the student view: equal in eval mode at any time (same weights,
  same BN stats; a branch bias the plain conv cannot hold is folded into the running mean of
  the BatchNorm that alone reads it); in train mode both use batch statistics and agree on the
  output too, but each updates its own running stats.
- BatchNorm: the student view keeps its OWN running statistics (``student_template`` buffers),
  T_d keeps its own; a forward of one view never touches the other's stats. Affine BN params
  are shared (sliced).
- Sharing is real: an optimizer step on T_d's parameters changes the student view and the
  extracted student; the student loss sends gradient into T_d's parameters.
- ``student_grad="faithful"``: plain autograd through slice x cnt, so under SGD a student
  weight whose slice was divided by cnt moves ``cnt^2`` times as far as a standalone student's
  (reference convention, r = 2: convs and linears x4, BN and the classifier x1 -- the reference
  code's factors; full-scale convention: layers that read replicated channels x4, the first
  conv and BN x1). One step of T_d's own loss moves T_d's first conv, inner convs and classifier
  2.0 / 1.0 / 0.5 times as far in the reference convention as in the full-scale one.
  ``"compensated"``: same forward, the backward of that multiply uses 1/cnt, so the student's
  weights move as a standalone student's would. Only the student path changes.

Reference-exact vs ours: the branch kinds, scales, bias, order of IR (branches first) and CBR
(slice first), the output-side convention and the faithful gradient are the reference code's.
Ours: arbitrary (non-integer) ratios with per-channel copy counts, the full-scale convention,
the compensated gradient, the ViT (the reference has RVT only), grouped convs and ShuffleNets,
the extra branch kinds 1x1/kx1/1xk, and verification of every widening.
"""
from .branches import BRANCH_KINDS, BRANCH_ORDER, DEFAULT_BRANCHES, SCALE_INITS, MultiBranchConv2d, fold_once
from .expand import DEFAULT_NOISE, expand
from .plan import CONVENTIONS, UnsupportedLayerError
from .teacher import DynamicTeacher, StudentView, extract_student

__all__ = [
    "expand", "extract_student", "DynamicTeacher", "StudentView", "MultiBranchConv2d",
    "UnsupportedLayerError", "DEFAULT_BRANCHES", "DEFAULT_NOISE", "BRANCH_KINDS", "BRANCH_ORDER",
    "CONVENTIONS", "SCALE_INITS", "fold_once",
]
