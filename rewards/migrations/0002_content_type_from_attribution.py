"""RewardAccrual was attribution's model until issue 14 (same table, see 0001): its content type follows it, so that
its permissions, the groups and users holding those and the admin's log keep pointing at it. A fresh database has
no such row; this then changes nothing."""

from __future__ import annotations

from typing import Any

from django.db import migrations

MOVED = ("rewardaccrual",)


def _relabel(apps: Any, schema_editor: Any, old: str, new: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    types = ContentType.objects.using(schema_editor.connection.alias)
    for model in MOVED:
        if not types.filter(app_label=new, model=model).exists():
            types.filter(app_label=old, model=model).update(app_label=new)


def content_type_follows(apps: Any, schema_editor: Any) -> None:
    _relabel(apps, schema_editor, "attribution", "rewards")


def content_type_goes_back(apps: Any, schema_editor: Any) -> None:
    _relabel(apps, schema_editor, "rewards", "attribution")


class Migration(migrations.Migration):
    dependencies = [
        ("rewards", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(content_type_follows, content_type_goes_back),
    ]
