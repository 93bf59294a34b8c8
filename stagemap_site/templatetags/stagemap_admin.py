"""Template filters of stagemap's admin pages."""

from django import template

from stagemap_site.admin_display import relative_time

register = template.Library()


@register.filter
def ago(value, empty: str = "never"):
    """`{{ run.started_at|ago }}`: "12 minutes ago", the exact UTC time on hover."""
    return relative_time(value, empty=empty)
