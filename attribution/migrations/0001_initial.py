import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('datanets', '0001_initial'),
        ('inference', '0001_initial'),
        ('modelfactory', '0003_finetunejob_modelversion_finetunejob_parent_version_and_more'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='RunAttribution',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('status', models.CharField(choices=[('pending', 'Pending'), ('ok', 'Ok'), ('no_index', 'no index'), ('failed', 'Failed')], db_index=True, default='pending', max_length=10)),
                ('error', models.TextField(blank=True)),
                ('policy_version', models.PositiveIntegerField(blank=True, null=True)),
                ('reward_policy_version', models.PositiveIntegerField(blank=True, null=True)),
                ('feature_hash', models.CharField(blank=True, help_text='The index files scored against.', max_length=64)),
                ('span_hash', models.CharField(blank=True, max_length=64)),
                ('signal_shares', models.JSONField(blank=True, default=dict, help_text='{signal: "p/q"}')),
                ('effective_weights', models.JSONField(blank=True, default=dict)),
                ('contributors', models.JSONField(blank=True, default=list, help_text='[[user id, "p/q"], ...] largest first')),
                ('datanets', models.JSONField(blank=True, default=list, help_text='[[datanet id, "p/q"], ...] largest first')),
                ('answer_tokens', models.PositiveIntegerField(default=0)),
                ('longest_span', models.PositiveIntegerField(default=0, help_text='Tokens of the longest verbatim span.')),
                ('explanation', models.TextField(blank=True)),
                ('fee', models.DecimalField(decimal_places=0, default=0, max_digits=78)),
                ('seconds', models.FloatField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'ordering': ['-created_at', '-id'],
            },
        ),
        migrations.CreateModel(
            name='SpanMatch',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('tokens', models.PositiveIntegerField()),
                ('n_records', models.PositiveIntegerField(help_text='How many training records contain this span.')),
                ('answer_start', models.PositiveIntegerField()),
                ('answer_end', models.PositiveIntegerField()),
                ('record_start', models.PositiveIntegerField(blank=True, null=True)),
                ('record_end', models.PositiveIntegerField(blank=True, null=True)),
            ],
            options={
                'ordering': ['run_attribution_id', 'answer_start', 'record_id'],
            },
        ),
        migrations.CreateModel(
            name='AttributionIndex',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('status', models.CharField(choices=[('ok', 'Ok'), ('failed', 'Failed')], max_length=10)),
                ('error', models.TextField(blank=True)),
                ('method', models.CharField(blank=True, help_text='The projection method (count sketch version).', max_length=60)),
                ('seed', models.BigIntegerField(default=0, help_text='Seed of the projection; it is regenerated, never stored.')),
                ('width', models.PositiveIntegerField(default=0, help_text='Width of the projected gradient features.')),
                ('feature_hash', models.CharField(blank=True, help_text='Content hash of the feature matrix.', max_length=64)),
                ('span_hash', models.CharField(blank=True, help_text='Content hash of the span index.', max_length=64)),
                ('path', models.CharField(blank=True, help_text='Relative to MEDIA_ROOT: attribution/ab/cd/<hash>/', max_length=200)),
                ('record_ids', models.JSONField(blank=True, default=list, help_text='Indexed datanets.Record ids, feature order.')),
                ('groups', models.JSONField(blank=True, default=list, help_text='How each group of records was tokenized: record type, formatting, max length, record ids.')),
                ('build_seconds', models.FloatField(blank=True, null=True)),
                ('train_step_seconds', models.FloatField(blank=True, help_text="The job's mean seconds per step.", null=True)),
                ('evaluation', models.JSONField(blank=True, default=dict, help_text='Measured reliability for this version (planted-fact evaluation).')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('version', models.OneToOneField(on_delete=django.db.models.deletion.PROTECT, related_name='attribution_index', to='modelfactory.modelversion')),
            ],
            options={
                'ordering': ['-created_at', '-id'],
            },
        ),
        migrations.CreateModel(
            name='RecordAttribution',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('rank', models.PositiveIntegerField()),
                ('share', models.CharField(help_text='Exact share of the answer, "p/q".', max_length=80)),
                ('share_float', models.FloatField(help_text='The same share as a float, for ordering and charts.')),
                ('by_signal', models.JSONField(default=dict, help_text='{signal: "p/q"}, summing to share.')),
                ('raw_scores', models.JSONField(default=dict, help_text='{signal: raw score} (gradient cosine, span coverage).')),
                ('contribution', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='attributions', to='datanets.contribution')),
                ('record', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='attributions', to='datanets.record')),
            ],
            options={
                'ordering': ['run_attribution_id', 'rank'],
            },
        ),
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
            ],
            options={
                'ordering': ['-created_at', '-id'],
            },
        ),
        migrations.AddField(
            model_name='rewardaccrual',
            name='run',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='accruals', to='inference.inferencerun'),
        ),
        migrations.AddField(
            model_name='rewardaccrual',
            name='user',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='accruals', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='runattribution',
            name='index',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='run_attributions', to='attribution.attributionindex'),
        ),
        migrations.AddField(
            model_name='runattribution',
            name='run',
            field=models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='attribution', to='inference.inferencerun'),
        ),
        migrations.AddField(
            model_name='recordattribution',
            name='run_attribution',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='records', to='attribution.runattribution'),
        ),
        migrations.AddField(
            model_name='spanmatch',
            name='record',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='span_matches', to='datanets.record'),
        ),
        migrations.AddField(
            model_name='spanmatch',
            name='run_attribution',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='spans', to='attribution.runattribution'),
        ),
        migrations.AddConstraint(
            model_name='attributionindex',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('status', 'ok'), _negated=True), models.Q(models.Q(('feature_hash', ''), _negated=True), models.Q(('span_hash', ''), _negated=True), models.Q(('path', ''), _negated=True)), _connector='OR'), name='attribution_index_ok_has_files'),
        ),
        migrations.AddConstraint(
            model_name='attributionindex',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('status', 'failed'), _negated=True), models.Q(('error', ''), _negated=True), _connector='OR'), name='attribution_index_failure_has_error'),
        ),
        migrations.AddIndex(
            model_name='rewardaccrual',
            index=models.Index(fields=['user', 'epoch'], name='attribution_user_id_e3c618_idx'),
        ),
        migrations.AddIndex(
            model_name='rewardaccrual',
            index=models.Index(fields=['recipient_kind', 'epoch'], name='attribution_recipie_8fe9e0_idx'),
        ),
        migrations.AddIndex(
            model_name='rewardaccrual',
            index=models.Index(fields=['contribution'], name='attribution_contrib_5212f9_idx'),
        ),
        migrations.AddConstraint(
            model_name='rewardaccrual',
            constraint=models.CheckConstraint(condition=models.Q(('amount__gte', 0)), name='attribution_accrual_not_negative'),
        ),
        migrations.AddConstraint(
            model_name='rewardaccrual',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('recipient_kind', 'pool'), ('user__isnull', True)), models.Q(('recipient_kind__in', ['contributor', 'builder']), ('user__isnull', False)), _connector='OR'), name='attribution_accrual_recipient'),
        ),
        migrations.AddConstraint(
            model_name='rewardaccrual',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('recipient_kind', 'contributor'), _negated=True), models.Q(('contribution__isnull', False), ('datanet__isnull', False)), _connector='OR'), name='attribution_contributor_accrual_has_contribution'),
        ),
        migrations.AddConstraint(
            model_name='recordattribution',
            constraint=models.UniqueConstraint(fields=('run_attribution', 'record'), name='attribution_record_once'),
        ),
    ]
