"""Admin for stages, field mappings and their picklist values (one module each)."""

from mappings.admin.field_mappings import MSG_VALUES_SAVED, FieldMappingAdmin
from mappings.admin.stages import StageAdmin
from mappings.admin.transfer import MSG_IMPORTED, MSG_UPLOAD_GONE
from mappings.admin.values import PicklistRefreshAdmin, PicklistValueAdmin

__all__ = [
    "MSG_IMPORTED",
    "MSG_UPLOAD_GONE",
    "MSG_VALUES_SAVED",
    "FieldMappingAdmin",
    "PicklistRefreshAdmin",
    "PicklistValueAdmin",
    "StageAdmin",
]
