"""Weight-decay exemptions: norms, biases, ViT tokens and position embeddings go to a no-decay
group, everything else is decayed; every trainable parameter is in exactly one group, and an
AdamW step on zero gradients shrinks exactly the decayed ones."""
import pytest
import torch
from torch import nn

from workbench import models
from workbench.models.params import decay_exempt_names, decay_groups

torch.set_num_threads(1)

WD = 0.05


def _names_by_hand(model):
    """The exempt set written out from the parameter names of the zoo's conventions."""
    norms = {n for n, m in model.named_modules() if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm))}
    tokens = {"cls_token", "dist_token", "pos_embed"}
    return {n for n, _ in model.named_parameters()
            if n.endswith(".bias") or n.rpartition(".")[0] in norms or n in tokens}


@pytest.mark.parametrize("name", ["vit_nano_dist", "vit_nano", "resnet8", "wrn_16_1", "MobileNetV2"])
def test_exempt_set_and_complete_partition(name):
    model = models.build(name, 10)
    exempt = set(decay_exempt_names(model))
    assert exempt == _names_by_hand(model)
    groups = decay_groups(model, WD)
    assert [g["weight_decay"] for g in groups] == [WD, 0.0]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    named = dict(model.named_parameters())
    assert {id(named[n]) for n in exempt} == {id(p) for p in groups[1]["params"]}


def test_vit_tokens_and_weights_by_name():
    exempt = set(decay_exempt_names(models.build("vit_nano_dist", 10, depth=1)))
    assert {"cls_token", "dist_token", "pos_embed", "norm.weight", "blocks.0.norm1.weight", "head.bias"} <= exempt
    for decayed in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight",
                    "head.weight", "head_dist.weight"):
        assert decayed not in exempt


def test_adamw_step_on_zero_gradients_decays_only_the_decayed_group():
    torch.manual_seed(0)
    model = models.build("vit_nano_dist", 10, depth=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    lr = 0.1
    opt = torch.optim.AdamW(decay_groups(model, WD), lr=lr)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # Adam's update is 0 for a zero gradient: only the decoupled decay acts
    exempt = set(decay_exempt_names(model))
    for n, p in model.named_parameters():
        expected = before[n] if n in exempt else before[n] * (1 - lr * WD)
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=0)


def test_frozen_and_shared_parameters():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin, nn.LayerNorm(4))  # lin shared twice
    model[3].weight.requires_grad_(False)
    groups = decay_groups(model, WD)
    assert [len(g["params"]) for g in groups] == [1, 2]  # lin.weight | lin.bias, norm bias
    assert decay_exempt_names(model) == ["0.bias", "3.bias"]


def test_empty_groups_are_dropped_and_bad_decay_rejected():
    norm = nn.LayerNorm(3)
    groups = decay_groups(norm, WD)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0 and len(groups[0]["params"]) == 2
    with pytest.raises(ValueError, match="weight_decay must be >= 0, got -0.1"):
        decay_groups(nn.Linear(2, 2), -0.1)
