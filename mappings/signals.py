"""Events mappings announces for the layers above it (sync) without importing them."""

from django.dispatch import Signal

# Sent after commit when values of these field mappings changed stage (mapping set, CSV import,
# auto-map, merge). kwargs: field_mapping_ids: list[int], acting_user.
mappings_changed = Signal()

# Sent inside the merge transaction, before the source stage is deactivated, so receivers move
# their own rows atomically with it. kwargs: source: Stage, target: Stage, acting_user.
stage_merging = Signal()
