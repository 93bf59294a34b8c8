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
    HistoricalStage = apps.get_model("mappings", "HistoricalStage")
    for key, name, order, category in DEFAULT_STAGES:
        # get_or_create on the key alone: an existing stage keeps whatever staff made of it.
        stage, created = Stage.objects.get_or_create(
            key=key, defaults={"name": name, "order": order, "category": category}
        )
        if created:
            # Historical models skip simple-history's signals: write the creation row by hand.
            HistoricalStage.objects.create(
                id=stage.id, key=key, name=name, order=order, category=category,
                active=stage.active, description="", created_at=stage.created_at,
                updated_at=stage.updated_at, history_date=stage.created_at,
                history_type="+", history_change_reason="default funnel",
            )


class Migration(migrations.Migration):
    dependencies = [("mappings", "0001_initial")]

    operations = [migrations.RunPython(seed_stages, migrations.RunPython.noop)]
