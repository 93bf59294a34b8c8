from django.db import migrations

# The records waiting for a mapping, which every inbound run counts at its end (a scan of the
# object's records: ~0.1 s per 100,000 on SQLite) and the health and funnel pages list: only
# the rows without a stage. SQLite only: on PostgreSQL an index that names the stage column
# stops a re-apply's updates from being heap-only (re-apply of 81,698 records 0.46 s ->
# 1.23 s, see sync/migrations/0003), to save the count 6-10 ms per 10,000 records. Not in the
# model's Meta, which cannot say "one database only"; Django leaves an index it does not know
# alone.
CREATE = (
    'CREATE INDEX IF NOT EXISTS "syncedrecord_unmapped_idx" ON "sync_syncedrecord" '
    '("connection_id", "object_name", "raw_value") WHERE "stage_id" IS NULL AND NOT "is_deleted"'
)
DROP = 'DROP INDEX IF EXISTS "syncedrecord_unmapped_idx"'


def unmapped_index_create(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(CREATE)


def unmapped_index_drop(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):

    dependencies = [
        ("sync", "0008_connection_alert"),
    ]

    operations = [
        migrations.RunPython(unmapped_index_create, unmapped_index_drop),
    ]
