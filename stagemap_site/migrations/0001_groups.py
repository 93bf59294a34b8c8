from django.db import migrations

GROUP_NAMES = ("stagemap viewers", "stagemap editors", "stagemap admins")


def create_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in GROUP_NAMES:
        Group.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    dependencies = [("auth", "0012_alter_user_first_name_max_length")]

    # Permissions are attached after migrate (stagemap_site.permissions), when they all exist.
    operations = [migrations.RunPython(create_groups, migrations.RunPython.noop)]
