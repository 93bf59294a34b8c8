from django.db import migrations

# The default funnel. Kept here, not imported, so this migration never changes meaning.
DEFAULT_STAGES = [
    ("new", "New", 10, "open"),
    ("contacted", "Contacted", 20, "open"),
    ("in_progress", "In Progress", 30, "open"),
    ("converted", "Converted", 40, "converted"),
    ("lost", "Lost", 50, "lost"),
]


def seed_stages(apps, schema_editor):
    Stage = apps.get_model("mappings", "Stage")
    for key, name, order, category in DEFAULT_STAGES:
        # get_or_create on the key alone: an existing stage keeps whatever staff made of it.
        Stage.objects.get_or_create(
            key=key, defaults={"name": name, "order": order, "category": category}
        )


class Migration(migrations.Migration):
    dependencies = [("mappings", "0001_initial")]

    operations = [migrations.RunPython(seed_stages, migrations.RunPython.noop)]
