"""RewardAccrual moves to the rewards app (issue 14, item 2): out of attribution's state only. Its table stays
(``rewards.RewardAccrual`` names it in ``db_table``); ``rewards`` 0001 puts the model into rewards' state."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("attribution", "0003_run_verdict"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="RewardAccrual")],
            database_operations=[],
        ),
    ]
