"""RewardAccrual moves here from attribution (issue 14, item 2) by Django's state only: its table
(``attribution_rewardaccrual``), constraints and indexes stay as attribution's migrations made them, rows and all.
``attribution`` 0004 takes the model out of attribution's state (touching nothing in the database) and this puts it
into rewards' (touching nothing either), after it, so the state never holds it twice. A fresh database gets the
table from attribution's 0001-0002, which run first (the dependency below).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('attribution', '0004_reward_accrual_to_rewards'),
        ('datanets', '0005_receipts'),
        ('inference', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='RewardAccrual',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('recipient_kind', models.CharField(choices=[('contributor', 'Contributor'), ('builder', 'Builder'), ('pool', 'Pool')], max_length=12)),
                        ('amount', models.DecimalField(decimal_places=0, help_text='Smallest token units.', max_digits=78)),
                        ('share', models.CharField(help_text='Exact fraction of the fee this part was entitled to before rounding, "p/q".', max_length=80)),
                        ('policy_version', models.PositiveIntegerField(help_text='The reward policy that split the fee.')),
                        ('epoch', models.PositiveIntegerField(blank=True, db_index=True, null=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                        ('contribution', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='accruals', to='datanets.contribution')),
                        ('datanet', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='accruals', to='datanets.datanet')),
                        ('run', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='accruals', to='inference.inferencerun')),
                        ('user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='accruals', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'attribution_rewardaccrual',
                        'ordering': ['-created_at', '-id'],
                        'indexes': [models.Index(fields=['user', 'epoch'], name='attribution_user_id_e3c618_idx'), models.Index(fields=['recipient_kind', 'epoch'], name='attribution_recipie_8fe9e0_idx'), models.Index(fields=['contribution'], name='attribution_contrib_5212f9_idx')],
                        'constraints': [models.CheckConstraint(condition=models.Q(('amount__gte', 0)), name='attribution_accrual_not_negative'), models.CheckConstraint(condition=models.Q(models.Q(('recipient_kind', 'pool'), ('user__isnull', True)), models.Q(('recipient_kind__in', ['contributor', 'builder']), ('user__isnull', False)), _connector='OR'), name='attribution_accrual_recipient'), models.CheckConstraint(condition=models.Q(models.Q(('recipient_kind', 'contributor'), _negated=True), models.Q(('contribution__isnull', False), ('datanet__isnull', False)), _connector='OR'), name='attribution_contributor_accrual_has_contribution'), models.UniqueConstraint(condition=models.Q(('recipient_kind__in', ['builder', 'pool'])), fields=('run', 'recipient_kind'), name='attribution_accrual_once_per_run_recipient'), models.UniqueConstraint(condition=models.Q(('recipient_kind', 'contributor')), fields=('run', 'contribution'), name='attribution_accrual_once_per_run_contribution')],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
