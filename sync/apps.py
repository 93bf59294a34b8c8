from django.apps import AppConfig


class SyncConfig(AppConfig):
    name = "sync"
    verbose_name = "Sync"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from mappings.models import PicklistRefresh
        from mappings.signals import mappings_changed, stage_merging
        from sync import receivers

        mappings_changed.connect(receivers.on_mappings_changed, dispatch_uid="sync.reapply")
        mappings_changed.connect(
            receivers.on_mappings_changed_requeue, dispatch_uid="sync.outbound.requeue_failed"
        )
        stage_merging.connect(receivers.on_stage_merging, dispatch_uid="sync.stage_merging")
        post_save.connect(
            receivers.on_picklist_refresh_saved,
            sender=PicklistRefresh,
            dispatch_uid="sync.picklist_refresh_run",
        )
