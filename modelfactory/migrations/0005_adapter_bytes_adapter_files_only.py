"""adapter_bytes of versions stored before: the adapter's own files summed, not everything in the folder.

Those rows counted every file of the stored folder, peft's README.md model card included (which no manifest hashes
and no route serves). Their manifests (v1) do not contain the size, so no hash changes. A version whose folder or a
file of it is missing on this machine keeps its value: nothing here can say what the files weighed.
"""

from pathlib import Path

from django.conf import settings
from django.db import migrations

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def adapter_files_only(apps, schema_editor):
    ModelVersion = apps.get_model("modelfactory", "ModelVersion")
    for pk, adapter_path, stored in ModelVersion.objects.values_list("pk", "adapter_path", "adapter_bytes"):
        paths = [Path(settings.MEDIA_ROOT) / adapter_path / name for name in ADAPTER_FILES]
        if not all(p.is_file() for p in paths):
            continue
        size = sum(p.stat().st_size for p in paths)
        if size != stored:
            # a queryset update: ModelVersion.save refuses to change a stored version, and this is a correction
            ModelVersion.objects.filter(pk=pk).update(adapter_bytes=size)


class Migration(migrations.Migration):
    dependencies = [
        ("modelfactory", "0004_job_kind_and_merge"),
    ]

    operations = [
        migrations.RunPython(adapter_files_only, migrations.RunPython.noop),
    ]
