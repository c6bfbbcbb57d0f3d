"""The ``model`` ids of the OpenAI-compatible API (``mv-3``, ``base-1``, ``mix:...``), written from a version's or a
run's fields: a module below the models, which name a run's model with them (``InferenceRun.model_name``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelfactory.models import BaseModel, ModelVersion

COMPOSITE_PREFIX = "mix:"


def model_id_of(version: ModelVersion | None, base_model: BaseModel) -> str:
    """The ``model`` id of the OpenAI-compatible API: ``mv-<version id>``, or ``base-<base model id>`` for a base
    model alone."""
    return f"mv-{version.pk}" if version is not None else f"base-{base_model.pk}"


def composite_id(document: dict[str, Any]) -> str:
    """The canonical composite model id of a stored composition (components in version order)."""
    parts = ",".join(f"mv-{c['version']}={c['weight']!r}" for c in document["components"])
    text = f"{COMPOSITE_PREFIX}{parts};method={document['method']}"
    if document.get("density") is not None:
        text += f";density={document['density']!r}"
    if document.get("seed") is not None:
        text += f";seed={document['seed']}"
    return text
