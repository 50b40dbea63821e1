"""CSKD's spatial helpers: the cumulative fusion schedule (endpoints, monotonicity, midpoints),
fused targets, token -> grid layout, grid pooling, and the CIFAR case where the ViT's 8x8 patch
grid already matches resnet32x4's last map."""
import math

import pytest
import torch

from workbench import models
from workbench.losses_spatial import (FUSION_SCHEDULES, align_grids, dense_weight, fuse_targets, pool_to_grid,
                                      tokens_to_grid)
from workbench.models.dense import dense_logits

torch.set_num_threads(1)

EPOCHS = 240
#: float64 cos(pi/2) is 6.1e-17, not 0 (pi/2 is rounded); anything below this is "zero"
COS_ZERO = 1e-15
#: single float32 roundings of O(1) values (one multiply-add per element)
F32 = dict(rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("schedule", FUSION_SCHEDULES)
def test_schedule_starts_dense_and_ends_global(schedule):
    assert dense_weight(0, EPOCHS, schedule) == 1.0
    assert abs(dense_weight(EPOCHS, EPOCHS, schedule)) < COS_ZERO
    dense, glob = torch.randn(2, 5, 4, 4), torch.randn(2, 5)
    torch.testing.assert_close(fuse_targets(dense, glob, dense_weight(0, EPOCHS, schedule)), dense, rtol=0, atol=0)
    torch.testing.assert_close(fuse_targets(dense, glob, dense_weight(EPOCHS, EPOCHS, schedule)),
                               glob[:, :, None, None].expand_as(dense), **F32)


@pytest.mark.parametrize("schedule", FUSION_SCHEDULES)
def test_schedule_decreases_strictly_inside_the_unit_range(schedule):
    values = [dense_weight(e, EPOCHS, schedule) for e in range(EPOCHS + 1)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert all(0.0 <= v <= 1.0 for v in values)
    fractional = [dense_weight(e / 4, 2, schedule) for e in range(9)]  # per-step progress
    assert all(a > b for a, b in zip(fractional, fractional[1:]))


def test_schedule_midpoints_follow_their_formulas():
    assert dense_weight(120, EPOCHS, "linear") == 0.5
    assert dense_weight(120, EPOCHS, "squared") == 0.25
    assert dense_weight(120, EPOCHS, "cosine") == pytest.approx(math.sqrt(0.5), abs=1e-15)
    # squared and cosine keep more dense weight late / early than linear
    assert dense_weight(60, EPOCHS, "squared") < dense_weight(60, EPOCHS, "linear") < dense_weight(60, EPOCHS, "cosine")


@pytest.mark.parametrize("call, match", [
    (lambda: dense_weight(1, 10, "exp"), "linear, squared, cosine"),
    (lambda: dense_weight(11, 10), r"\[0, epochs=10\]"),
    (lambda: dense_weight(-1, 10), r"\[0, epochs=10\]"),
    (lambda: dense_weight(0, 0), "positive integer"),
    (lambda: fuse_targets(torch.zeros(2, 5, 4, 4), torch.zeros(2, 6), 0.5), r"\(2, 6\)"),
    (lambda: fuse_targets(torch.zeros(2, 5, 4, 4), torch.zeros(2, 5), 1.5), r"\[0, 1\]"),
])
def test_bad_inputs_raise_one_clear_line(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_fused_target_by_hand_and_its_spatial_mean():
    dense, glob, w = torch.randn(2, 3, 2, 2), torch.randn(2, 3), 0.3
    fused = fuse_targets(dense, glob, w)
    n, k, i, j = 1, 2, 0, 1
    assert fused[n, k, i, j].item() == pytest.approx(w * dense[n, k, i, j].item() + (1 - w) * glob[n, k].item(), rel=1e-6)
    torch.testing.assert_close(fused.mean((2, 3)), w * dense.mean((2, 3)) + (1 - w) * glob, **F32)


def test_tokens_to_grid_is_row_major():
    n, h, c = 2, 3, 5
    tokens = torch.randn(n, h * h, c)
    grid = tokens_to_grid(tokens)
    assert grid.shape == (n, c, h, h)
    for r in range(h):
        for col in range(h):
            assert torch.equal(grid[:, :, r, col], tokens[:, r * h + col])
    with pytest.raises(ValueError, match="square grid"):
        tokens_to_grid(torch.randn(1, 66, 4))  # cls + dist + 64 patches: tokens not dropped
    with pytest.raises(ValueError, match=r"\(N, P, C\)"):
        tokens_to_grid(torch.randn(4, 4))


def test_pool_to_grid_averages_blocks_and_keeps_the_mean():
    x = torch.randn(2, 3, 8, 8)
    pooled = pool_to_grid(x, 4)
    by_hand = x.reshape(2, 3, 4, 2, 4, 2).mean((3, 5))
    torch.testing.assert_close(pooled, by_hand, **F32)
    torch.testing.assert_close(pooled.mean((2, 3)), x.mean((2, 3)), **F32)
    assert pool_to_grid(x, (8, 8)) is x
    assert pool_to_grid(x, (3, 3)).shape == (2, 3, 3, 3)  # adaptive windows when not divisible
    with pytest.raises(ValueError, match="finer 16x16"):
        pool_to_grid(x, 16)
    with pytest.raises(ValueError, match="positive int"):
        pool_to_grid(x, (0, 2))


def test_align_grids_pools_whichever_is_finer():
    s, t = torch.randn(2, 5, 8, 8), torch.randn(2, 5, 4, 4)
    a, b = align_grids(s, t)
    assert a.shape == b.shape == (2, 5, 4, 4) and b is t
    a, b = align_grids(t, s)
    assert a is t and b.shape == (2, 5, 4, 4)


def test_cifar_vit_patch_grid_matches_resnet32x4_map():
    """32 px, patch 4: the student's per-patch logits form an 8x8 grid, resnet32x4's last map is
    8x8, so aligning pools nothing."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    student = models.build("vit_nano_dist", 10).eval()
    teacher = models.build("resnet32x4", 10).eval()
    with torch.no_grad():
        s_map = tokens_to_grid(student.patch_logits(student.forward_parts(x)["patches"]))
        _, t_map = dense_logits(teacher, x)
    assert s_map.shape == t_map.shape == (2, 10, 8, 8)
    a, b = align_grids(s_map, t_map)
    assert a is s_map and b is t_map
