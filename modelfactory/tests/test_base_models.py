"""Registering a base model folder: staff only, the folder checked (config, weights, tokenizer), its facts read from
the files; every refusal clear and nothing written. Through the service and through the API."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from rest_framework.test import APIClient

from modelfactory import services
from modelfactory.models import BaseModel
from modelfactory.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _tiny_safetensors(path: Path, shape: tuple[int, int] = (3, 4)) -> None:
    """A valid safetensors file of one float32 tensor, written by hand (the format is a JSON header and bytes)."""
    size = shape[0] * shape[1] * 4
    header = json.dumps({"w": {"dtype": "F32", "shape": list(shape), "data_offsets": [0, size]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(size))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A small Hugging Face-shaped folder: the bundled model's config and tokenizer, tiny weights."""
    target = tmp_path / "tiny-llama"
    target.mkdir()
    bundled = Path(settings.DEFAULT_BASE_MODEL_DIR)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bundled / name, target / name)
    _tiny_safetensors(target / "model.safetensors")
    return target


@pytest.fixture
def staff() -> Any:
    return UserFactory(is_staff=True)


def test_staff_register_a_folder_with_its_facts_read_from_the_files(staff: Any, folder: Path) -> None:
    base = services.base_model_register(user=staff, name=" Tiny Llama ", path=str(folder), licence="Apache-2.0")
    file_hash = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert (base.name, base.path, base.source) == ("Tiny Llama", str(folder.resolve()), "registered")
    assert (base.architecture, base.model_type, base.parameters, base.context_length) == (
        "LlamaForCausalLM",
        "llama",
        12,
        8192,
    )
    assert base.weights_sha256 == hashlib.sha256(file_hash.encode()).hexdigest()
    assert (base.licence, base.registered_by, base.is_default) == ("Apache-2.0", staff, False)


def test_the_bundled_folder_registers_with_the_same_weights_hash_as_the_set_up_command(staff: Any) -> None:
    bundled = Path(settings.DEFAULT_BASE_MODEL_DIR)
    record = json.loads((bundled / "openledger.json").read_text())
    base = services.base_model_register(user=staff, name="Copy of the default", path=str(bundled))
    assert base.weights_sha256 == record["weights_sha256"] and base.parameters == record["parameters"]


def _without(folder: Path, *names: str) -> Path:
    for name in names:
        (folder / name).unlink()
    return folder


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda f: _without(f, "model.safetensors"), "path", "has no weights (*.safetensors)"),
        (lambda f: _without(f, "config.json"), "path", "has no config.json"),
        (lambda f: _without(f, "tokenizer.json"), "path", "has no tokenizer"),
        (lambda f: f / "nowhere", "path", "does not exist"),
        (lambda f: f / "config.json", "path", "is not a folder"),
        (lambda f: "relative/model", "path", "relative path"),
        (lambda f: "", "path", "absolute path"),
        (lambda f: "/tmp/\x00evil", "path", "absolute path"),
    ],
)
def test_an_unusable_folder_is_refused_with_what_is_missing(
    staff: Any, folder: Path, change: Any, field: str, words: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        services.base_model_register(user=staff, name="Broken", path=str(change(folder)))
    assert words in caught.value.message_dict[field][0]
    assert not BaseModel.objects.exists()


def test_a_config_that_is_not_a_causal_lm_or_not_json_is_refused(staff: Any, folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "max_position_embeddings": 512}))
    with pytest.raises(ValidationError, match="not a causal language model"):
        services.base_model_register(user=staff, name="Bert", path=str(folder))
    (folder / "config.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(ValidationError, match="not valid JSON"):
        services.base_model_register(user=staff, name="Bert", path=str(folder))
    assert not BaseModel.objects.exists()


def test_a_taken_name_and_a_non_staff_user_are_refused(staff: Any, folder: Path) -> None:
    services.base_model_register(user=staff, name="Tiny", path=str(folder))
    with pytest.raises(ValidationError, match="registered already"):
        services.base_model_register(user=staff, name="tiny", path=str(folder))
    with pytest.raises(PermissionDenied, match="only staff"):
        services.base_model_register(user=UserFactory(), name="Other", path=str(folder))
    assert BaseModel.objects.count() == 1


def test_the_api_registers_for_staff_and_refuses_everyone_else(staff: Any, folder: Path, tmp_path: Path) -> None:
    url = reverse("modelfactory-api:base_model_register")
    staff_client, user_client = APIClient(), APIClient()
    staff_client.force_authenticate(staff)
    user_client.force_authenticate(UserFactory())
    empty = tmp_path / "no-weights"
    empty.mkdir()
    shutil.copy(folder / "config.json", empty / "config.json")
    shutil.copy(folder / "tokenizer.json", empty / "tokenizer.json")

    anonymous = APIClient().post(url, {"name": "Tiny", "path": str(folder)}, format="json")
    forbidden = user_client.post(url, {"name": "Tiny", "path": str(folder)}, format="json")
    no_weights = staff_client.post(url, {"name": "Tiny", "path": str(empty)}, format="json")
    no_path = staff_client.post(url, {"name": "Tiny"}, format="json")
    created = staff_client.post(url, {"name": "Tiny", "path": str(folder), "licence": "MIT"}, format="json")
    again = staff_client.post(url, {"name": "Tiny", "path": str(folder)}, format="json")

    assert anonymous.status_code == 401
    assert forbidden.status_code == 403 and "only staff" in forbidden.json()["detail"]
    assert no_weights.status_code == 400
    assert no_weights.json()["fields"]["path"] == [f"{empty} has no weights (*.safetensors)"]
    assert no_path.status_code == 400 and "path" in no_path.json()["fields"]
    assert created.status_code == 201 and created.json()["parameters"] == 12 and created.json()["licence"] == "MIT"
    assert again.status_code == 400 and "registered already" in again.json()["detail"]
    assert BaseModel.objects.count() == 1
