"""Drop-in speed-ups for model code that transformers runs slower than it needs to.

Each one computes the same function as the module it replaces (checked by the tests to float
tolerance) and applies only where the module has exactly the expected shape, so a change in
transformers leaves the original code in place rather than breaking it.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F


def _fused_qkv_attention(self: Any, hidden_states: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, None]:
    batch, length, width = hidden_states.shape
    qkv = self.qkv(hidden_states).reshape(batch, length, 3, self.num_heads, width // self.num_heads)
    query, key, value = qkv.permute(2, 0, 3, 1, 4)
    context = F.scaled_dot_product_attention(query, key, value, scale=self.scale)
    return self.projection(context.transpose(1, 2).reshape(batch, length, width)), None


def fuse_vision_attention(model: torch.nn.Module) -> int:
    """Run BLIP-style vision attention (one ``qkv`` projection, eager softmax) through
    ``scaled_dot_product_attention``, which never materialises the 577x577 score matrices.

    On a CPU this makes BLIP's 384-pixel vision tower markedly faster at every batch size. Returns
    the number of attention modules changed.
    """
    changed = 0
    for module in model.modules():
        if type(module).__name__ not in ("BlipAttention", "Blip2Attention"):
            continue
        if not all(hasattr(module, name) for name in ("qkv", "projection", "num_heads", "scale")):
            continue
        if module.training:
            continue
        module.forward = types.MethodType(_fused_qkv_attention, module)
        changed += 1
    return changed
