"""Factories for connections (secrets stored encrypted, as the service stores them)."""

import factory

from connections import crypto
from connections.models import Connection


class ConnectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Connection
        django_get_or_create = ("name",)

    class Params:
        secrets = {"consumer_secret": "factory-consumer-secret-0001"}

    name = factory.Sequence(lambda n: f"Org {n}")
    auth_method = Connection.AuthMethod.CLIENT_CREDENTIALS
    login_url = "https://login.salesforce.com"
    consumer_key = factory.Sequence(lambda n: f"3MVG9factorykey{n}")
    secrets_ciphertext = factory.LazyAttribute(lambda o: crypto.encrypt_json(o.secrets))
