"""The outbox table, as rtcore's postgresql consumer reads it (docs/consumers.md)."""

from django.db import models


class Outbox(models.Model):
    """One server API command, applied by rtcore after the transaction that wrote it commits."""

    id = models.BigAutoField(primary_key=True)
    method = models.TextField()
    payload = models.JSONField()
    partition = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "rtcore_outbox"
        indexes = [models.Index(fields=["partition", "id"], name="rtcore_outbox_partition_id")]
