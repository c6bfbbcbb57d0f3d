"""Issue 14 moved this app's account models, and the migrations 0001-0005 that made them, to ``accounts``
(``replaces`` there). WorkerHeartbeat stays here: its table was made by ``accounts``' 0001 (this app's old 0001),
so here it enters the state only."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="WorkerHeartbeat",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("hostname", models.CharField(max_length=255, unique=True)),
                        ("queues", models.JSONField(default=list)),
                        ("pid", models.IntegerField()),
                        ("started_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("last_seen", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                    ],
                ),
            ],
        ),
    ]
