"""Factories for connections, stages, field mappings and picklist values."""

import factory
from django.utils import timezone

from mappings.models import FieldMapping, PicklistValue, Stage
from tests.connections.factories import ConnectionFactory as BaseConnectionFactory


class ConnectionFactory(BaseConnectionFactory):
    name = factory.Sequence(lambda n: f"Mapping org {n}")


class StageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Stage
        django_get_or_create = ("key",)

    key = factory.Sequence(lambda n: f"stage_{n}")
    name = factory.LazyAttribute(lambda o: o.key.replace("_", " ").title())
    order = factory.Sequence(lambda n: 100 + n)


class FieldMappingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FieldMapping
        django_get_or_create = ("connection", "object_name", "field_name")

    connection = factory.SubFactory(ConnectionFactory)
    object_name = "Lead"
    field_name = "Status"
    direction = FieldMapping.Direction.BOTH


class PicklistValueFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PicklistValue
        django_get_or_create = ("field_mapping", "value")

    field_mapping = factory.SubFactory(FieldMappingFactory)
    value = factory.Sequence(lambda n: f"Value {n}")
    label = factory.LazyAttribute(lambda o: o.value)
    sort_order = factory.Sequence(lambda n: n)
    first_seen_at = factory.LazyFunction(timezone.now)
    last_seen_at = factory.LazyFunction(timezone.now)


def stage(key: str) -> Stage:
    return Stage.objects.get(key=key)
