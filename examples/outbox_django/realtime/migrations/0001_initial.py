from django.db import migrations, models


# NOTIFY wakes rtcore's consumer at once instead of at its next poll;
# the payload is the partition (consumer option partition_notification_channel).
NOTIFY_TRIGGER = """
CREATE OR REPLACE FUNCTION rtcore_outbox_notify() RETURNS TRIGGER AS $$
BEGIN
    PERFORM pg_notify('rtcore_outbox_changed', NEW.partition::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER rtcore_outbox_notify AFTER INSERT ON rtcore_outbox
    FOR EACH ROW EXECUTE FUNCTION rtcore_outbox_notify();
"""

DROP_TRIGGER = """
DROP TRIGGER IF EXISTS rtcore_outbox_notify ON rtcore_outbox;
DROP FUNCTION IF EXISTS rtcore_outbox_notify();
"""


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="Outbox",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("method", models.TextField()),
                ("payload", models.JSONField()),
                ("partition", models.IntegerField(default=0)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={
                "db_table": "rtcore_outbox",
                "indexes": [
                    models.Index(fields=["partition", "id"], name="rtcore_outbox_partition_id")
                ],
            },
        ),
        migrations.RunSQL(NOTIFY_TRIGGER, DROP_TRIGGER),
    ]
