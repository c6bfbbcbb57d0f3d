"""The models of this app lived in openledger_web until issue 14 (same tables, see 0001's ``replaces``): their
content types follow them, so that their permissions, the groups and users holding those and the admin's log keep
pointing at them. A fresh database has no such rows; this then changes nothing."""

from __future__ import annotations

from typing import Any

from django.db import migrations

MOVED = ("user", "walletchallenge", "wallet", "loginfailure", "loginaddress", "apitoken")


def _relabel(apps: Any, schema_editor: Any, old: str, new: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    types = ContentType.objects.using(schema_editor.connection.alias)
    for model in MOVED:
        if not types.filter(app_label=new, model=model).exists():
            types.filter(app_label=old, model=model).update(app_label=new)


def content_types_follow(apps: Any, schema_editor: Any) -> None:
    _relabel(apps, schema_editor, "openledger_web", "accounts")


def content_types_go_back(apps: Any, schema_editor: Any) -> None:
    _relabel(apps, schema_editor, "accounts", "openledger_web")


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_api_tokens_hashed"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(content_types_follow, content_types_go_back),
    ]
