from __future__ import annotations

from typing import Any

from django.db import transaction

from .models import BaseModel


@transaction.atomic
def base_model_register_default(*, record: dict[str, Any]) -> BaseModel:
    """Record the prepared bundled model as the default base model (idempotent)."""
    BaseModel.objects.filter(is_default=True).exclude(name=record["name"]).update(is_default=False)
    base, _ = BaseModel.objects.update_or_create(
        name=record["name"],
        defaults={
            "path": record["path"],
            "source": BaseModel.Source.BUNDLED,
            "architecture": record["architecture"],
            "model_type": record["model_type"],
            "parameters": record["parameters"],
            "context_length": record["context_length"],
            "weights_bytes": record["weights_bytes"],
            "weights_sha256": record["weights_sha256"],
            "licence": record["licence"],
            "is_default": True,
        },
    )
    return base
