"""Weight initialisations shared by several zoo families (one copy of each recipe)."""
from __future__ import annotations

import math

from torch import nn

#: RepDistiller's classifier init: N(0, 0.01) (its vgg.py and mobilenetv2.py)
LINEAR_INIT_STD = 0.01


def repdistiller_init(model: nn.Module) -> None:
    """RepDistiller's VGG / MobileNetV2 init: conv ~ N(0, 2/(k*k*c_out)), conv biases 0, BN 1/0,
    linear ~ N(0, 0.01), linear biases 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, LINEAR_INIT_STD)
            nn.init.zeros_(m.bias)
