from __future__ import annotations

from typing import Any

from django.db import migrations, models

from accounts.usernames import SKELETON_MAX_LENGTH, username_skeleton


def fill_skeletons(apps: Any, schema_editor: Any) -> None:
    """Give every existing account its skeleton, oldest first; an account whose name looks like an older one's (or
    whose skeleton is too long to index) keeps none, and is listed for an administrator to rename."""
    User = apps.get_model("accounts", "User")
    taken: set[str] = set()
    for user in User.objects.order_by("date_joined", "pk").only("pk", "username").iterator():
        skeleton = username_skeleton(user.username)
        if skeleton in taken or len(skeleton) > SKELETON_MAX_LENGTH:
            print(f"\n  user #{user.pk} {user.username!r} looks like another account: left without a skeleton")
            continue
        taken.add(skeleton)
        User.objects.filter(pk=user.pk).update(username_skeleton=skeleton)


class Migration(migrations.Migration):
    # Moved from openledger_web (issue 14): this is that app's migration of the same name, now in accounts; a
    # database that has it applied counts this one as applied, and the tables keep their old names.
    replaces = [("openledger_web", "0003_username_skeleton")]

    dependencies = [
        ("accounts", "0002_accounts_wallets"),
    ]

    operations = [
        migrations.AddField(
            model_name="user",
            name="username_skeleton",
            field=models.CharField(
                editable=False,
                help_text="The username's Unicode TR39 skeleton (usernames.username_skeleton): no two users look "
                "alike. Null only for an account older than the rule whose name collided with another's.",
                max_length=300,
                null=True,
                unique=True,
            ),
        ),
        migrations.RunPython(fill_skeletons, migrations.RunPython.noop),
    ]
