from django.apps import AppConfig


class SyncConfig(AppConfig):
    name = "sync"
    verbose_name = "Sync"

    def ready(self) -> None:
        from mappings.signals import mappings_changed, stage_merging
        from sync import receivers

        mappings_changed.connect(receivers.on_mappings_changed, dispatch_uid="sync.reapply")
        mappings_changed.connect(
            receivers.on_mappings_changed_requeue, dispatch_uid="sync.outbound.requeue_failed"
        )
        stage_merging.connect(receivers.on_stage_merging, dispatch_uid="sync.stage_merging")
