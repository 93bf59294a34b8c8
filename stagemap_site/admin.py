"""django-q2's admin pages, with writes to schedules and tasks kept to superusers."""

from django.contrib import admin
from django_q import admin as q_admin
from django_q.models import Failure, OrmQ, Schedule, Success


@admin.action(permissions=["resubmit"], description=q_admin.resubmit_task.short_description)
def resubmit_tasks(model_admin, request, queryset):
    q_admin.resubmit_task(model_admin, request, queryset)


class SuperuserWritesMixin:
    """A schedule or a queued task names a function the worker runs, so whatever permissions a
    user holds, only a superuser adds, changes or resubmits one; setup_schedules owns the
    stagemap schedules."""

    def has_add_permission(self, request, *args, **kwargs):
        return request.user.is_superuser and super().has_add_permission(request, *args, **kwargs)

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_change_permission(request, obj)

    def has_resubmit_permission(self, request):
        return request.user.is_superuser


class ScheduleAdmin(SuperuserWritesMixin, q_admin.ScheduleAdmin):
    pass


class SuccessAdmin(SuperuserWritesMixin, q_admin.TaskAdmin):
    actions = [resubmit_tasks]


class FailureAdmin(SuperuserWritesMixin, q_admin.FailAdmin):
    actions = [resubmit_tasks]


class QueueAdmin(SuperuserWritesMixin, q_admin.QueueAdmin):
    pass


for model, model_admin in (
    (Schedule, ScheduleAdmin),
    (Success, SuccessAdmin),
    (Failure, FailureAdmin),
    (OrmQ, QueueAdmin),
):
    # django_q registers OrmQ only with the ORM broker.
    if admin.site.is_registered(model):
        admin.site.unregister(model)
        admin.site.register(model, model_admin)
