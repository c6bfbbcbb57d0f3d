from __future__ import annotations

from django.conf import settings
from django.db import models


class BaseModel(models.Model):
    """A base language model on local disk that fine-tunes start from: the bundled default or a registered folder."""

    class Source(models.TextChoices):
        BUNDLED = "bundled", "Bundled with the application"
        REGISTERED = "registered", "Registered by staff"

    name = models.CharField(max_length=200, unique=True)
    path = models.CharField(max_length=1000, help_text="A Hugging Face model folder on the workers' disk.")
    source = models.CharField(max_length=20, choices=Source.choices)
    architecture = models.CharField(max_length=200)
    model_type = models.CharField(max_length=100, blank=True)
    parameters = models.BigIntegerField()
    context_length = models.PositiveIntegerField()
    weights_bytes = models.BigIntegerField(default=0)
    weights_sha256 = models.CharField(max_length=64, blank=True)
    licence = models.CharField(max_length=100, blank=True)
    is_default = models.BooleanField(default=False)
    registered_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=models.Q(is_default=True), name="one_default_base")
        ]

    def __str__(self) -> str:
        return self.name
