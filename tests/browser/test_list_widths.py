"""Every stagemap changelist fits a 1,280-pixel-wide window, measured in Chromium."""

import pytest
from django.apps import apps
from django.urls import reverse

from tests.test_admin_lists import BUILDERS, REGISTERED

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

WIDTH = 1280

OVERFLOW = """() => {
    const table = document.querySelector("#result_list");
    return {
        page: document.documentElement.scrollWidth,
        table: table ? Math.ceil(table.getBoundingClientRect().right) : 0,
        rows: document.querySelectorAll("#result_list tbody tr").length,
    };
}"""


def test_every_changelist_fits_a_1280_pixel_window(page, sign_in, django_user_model):
    sign_in(django_user_model.objects.create_superuser("wide", "w@example.com", "pw-123456"))
    page.set_viewport_size({"width": WIDTH, "height": 800})
    too_wide = {}
    for label in REGISTERED:
        BUILDERS[label](12, "A rather long name for a wide column")
        model = apps.get_model(label)
        page.goto(reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"))
        measured = page.evaluate(OVERFLOW)
        assert measured["rows"] >= 12, label
        if max(measured["page"], measured["table"]) > WIDTH:
            too_wide[label] = measured
    assert too_wide == {}
