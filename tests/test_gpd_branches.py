"""Channel maps and multi-branch convolutions: hand-computed values and fold == explicit branches."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from workbench.gpd import BRANCH_KINDS, DEFAULT_BRANCHES, MultiBranchConv2d
from workbench.gpd.branches import BRANCH_ORDER, REFERENCE_SCALES, branchable, resolve_branches
from workbench.gpd.channels import ChannelMap, DimRule, slice_plain, undo_scale, widen_tensor, wide_width


# ---------------------------------------------------------------- channel maps

def test_channel_map_by_hand():
    m = ChannelMap(4, 6)
    assert m.source_index().tolist() == [0, 1, 2, 3, 0, 1]
    assert m.student_counts().tolist() == [2, 2, 1, 1]
    assert m.wide_counts().tolist() == [2, 2, 1, 1, 2, 2]
    assert m.student_mask().tolist() == [True] * 4 + [False] * 2
    assert not m.uniform and ChannelMap(4, 8).uniform


def test_segmented_map_by_hand():
    m = ChannelMap(2, 3, segments=3)  # [q0 q1 | k0 k1 | v0 v1] -> [q0 q1 q0 | k0 k1 k0 | v0 v1 v0]
    assert m.source_index().tolist() == [0, 1, 0, 2, 3, 2, 4, 5, 4]
    assert m.student_index().tolist() == [0, 1, 3, 4, 6, 7]
    assert m.wide_counts().tolist() == [2, 1, 2] * 3


def test_wide_width_rounds_half_up_and_never_shrinks():
    assert [wide_width(c, 1.5) for c in (1, 3, 5, 16)] == [2, 5, 8, 24]
    assert wide_width(4, 1.25) == 5 and wide_width(1, 1.25) == 1


def test_widen_then_slice_times_count_is_identity_and_copies_sum_back():
    """Both conventions on one weight, by hand. Tolerance: a float32 sum of 4 products of O(1)
    values, 1e-6 absolute is ~10 ulps."""
    torch.manual_seed(0)
    w = torch.randn(5, 4)
    out_map, in_map = ChannelMap(5, 8), ChannelMap(4, 6)
    x = torch.randn(4)
    x_rep = x[in_map.source_index()]
    # full scale: input dim divided; a replicated input gives the replicated output
    rules = (DimRule(0, out_map), DimRule(1, in_map, divide=True))
    wide = widen_tensor(w, rules)
    assert wide.shape == (8, 6)
    assert torch.allclose(slice_plain(wide, rules) * undo_scale(rules, 2), w, rtol=0, atol=1e-6)
    assert torch.allclose(wide @ x_rep, (w @ x)[out_map.source_index()], atol=1e-6)
    # reference: output dim divided; an input divided by its counts gives the output divided by its counts
    rules = (DimRule(0, out_map, divide=True), DimRule(1, in_map))
    wide = widen_tensor(w, rules)
    assert torch.allclose(slice_plain(wide, rules) * undo_scale(rules, 2), w, rtol=0, atol=1e-6)
    expected = (w @ x)[out_map.source_index()] / out_map.wide_counts()
    assert torch.allclose(wide @ (x_rep / in_map.wide_counts()), expected, atol=1e-6)


# ---------------------------------------------------------------- branches

def _randomise_scales(conv: MultiBranchConv2d) -> None:
    with torch.no_grad():
        conv.origin_scale.normal_()
        for b in conv.branches:
            b.scale.normal_()
            for name, p in b.named_parameters():
                if name == "delta":
                    p.normal_(0, 0.1)


@pytest.mark.parametrize("kind", BRANCH_KINDS)
@pytest.mark.parametrize("groups", ["dense", "depthwise"])
@pytest.mark.parametrize("k", [3, 5])
def test_fold_equals_running_branches_separately(kind, groups, k):
    torch.manual_seed(1)
    c_in, c_out = (6, 10) if groups == "dense" else (6, 6)
    g = 1 if groups == "dense" else c_in
    base = nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=g, bias=True).double()
    conv = MultiBranchConv2d(base, [kind, "kxk"]).double()
    _randomise_scales(conv)
    x = torch.randn(2, c_in, 7, 9, dtype=torch.float64)
    assert torch.allclose(conv(x), conv.explicit_forward(x), rtol=1e-10, atol=1e-10)  # float64 convs of <= 9*c_in terms: ~1e-14


def _kernel(branch, conv):
    tensors = dict(branch.named_parameters()) | dict(branch.named_buffers())
    return branch.kernel(tensors.__getitem__, conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.groups)


def test_branch_kernels_by_hand():
    torch.manual_seed(2)
    base = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    conv = MultiBranchConv2d(base, ["1x1", "1x1_avg", "kx1"])
    one, avg, kx1 = conv.branches
    k1 = _kernel(one, conv)
    assert torch.equal(k1[:, :, 1, 1], one.weight[:, :, 0, 0]) and k1.abs().sum() == one.weight.abs().sum()
    assert torch.allclose(_kernel(avg, conv), avg.weight.expand(-1, -1, 3, 3) / 9)  # float32 division, one rounding: allclose defaults
    k_kx1 = _kernel(kx1, conv)
    assert torch.equal(k_kx1[:, :, :, 1], kx1.weight[:, :, :, 0]) and k_kx1[:, :, :, 0].abs().sum() == 0


def test_avg_branch_counts_zero_padding():
    """count_include_pad: the corner output is (sum of the 4 real inputs) / 9."""
    base = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    conv = MultiBranchConv2d(base, ["1x1_avg"])
    with torch.no_grad():
        conv.origin_scale.zero_()
        conv.branches[0].scale.fill_(1.0)
        conv.branches[0].weight.fill_(1.0)
    x = torch.ones(1, 1, 4, 4)
    assert conv(x)[0, 0, 0, 0].item() == pytest.approx(4 / 9)  # float32 sum of 4 ninths: ~5e-7 relative < approx's 1e-6


def test_one_zero_init_preserves_the_conv_exactly():
    torch.manual_seed(3)
    base = nn.Conv2d(4, 5, 3, padding=1)
    conv = MultiBranchConv2d(base, DEFAULT_BRANCHES, scale_init="one_zero")
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(conv(x), base(x))
    assert torch.equal(conv.folded_weight(), base.weight)


def test_reference_scale_init_matches_the_official_table():
    conv = MultiBranchConv2d(nn.Conv2d(4, 5, 3, padding=1, bias=False), DEFAULT_BRANCHES)  # the default
    assert REFERENCE_SCALES == {"origin": 0.25, "1x1_avg": 0.25, "prior": 0.0, "1x1_kxk": 0.5, "kxk": 0.05, "dws": 0.5}
    assert torch.all(conv.origin_scale == REFERENCE_SCALES["origin"])
    for b in conv.branches:
        assert torch.all(b.scale == REFERENCE_SCALES[b.kind]), b.kind
    assert conv.bias is None  # no bias unless asked for
    x = torch.randn(1, 4, 6, 6)
    assert not torch.allclose(conv(x), F.conv2d(x, conv.weight, None, padding=1))  # not preserving


def test_branch_bias_is_learnable_and_starts_at_zero_or_the_conv_bias():
    conv = MultiBranchConv2d(nn.Conv2d(4, 5, 3, padding=1, bias=False), DEFAULT_BRANCHES, bias=True)
    assert isinstance(conv.bias, nn.Parameter) and conv.bias.requires_grad and torch.equal(conv.bias, torch.zeros(5))
    base = nn.Conv2d(4, 5, 3, padding=1, bias=True)
    assert torch.equal(MultiBranchConv2d(base, DEFAULT_BRANCHES, bias=True).bias, base.bias)


def test_fold_reads_every_tensor_through_the_getter():
    """The same fold serves T_d's tensors and sliced ones: doubling every tensor it reads
    through the getter changes the kernel as the branch formulas say (origin and linear
    branches x4 -- weight x scale --, 1x1-kxk x8 -- (I + delta) x weight x scale --)."""
    torch.manual_seed(4)
    conv = MultiBranchConv2d(nn.Conv2d(3, 4, 3, padding=1, bias=False), ["kxk", "1x1_kxk"]).double()
    tensors = dict(conv.named_parameters()) | dict(conv.named_buffers())
    doubled = conv.fold(lambda n: 2 * tensors[n], 3, 4, 1)
    origin = conv.weight * conv.origin_scale[:, None, None, None]
    kxk, onekxk = (_kernel(b, conv) * b.scale[:, None, None, None] for b in conv.branches)
    assert torch.allclose(doubled, 4 * origin + 4 * kxk + 8 * onekxk, rtol=1e-12, atol=1e-12)  # float64, a few ops


def test_branch_selection():
    assert resolve_branches(0) == ()
    assert resolve_branches(len(DEFAULT_BRANCHES)) == DEFAULT_BRANCHES
    assert resolve_branches(2) == BRANCH_ORDER[:2]
    assert resolve_branches(["1x1", "kxk"]) == ("1x1", "kxk")
    assert set(BRANCH_ORDER) == set(BRANCH_KINDS)
    with pytest.raises(ValueError, match="unknown branch kind '3x3'.*valid choices"):
        resolve_branches(["3x3"])
    with pytest.raises(ValueError, match="branches=99"):
        resolve_branches(99)


def test_which_convs_get_branches():
    assert branchable(nn.Conv2d(4, 4, 3, padding=1))
    assert branchable(nn.Conv2d(4, 4, 3, padding=1, groups=4))
    assert not branchable(nn.Conv2d(4, 4, 3, padding=1, stride=2))
    assert not branchable(nn.Conv2d(4, 4, 1))
    assert not branchable(nn.Conv2d(4, 4, 4, stride=4))
    assert not branchable(nn.Conv2d(4, 4, 3, padding=0))
    assert not branchable(nn.Conv2d(4, 4, 3, padding=1, groups=2))


# ---------------------------------------------------------------- memory of the fold

def _saved_storages(fn):
    """(result, {storage data_ptr: nbytes}) of every tensor autograd saves while ``fn`` runs."""
    saved = {}

    def pack(t):
        s = t.untyped_storage()
        saved[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, saved


def test_fold_keeps_no_intermediate_kernel_for_backward():
    """With gradients on, a multi-branch conv's forward leaves autograd holding only its input
    and the one folded kernel (the conv's own operands); the branches' composite kernels are
    recomputed in backward, not stored (before: one kernel-sized tensor per branch)."""
    torch.manual_seed(3)
    conv = MultiBranchConv2d(nn.Conv2d(8, 8, 3, padding=1, bias=False), DEFAULT_BRANCHES)
    _randomise_scales(conv)
    x = torch.randn(2, 8, 5, 5)
    y, saved = _saved_storages(lambda: conv(x))
    kernel = conv.weight.numel() * conv.weight.element_size()
    assert sorted(saved.values()) == sorted([x.numel() * x.element_size(), kernel])
    y.square().sum().backward()  # and backward still reaches every branch tensor
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in conv.parameters())


def test_recomputed_fold_gives_bitwise_the_gradients_of_a_stored_one(monkeypatch):
    """Recomputing the fold in backward runs the same ops on the same tensors: the gradients of
    every T_d parameter after a GPD-style loss on both views are identical (not merely close)."""
    from workbench import models
    from workbench.gpd import expand

    torch.manual_seed(4)
    dt = expand(models.build("resnet8", 10, 3), ratio=2.0, scale_init="reference")
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))

    def grads():
        dt.zero_grad(set_to_none=True)
        zd, zs = dt(x, view="both")
        (F.cross_entropy(zd, y) + F.cross_entropy(zs, y)).backward()
        return {n: p.grad.clone() for n, p in dt.named_parameters() if p.grad is not None}

    recomputed = grads()
    monkeypatch.setattr(MultiBranchConv2d, "fold", MultiBranchConv2d._fold)  # the stored-intermediates fold
    stored = grads()
    assert recomputed.keys() == stored.keys() and len(stored) > 20
    assert all(torch.equal(recomputed[n], stored[n]) for n in stored)
