"""Request-time composition of LoRA adapters: the math of peft's ``add_weighted_adapter``, replayed on the engine's
cached adapter tensors so that a composite answers exactly as the offline merge with the same weights.

For each layer, the components that adapt it contribute (in the composition's canonical order, the order of their
adapter ids) their raw ``lora_A`` and ``lora_B`` and their LoRA scaling ``s`` (``lora_alpha / r``, or
``/ sqrt(r)`` with rsLoRA); with the weight ``w`` of a component:

- ``linear`` (peft's "linear", equal ranks): A and B are combined *separately*: ``A = sum(sign(ws) sqrt(|ws|) A_i)``
  and ``B = sum(sqrt(|ws|) B_i)``, cross terms and all (it is not the weighted sum of the updates). With unequal
  ranks peft refuses and ``merge_adapters`` falls back to "cat", and so does this: ``A = cat(w s A_i)``,
  ``B = cat(B_i)``, the exact weighted sum of the updates at the summed rank.
- ``ties``: each of the A's (then the B's) is trimmed to its ``density`` largest magnitudes, the sign of each entry is
  elected by the sum of the trimmed tensors, and the weighted entries that agree with it are averaged (peft's
  ``ties`` with majority sign "total").
- ``dare_linear`` / ``dare_ties``: each tensor keeps each entry with probability ``density`` (rescaled by
  ``1 / density``), then as linear / ties. The Bernoulli masks are drawn from a CPU generator seeded with ``seed``,
  in peft's order (layer by layer in the model's module order, the A's then the B's, component by component), so a
  composite is reproducible and equals ``merge_adapters(method="dare_linear", seed=seed)`` with the same order.

The result has rank ``r`` (``cat``: the sum of ranks) and scaling 1, as peft's merged adapter (``lora_alpha = r``).
All of it runs in float32 on the CPU whatever the engine's device, the way the offline merge does; the engine moves
the result to its device and dtype. Only ``inference.engine`` calls this module (torch is imported at its top).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from peft.utils.merge_utils import (
    calculate_majority_sign_mask,
    disjoint_merge,
    reshape_weight_task_tensors,
    task_arithmetic,
    ties,
)

METHODS = ("linear", "ties", "dare_linear", "dare_ties")


@dataclass(frozen=True)
class ComponentLayers:
    """One component of a composite: per module its raw (A, B) in float32 on the CPU and its LoRA scaling."""

    weight: float
    layers: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
    scalings: Mapping[str, float]


class CompositionError(ValueError):
    """Components that cannot be combined by the method asked (unequal ranks for TIES or DARE, a bad density)."""


def compose(
    components: Sequence[ComponentLayers],
    *,
    module_order: Sequence[str],
    method: str,
    density: float,
    seed: int,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per module, the composite's (A, B) with scaling 1, by peft's math for ``method`` (see the module docstring).

    ``components`` in the composition's canonical order; ``module_order`` the base model's modules in
    ``named_modules`` order (the order in which peft walks them, which DARE's random draws follow). Raises
    CompositionError for unequal ranks with ties or DARE, or a density outside (0, 1].
    """
    if method not in METHODS:
        raise CompositionError(f"unknown composition method {method!r}; choose {', '.join(METHODS)}")
    if len(components) < 2:
        raise CompositionError("a composition needs at least two components")
    if method != "linear" and not 0 < density <= 1:
        raise CompositionError("density is the share of each update kept: above 0 and at most 1")
    ranks = {a.shape[0] for c in components for a, _ in c.layers.values()}
    combination = method
    if len(ranks) > 1:
        if method != "linear":
            raise CompositionError(f"{method} needs components of equal LoRA rank; these have ranks {sorted(ranks)}")
        combination = "cat"
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    wanted = {m for c in components for m in c.layers}
    result: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for module in module_order:
        if module not in wanted:
            continue
        have = [c for c in components if module in c.layers]
        if combination == "cat":
            result[module] = _cat(have, module)
        else:
            result[module] = _task_arithmetic(have, module, combination, density, generator)
    return result


def _cat(have: Sequence[ComponentLayers], module: str) -> tuple[torch.Tensor, torch.Tensor]:
    # peft's "cat": A scaled by weight and scaling, B as it is, stacked along the rank
    a = torch.cat([c.layers[module][0] * c.weight * c.scalings[module] for c in have], dim=0)
    b = torch.cat([c.layers[module][1] for c in have], dim=1)
    return a.contiguous(), b.contiguous()


def _task_arithmetic(
    have: Sequence[ComponentLayers], module: str, method: str, density: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    weights_a, weights_b = [], []
    for c in have:
        # as peft: the sign goes on A only, so that a negative weight is not cancelled by B's
        with_scaling = c.weight * c.scalings[module]
        sign = 1 if with_scaling >= 0 else -1
        weights_a.append(math.sqrt(abs(with_scaling)) * sign)
        weights_b.append(math.sqrt(abs(with_scaling)))
    parts = []
    for index, weights in ((0, weights_a), (1, weights_b)):
        tensors = [c.layers[module][index] for c in have]
        w = torch.tensor(weights)
        if method == "linear":
            parts.append(task_arithmetic(tensors, w))
        elif method == "ties":
            parts.append(ties(tensors, w, density, "total"))
        else:
            # peft draws DARE's masks from the global generator; a seeded generator of our own gives the same draws
            # without touching the process's random state
            dropped = [_random_keep(t, density, generator) for t in tensors]
            if method == "dare_linear":
                parts.append(task_arithmetic(dropped, w))
            else:
                # peft's dare_ties after its random pruning: elect signs, weigh, disjoint mean
                stacked = torch.stack(dropped, dim=0)
                majority = calculate_majority_sign_mask(stacked, method="total")
                parts.append(disjoint_merge(stacked * reshape_weight_task_tensors(stacked, w), majority))
    return parts[0].contiguous(), parts[1].contiguous()


def _random_keep(tensor: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """peft's ``random_pruning(rescale=True)`` with ``generator``: keep each entry with probability ``density``,
    rescaled by ``1 / density`` (nothing is dropped at density 1, as peft's ``prune``)."""
    if density >= 1:
        return tensor
    mask = torch.bernoulli(torch.full_like(tensor, fill_value=density), generator=generator)
    return tensor * mask / density
