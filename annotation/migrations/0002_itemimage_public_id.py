"""Each image in an item gets an opaque id of its own; layouts already stored move to those ids."""

from django.db import migrations, models

import catalog.models


def forwards(apps, schema_editor):
    ItemImage = apps.get_model("annotation", "ItemImage")
    Lease = apps.get_model("annotation", "Lease")
    Judgment = apps.get_model("annotation", "Judgment")
    shown: dict[int, dict[str, str]] = {}  # item id -> catalog id -> the item's id for it
    for row in ItemImage.objects.select_related("image").iterator():
        row.public_id = catalog.models.new_public_id()
        row.save(update_fields=["public_id"])
        shown.setdefault(row.item_id, {})[row.image.public_id] = row.public_id
    for model in (Lease, Judgment):
        for row in model.objects.only("id", "item_id", "layout").iterator():
            ids = shown.get(row.item_id, {})
            row.layout = [ids.get(value, value) for value in row.layout or []]
            row.save(update_fields=["layout"])


class Migration(migrations.Migration):
    dependencies = [("annotation", "0001_initial"), ("catalog", "0001_initial")]

    operations = [
        migrations.AddField(model_name="itemimage", name="public_id", field=models.CharField(max_length=32, null=True)),
        migrations.RunPython(forwards, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="itemimage", name="public_id",
            field=models.CharField(default=catalog.models.new_public_id, editable=False, max_length=32, unique=True),
        ),
        migrations.AlterField(
            model_name="lease", name="layout",
            field=models.JSONField(help_text="The item's image ids in screen order (left, right / grid order)."),
        ),
        migrations.AlterField(
            model_name="judgment", name="layout",
            field=models.JSONField(help_text="The item's image ids in the screen order this annotator saw."),
        ),
    ]
