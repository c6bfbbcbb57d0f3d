"""Composites: several published model versions answering as one, their adapters combined at request time.

A request names its components and their weights, and a method: "linear", "ties", "dare_linear" or "dare_ties"
(``inference.composition`` has the math, peft's ``add_weighted_adapter``'s). Two ways to say it, the same thing:

- a composite model id, anywhere a model id goes (``/v1``, the ask page):
  ``mix:mv-3=0.7,mv-5=0.3;method=ties;density=0.5`` (components ``<model id>=<weight>`` separated by commas, then
  optional ``;method=``, ``;density=`` (ties and DARE: the share of each update kept, default 0.5) and ``;seed=``
  (DARE's random draws, default 0));
- ``model: "mix"`` with a ``composition`` body field:
  ``{"components": [{"model": "mv-3", "weight": 0.7}, ...], "method": "ties", "density": 0.5, "seed": 0}``.

``composition_clean`` checks a composition for a user (2 to ``MAX_COMPONENTS`` distinct versions they may ask, of one
base model, weights finite and above 0) and returns the document the run stores (``InferenceRun.composition``):
components in version order, each with its weight, its exact ``share`` of the total weight (what attribution and the
reward split weigh it by), its adapter hash and its lineage manifest hash. Every refusal is a ``RunRejected`` (a 4xx
with a message for people).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from modelfactory.models import BaseModel, ModelVersion

from . import services
from .engine import COMPOSITION_METHODS
from .ids import COMPOSITE_PREFIX
from .selectors import versions_askable_by

COMPOSITE_MODEL = "mix"
MAX_COMPONENTS = 4
MAX_WEIGHT = 100.0
MAX_ID_CHARS = 400
DEFAULT_DENSITY = 0.5
MAX_SEED = (1 << 63) - 1
SPEC_KEYS = ("components", "method", "density", "seed")
_VERSION_ID = re.compile(r"^mv-(\d{1,18})$")
_NUMBER = re.compile(r"^-?(\d{1,9}(\.\d{0,15})?|\.\d{1,15})$")


@dataclass(frozen=True)
class CleanComposition:
    """A checked composition: its base model, its versions with their weights, and the document a run stores."""

    base_model: BaseModel
    versions: tuple[tuple[ModelVersion, float], ...]
    document: dict[str, Any]


def _refuse(message: str, *, code: str = "invalid_composition", param: str = "model") -> services.RunRejected:
    return services.RunRejected(message, param=param, code=code)


def composition_spec(*, model: Any, field: Any = None) -> dict[str, Any] | None:
    """The composition a request asks for, as a spec for ``composition_clean``: from a composite model id
    (``mix:...``), or from the ``composition`` field with ``model`` "mix"; None for a request of one model."""
    if field is not None:
        if model != COMPOSITE_MODEL:
            raise _refuse(f'with a composition field, set model to "{COMPOSITE_MODEL}"', param="composition")
        if not isinstance(field, dict):
            raise _refuse("composition must be an object: {components, method, density, seed}", param="composition")
        return field
    if model == COMPOSITE_MODEL:
        raise _refuse(f'model "{COMPOSITE_MODEL}" needs a composition field (or use a composite id, mix:mv-1=0.5,...)')
    if isinstance(model, str) and model.strip().startswith(COMPOSITE_PREFIX):
        return parse_composite_id(model.strip())
    return None


def parse_composite_id(model: str) -> dict[str, Any]:
    """A composite model id (``mix:mv-3=0.7,mv-5=0.3;method=ties;density=0.5;seed=1``) as a spec; RunRejected for a
    malformed one."""
    if len(model) > MAX_ID_CHARS:
        raise _refuse(f"a composite model id has at most {MAX_ID_CHARS} characters")
    body = model.removeprefix(COMPOSITE_PREFIX)
    parts, *options = body.split(";")
    components = []
    for item in parts.split(","):
        name, sep, weight = item.strip().partition("=")
        if not sep or not name.strip() or not _NUMBER.match(weight.strip()):
            raise _refuse(
                f"malformed composite model id: {item.strip()[:40]!r} is not <model id>=<weight> "
                "(e.g. mix:mv-3=0.7,mv-5=0.3;method=linear)"
            )
        components.append({"model": name.strip(), "weight": float(weight)})
    spec: dict[str, Any] = {"components": components}
    for option in options:
        key, sep, value = option.strip().partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in ("method", "density", "seed") or key in spec:
            raise _refuse(
                f"malformed composite model id: {option.strip()[:40]!r}; options are ;method=, ;density= and ;seed=, "
                "each once"
            )
        if key == "method":
            spec[key] = value
        elif key == "density":
            if not _NUMBER.match(value):
                raise _refuse(f"malformed composite model id: density {value[:20]!r} is not a number")
            spec[key] = float(value)
        else:
            if not value.isdigit() or len(value) > 19:
                raise _refuse(f"malformed composite model id: seed {value[:20]!r} is not a whole number")
            spec[key] = int(value)
    return spec


def _weight(value: Any, index: int) -> float:
    param = f"composition.components[{index}].weight"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refuse(f"the weight of component {index + 1} must be a number", param=param)
    if not math.isfinite(value):
        raise _refuse(f"the weight of component {index + 1} is not a finite number", param=param)
    if not 0 < value <= MAX_WEIGHT:
        raise _refuse(
            f"the weight of component {index + 1} is {value:g}: weights must be above 0 and at most {MAX_WEIGHT:g} "
            "(a composite adds its components; a zero or negative weight is not served)",
            param=param,
        )
    return float(value)


def composition_clean(*, user: Any, spec: Any) -> CleanComposition:
    """Check ``spec`` (see ``composition_spec``) for ``user``: 2 to MAX_COMPONENTS distinct model versions that
    ``user`` may ask (published, or their own), of one base model, weights finite and in (0, MAX_WEIGHT], a known
    method, a density in (0, 1] for ties and DARE only, a seed for DARE only, and each version through governance's
    deployment gate (``services.version_deployment_check``). Raises RunRejected (ModelNotFound, 404, for a version
    unknown to the user, unpublished or private). Pass the result to ``services.run_submit(composition=...)``."""
    if not isinstance(spec, dict):
        raise _refuse("composition must be an object: {components, method, density, seed}", param="composition")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise _refuse(f"unknown composition field {unknown[0]!r}; known: {', '.join(SPEC_KEYS)}", param="composition")
    components = spec.get("components")
    if not isinstance(components, list) or not all(isinstance(c, dict) for c in components):
        raise _refuse("composition.components must be a list of {model, weight}", param="composition.components")
    if not 2 <= len(components) <= MAX_COMPONENTS:
        raise _refuse(
            f"a composite has 2 to {MAX_COMPONENTS} components; this one has {len(components)}",
            param="composition.components",
        )
    ids: list[int] = []
    weights: list[float] = []
    for i, component in enumerate(components):
        if set(component) - {"model", "weight"}:
            raise _refuse(f"component {i + 1} has fields other than model and weight", param="composition.components")
        model = component.get("model")
        match = _VERSION_ID.match(model) if isinstance(model, str) else None
        if match is None:
            raise _refuse(
                f"component {i + 1} must name a model version as mv-<id> (base models and composites are not "
                "components)",
                param=f"composition.components[{i}].model",
            )
        ids.append(int(match[1]))
        weights.append(_weight(component.get("weight"), i))
    if len(set(ids)) != len(ids):
        duplicate = next(v for v in ids if ids.count(v) > 1)
        raise _refuse(f"mv-{duplicate} is named twice: name each component once, with its whole weight")
    found = {v.pk: v for v in versions_askable_by(user=user).filter(pk__in=ids).select_related("base_model", "owner")}
    for version_id in ids:
        if version_id not in found:
            raise services.ModelNotFound(
                f"the model version {version_id} does not exist or is not published (see GET /v1/models)",
                param="model",
            )
    bases = {found[v].base_model_id for v in ids}
    if len(bases) > 1:
        names = ", ".join(f"mv-{v} on {found[v].base_model.name}" for v in ids)
        raise _refuse(f"the components must share one base model; these do not: {names}", code="different_base_models")
    for version_id in ids:  # with governance's deployment gate on, each component must be approved (or the user's)
        services.version_deployment_check(user=user, version=found[version_id])
    method, density, seed = _method_options(spec)
    total = sum((Fraction(repr(w)) for w in weights), Fraction(0))
    ordered = sorted(zip(ids, weights, strict=True))
    document = {
        "method": method,
        "density": density,
        "seed": seed,
        "components": [
            {
                "version": v,
                "weight": w,
                "share": _fraction(Fraction(repr(w)) / total),
                "adapter_sha256": found[v].adapter_sha256,
                "manifest_hash": found[v].manifest_hash,
            }
            for v, w in ordered
        ],
    }
    return CleanComposition(
        base_model=found[ids[0]].base_model,
        versions=tuple((found[v], w) for v, w in ordered),
        document=document,
    )


def _method_options(spec: dict[str, Any]) -> tuple[str, float | None, int | None]:
    method = spec.get("method", "linear")
    if method not in COMPOSITION_METHODS:
        raise _refuse(
            f"unknown composition method {str(method)[:30]!r}; choose {', '.join(COMPOSITION_METHODS)}",
            param="composition.method",
        )
    density = spec.get("density")
    if method == "linear":
        if density is not None:
            raise _refuse("density applies to ties and DARE, not to linear", param="composition.density")
    else:
        density = DEFAULT_DENSITY if density is None else density
        if isinstance(density, bool) or not isinstance(density, int | float) or not math.isfinite(density):
            raise _refuse("density must be a number", param="composition.density")
        if not 0 < density <= 1:
            raise _refuse(f"density is the share of each update kept: above 0 and at most 1, got {density:g}",
                          param="composition.density")  # fmt: skip
        density = float(density)
    seed = spec.get("seed")
    if not method.startswith("dare"):
        if seed is not None:
            raise _refuse("seed applies to DARE (dare_linear, dare_ties) only", param="composition.seed")
    else:
        seed = 0 if seed is None else seed
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise _refuse(f"seed must be an integer between 0 and {MAX_SEED}", param="composition.seed")
    return method, density, seed


def _fraction(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


def component_shares(document: dict[str, Any]) -> list[tuple[int, Fraction]]:
    """Each component's version id and its exact share of the total weight (the shares sum to 1)."""
    return [(int(c["version"]), Fraction(c["share"])) for c in document["components"]]
