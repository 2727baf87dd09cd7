"""librdkafka configuration derived from the settings, shared by every Kafka client."""

from __future__ import annotations

from config.settings import Settings


def librdkafka_config(settings: Settings) -> dict[str, str]:
    """Every client's librdkafka properties: the connection, then ``kafka_extra_config``."""
    return {**connection_config(settings), **settings.kafka_extra_config}


def connection_config(settings: Settings) -> dict[str, str]:
    """Connection and security properties for consumers, producers and admin clients.

    TLS and SASL are passed straight through to librdkafka so that every client of the
    worker (the pipeline, the CLI, the admin client) connects the same way.
    """
    config: dict[str, str] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        config["ssl.endpoint.identification.algorithm"] = (
            settings.kafka_ssl_endpoint_identification_algorithm
        )
        optional_paths = {
            "ssl.ca.location": settings.kafka_ssl_ca_location,
            "ssl.certificate.location": settings.kafka_ssl_certificate_location,
            "ssl.key.location": settings.kafka_ssl_key_location,
        }
        config.update({key: str(path) for key, path in optional_paths.items() if path})
        if settings.kafka_ssl_key_password is not None:
            config["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
    if settings.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        if settings.kafka_sasl_mechanism is not None:
            config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        if settings.kafka_sasl_username is not None:
            config["sasl.username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    return config
