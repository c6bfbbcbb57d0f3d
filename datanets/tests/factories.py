from __future__ import annotations

import json
from typing import Any

import factory
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.models import Wallet
from accounts.tests.factories import UserFactory
from datanets import services
from datanets.models import Contribution, Datanet


class DatanetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Datanet
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Datanet {n}")
    slug = factory.Sequence(lambda n: f"datanet-{n}")
    summary = "Short answers to short questions"
    record_type = "text"
    licence = "CC-BY-4.0"
    owner = factory.SubFactory(UserFactory)


def jsonl(*records: dict[str, Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def texts(*values: str) -> bytes:
    return jsonl(*({"text": v} for v in values))


def upload(content: bytes, name: str = "data.jsonl") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content)


def submit(
    datanet: Datanet, contributor: Any = None, content: bytes | None = None, *, name: str = "data.jsonl", **kwargs: Any
) -> Contribution:
    """A real submit through the service (pending), with sensible defaults."""
    contributor = contributor or UserFactory()
    content = content if content is not None else texts("the first record of several words", "another record here")
    kwargs.setdefault("licence", datanet.licence)
    return services.contribution_submit(
        datanet=datanet, contributor=contributor, upload=upload(content, name), **kwargs
    )


def accepted(datanet: Datanet, contributor: Any = None, content: bytes | None = None, **kwargs: Any) -> Contribution:
    contribution = submit(datanet, contributor, content, **kwargs)
    return services.contribution_accept(curator=datanet.owner, contribution=contribution)


def wallet(user: Any, address: str) -> Wallet:
    return Wallet.objects.create(user=user, address=address, chain_id=31337, message="test", signature="0x" + "00" * 65)
