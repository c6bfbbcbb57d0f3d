"""The record viewer's full-text search, and the decision that restores an excluded record.

Search covers checked records only (``minhash`` is set by the checks task for every record it scans): an upload, and
the move of a large upload's staged rows, write records with ``minhash`` null, so neither pays for the index; the
checks task's update of each record is what adds it. PostgreSQL: a partial GIN index on
``to_tsvector('simple', canonical::jsonb)`` (the jsonb form indexes string values only, unescaped, not the keys).
SQLite: an FTS5 table of the records' string values, kept by triggers on the same condition.
"""

from django.db import migrations, models

POSTGRES_FORWARD = """
CREATE INDEX datanets_record_search ON datanets_record
USING gin (to_tsvector('simple'::regconfig, (canonical)::jsonb)) WHERE minhash IS NOT NULL
"""
POSTGRES_BACKWARD = "DROP INDEX IF EXISTS datanets_record_search"

SQLITE_TEXT = "(SELECT coalesce(group_concat(value, ' '), '') FROM json_tree({row}.canonical) WHERE type = 'text')"
SQLITE_FORWARD = [
    "CREATE VIRTUAL TABLE datanets_record_fts USING fts5(body, tokenize = 'unicode61 remove_diacritics 2')",
    "CREATE TRIGGER datanets_record_fts_checked AFTER UPDATE OF minhash ON datanets_record "
    "WHEN old.minhash IS NULL AND new.minhash IS NOT NULL BEGIN "
    f"INSERT INTO datanets_record_fts(rowid, body) VALUES (new.id, {SQLITE_TEXT.format(row='new')}); END",
    "CREATE TRIGGER datanets_record_fts_inserted AFTER INSERT ON datanets_record "
    "WHEN new.minhash IS NOT NULL BEGIN "
    f"INSERT INTO datanets_record_fts(rowid, body) VALUES (new.id, {SQLITE_TEXT.format(row='new')}); END",
    "CREATE TRIGGER datanets_record_fts_deleted AFTER DELETE ON datanets_record "
    "WHEN old.minhash IS NOT NULL BEGIN DELETE FROM datanets_record_fts WHERE rowid = old.id; END",
    "INSERT INTO datanets_record_fts(rowid, body) "
    f"SELECT r.id, {SQLITE_TEXT.format(row='r')} FROM datanets_record r WHERE r.minhash IS NOT NULL",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS datanets_record_fts_checked",
    "DROP TRIGGER IF EXISTS datanets_record_fts_inserted",
    "DROP TRIGGER IF EXISTS datanets_record_fts_deleted",
    "DROP TABLE IF EXISTS datanets_record_fts",
]


def _run(statements: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def run(apps, schema_editor):  # type: ignore[no-untyped-def]
        for statement in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("datanets", "0005_receipts"),
    ]

    operations = [
        migrations.AlterField(
            model_name="contributiondecision",
            name="action",
            field=models.CharField(
                choices=[
                    ("submit", "Submit"),
                    ("accept", "Accept"),
                    ("reject", "Reject"),
                    ("withdraw", "Withdraw"),
                    ("exclude_record", "exclude a record"),
                    ("restore_record", "restore a record"),
                ],
                max_length=16,
            ),
        ),
        migrations.RunPython(
            _run({"postgresql": [POSTGRES_FORWARD], "sqlite": SQLITE_FORWARD}),
            _run({"postgresql": [POSTGRES_BACKWARD], "sqlite": SQLITE_BACKWARD}),
        ),
    ]
