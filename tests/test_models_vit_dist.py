"""The ViT with a distillation token: structure, training-time parts, the averaged prediction
(DeiT: cls + dist; CSKD: cls + dist + pooled dense), probes reading the cls token, and plain ViTs
computing exactly what they did before the refactor."""
import contextlib
import io

import pytest
import torch
from torch import nn

from workbench import models
from workbench.cli import main as cli_main
from workbench.models import vit as vit_mod
from workbench.models.hooks import penultimate

torch.set_num_threads(1)

DIST_NAMES = ("vit_nano_dist", "vit_tiny_dist", "vit_small_dist")
K = 10
# forward's mean vs. the test's own (a + b [+ c]) / n: a few float32 roundings of O(1) logits, so
# the default float32 tolerances (rtol 1.3e-6, atol 1e-5) bound the difference on any vector unit
CLOSE = dict(rtol=1.3e-6, atol=1e-5)


def _nano(**kw):
    torch.manual_seed(0)
    return models.build("vit_nano_dist", K, **kw)


def test_dist_variants_are_registered_and_listed_by_the_cli():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["models"]) == 0
    listed = {line.split()[0]: line.split()[1] for line in out.getvalue().splitlines()}
    for name in DIST_NAMES:
        assert models.family(name) == "vit" and listed[name] == "vit"
        assert isinstance(models.build(name, K, depth=1), vit_mod.DistilledViT)
    assert type(models.build("vit_nano", K)) is vit_mod.ViT


def test_structure_tokens_positions_and_heads():
    m = _nano()
    dim, patches = 64, (32 // 4) ** 2
    assert m.dist_token.shape == (1, 1, dim) and m.cls_token.shape == (1, 1, dim)
    assert m.pos_embed.shape == (1, patches + 2, dim)  # cls + dist + patches
    assert m.head_dist.weight.shape == (K, dim) and m.head.weight.shape == (K, dim)
    assert set(dict(m.named_parameters(recurse=False))) == {"cls_token", "dist_token", "pos_embed"}
    assert not torch.equal(m.dist_token, m.cls_token) and not torch.equal(m.head_dist.weight, m.head.weight)
    plain = models.build("vit_nano", K)
    assert plain.pos_embed.shape == (1, patches + 1, dim) and not hasattr(plain, "head_dist")


def test_forward_parts_are_the_heads_on_tokens_0_1_and_the_normed_patches():
    m = _nano().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        parts = m.forward_parts(x)
        seq = m.encode(x)
    assert set(parts) == {"cls", "dist", "patches"}
    assert seq.shape == (3, 2 + 64, 64) and parts["patches"].shape == (3, 64, 64)
    torch.testing.assert_close(parts["cls"], m.head(seq[:, 0]), rtol=0, atol=0)
    torch.testing.assert_close(parts["dist"], m.head_dist(seq[:, 1]), rtol=0, atol=0)
    torch.testing.assert_close(parts["patches"], seq[:, 2:], rtol=0, atol=0)
    # final-normed: LayerNorm with unit weight / zero bias at init -> zero mean per token
    assert parts["patches"].mean(-1).abs().max() < 1e-5
    assert m.patch_logits(parts["patches"]).shape == (3, 64, K)


def test_forward_averages_the_configured_heads():
    m = _nano()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        p = m.forward_parts(x)
        dense = (p["patches"] @ m.head_dist.weight.T + m.head_dist.bias).mean(1)  # by hand
        assert m.eval_heads == vit_mod.DEIT_EVAL_HEADS  # DeiT's inference is the default
        torch.testing.assert_close(m(x), (p["cls"] + p["dist"]) / 2, **CLOSE)
        m.eval_heads = vit_mod.CSKD_EVAL_HEADS
        torch.testing.assert_close(m(x), (p["cls"] + p["dist"] + dense) / 3, **CLOSE)
        m.eval_heads = ("cls",)
        torch.testing.assert_close(m(x), p["cls"], rtol=0, atol=0)
        built = models.build("vit_nano_dist", K, eval_heads=("dist", "dense"))
        assert built.eval_heads == ("dist", "dense")


def test_forward_is_the_same_in_train_and_eval_mode():
    m = _nano(eval_heads=vit_mod.CSKD_EVAL_HEADS)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = m.train()(x)
        b = m.eval()(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("heads", [(), ("cls", "cls"), ("cls", "patch"), "mean"])
def test_bad_eval_heads_name_the_valid_choices(heads):
    with pytest.raises(ValueError, match="cls, dist, dense"):
        _nano(eval_heads=heads)


def test_unknown_option_lists_eval_heads():
    with pytest.raises(ValueError, match="unknown vit_tiny_dist option.*eval_heads"):
        models.build("vit_tiny_dist", K, heads=3)
    with pytest.raises(ValueError, match="unknown vit_tiny option"):
        models.build("vit_tiny", K, eval_heads=("cls",))


def test_probes_read_the_cls_token_through_head():
    m = _nano(eval_heads=vit_mod.CSKD_EVAL_HEADS).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = penultimate(m, x)
        parts = m.forward_parts(x)
        seq = m.encode(x)
    torch.testing.assert_close(feats, seq[:, 0], rtol=0, atol=0)  # the final-normed cls token
    torch.testing.assert_close(m.head(feats), parts["cls"], rtol=0, atol=0)
    torch.testing.assert_close(logits, m(x), rtol=0, atol=0)  # penultimate's logits: the averaged prediction


def test_plain_vit_forward_is_the_unchanged_composition():
    """The plain ViT's forward is exactly the pre-refactor op sequence (same ops -> same bits)."""
    torch.manual_seed(0)
    m = models.build("vit_nano", K).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        t = m.patch_embed(x)
        h = torch.cat([m.cls_token.expand(2, -1, -1), t], dim=1) + m.pos_embed
        expected = m.head(m.norm(m.blocks(h))[:, 0])
        torch.testing.assert_close(m(x), expected, rtol=0, atol=0)


def test_dist_vit_checks_the_input_grid():
    m = models.build("vit_nano_dist", K, in_channels=1, image_size=8)
    assert m.pos_embed.shape == (1, 16 + 2, 64)
    with pytest.raises(ValueError, match="built for 16"):
        m(torch.randn(1, 1, 16, 16))


def test_dist_vit_state_dict_round_trips_through_load(tmp_path):
    m = _nano()
    path = tmp_path / "w.pth"
    torch.save(m.state_dict(), path)
    loaded = models.load("vit_nano_dist", path, K)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), loaded.state_dict().values()))
    assert isinstance(loaded.head_dist, nn.Linear)
