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


def _fused_qkv_attention(self: Any, hidden_states: torch.Tensor, attention_mask: Any = None, **kwargs: Any) -> Any:
    batch, length, width = hidden_states.shape
    qkv = self.qkv(hidden_states).reshape(batch, length, 3, self.num_heads, width // self.num_heads)
    query, key, value = qkv.permute(2, 0, 3, 1, 4)
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=self.scale)
    output = getattr(self, self.output_projection)(context.transpose(1, 2).reshape(batch, length, width))
    return output, None


def fuse_vision_attention(model: torch.nn.Module) -> int:
    """Run vision-tower attention as one ``qkv`` product and ``scaled_dot_product_attention``.

    BLIP's towers already have one ``qkv`` projection but an eager softmax that materialises the
    577x577 score matrices; SDPA makes its 384-pixel tower markedly faster on a CPU. CLIP-style
    towers (separate ``q_proj``/``k_proj``/``v_proj``, as in CLIP, SigLIP, MetaCLIP 2) get their three
    projections joined into one, a wider matrix product that runs nearer the CPU's GEMM peak and
    reads the hidden states once. Only modules under ``model.vision_model`` (or ``model`` itself for
    a bare vision tower) change, as text towers pass causal masks. Returns the number changed.
    """
    changed = 0
    tower = getattr(model, "vision_model", model)
    for module in tower.modules():
        if module.training or not all(hasattr(module, name) for name in ("num_heads", "scale")):
            continue
        if type(module).__name__ in ("BlipAttention", "Blip2Attention") and _has_linear(module, "qkv", "projection"):
            module.output_projection = "projection"
        elif getattr(module, "is_causal", False) is False and _plain_attention(module):
            module.qkv = _joined_linear([module.q_proj, module.k_proj, module.v_proj])
            del module.q_proj, module.k_proj, module.v_proj
            module.output_projection = "out_proj"
        else:
            continue
        module.forward = types.MethodType(_fused_qkv_attention, module)
        changed += 1
    return changed


def _plain_attention(module: torch.nn.Module) -> bool:
    """Exactly four square projections and nothing else (no q/k norms, no rotary parts)."""
    names = ("q_proj", "k_proj", "v_proj", "out_proj")
    if {name for name, _ in module.named_children()} != set(names) or not _has_linear(module, *names):
        return False
    width = module.q_proj.in_features
    return all(getattr(module, n).in_features == getattr(module, n).out_features == width for n in names)


def _has_linear(module: torch.nn.Module, *names: str) -> bool:
    return all(type(getattr(module, name, None)) is torch.nn.Linear for name in names)


def _joined_linear(parts: list[torch.nn.Linear]) -> torch.nn.Linear:
    first = parts[0]
    joined = torch.nn.Linear(
        first.in_features,
        sum(p.out_features for p in parts),
        bias=first.bias is not None,
        device=first.weight.device,
        dtype=first.weight.dtype,
    )
    with torch.no_grad():
        joined.weight.copy_(torch.cat([p.weight for p in parts]))
        if first.bias is not None:
            joined.bias.copy_(torch.cat([p.bias for p in parts]))
    return joined.eval()


QUICK_GELU_SCALE = 1.702  # quick_gelu(x) = x * sigmoid(1.702 x) = silu(1.702 x) / 1.702


def fold_quick_gelu(model: torch.nn.Module) -> int:
    """Turn ``fc2(quick_gelu(fc1(x)))`` into ``fc2'(silu(fc1'(x)))`` with 1.702 folded into the weights.

    Quick-GELU (OpenAI CLIP's activation) runs eagerly as three passes over the widest activations
    in the model (a multiply, a sigmoid, a multiply) and takes about a tenth of a ViT-B/32's time
    on a CPU; SiLU is one fused pass, done in place. Scaling float32 weights by 1.702 and its
    inverse changes results by rounding only, so half-precision weights are left alone. Returns the
    number of MLPs changed.
    """
    changed = 0
    for module in model.modules():
        activation = getattr(module, "activation_fn", None)
        if module.training or type(activation).__name__ != "QuickGELUActivation":
            continue
        if not _has_linear(module, "fc1", "fc2") or module.fc1.weight.dtype != torch.float32:
            continue
        with torch.no_grad():
            module.fc1.weight.mul_(QUICK_GELU_SCALE)
            if module.fc1.bias is not None:
                module.fc1.bias.mul_(QUICK_GELU_SCALE)
            module.fc2.weight.div_(QUICK_GELU_SCALE)
        module.activation_fn = torch.nn.SiLU(inplace=True)
        changed += 1
    return changed
