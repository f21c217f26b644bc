"""MqttClientSettings: defaults, and errors that name the key and say what is allowed."""

from __future__ import annotations

from typing import Any

import pytest

from edgestream.edge.errors import ConfigError
from edgestream.edge.mqtt.client_settings import MqttClientSettings, check_topic_filter


def load(**kw: Any) -> MqttClientSettings:
    data: dict[str, Any] = {"client_id": "gw-1", "topics": [{"filter": "factory/#"}]}
    data.update(kw)
    return MqttClientSettings.load(data)


def test_defaults_are_a_persistent_qos1_mqtt5_session() -> None:
    s = load()
    assert s.is_v5 and s.topics[0].qos == 1
    assert s.session_expiry_s > 0 and s.max_inflight >= 1
    assert s.tls is None and s.port == 1883


def test_full_settings_load() -> None:
    s = load(host="broker", port=8883, protocol="3.1.1", username="gw", password="pw",
             topics=[{"filter": "$share/gw/factory/+/temperature/#", "qos": 0}],
             tls={"ca_file": "/etc/ca.pem", "cert_file": "c.pem", "key_file": "k.pem"},
             max_inflight=200, backoff_min_s=0.1, backoff_max_s=5)
    assert s.topics[0].filter.startswith("$share/gw/") and s.topics[0].qos == 0
    assert s.tls is not None and s.tls.cert_file == "c.pem" and not s.tls.insecure


@pytest.mark.parametrize(("overrides", "key", "words"), [
    ({"bogus": 1}, "mqtt_client", "unknown field `bogus`"),
    ({"port": "x"}, "mqtt_client.port", "Expected `int`"),
    ({"port": 70000}, "mqtt_client", "port must be 1..65535"),
    ({"topics": []}, "mqtt_client", "at least one topic filter"),
    ({"topics": [{"filter": "a/#/b"}]}, "mqtt_client.topics[0]", "'#' must be a whole level"),
    ({"topics": [{"filter": "a/b+"}]}, "mqtt_client.topics[0]", "'+' must be a whole level"),
    ({"topics": [{"filter": "a", "qos": 2}]}, "mqtt_client.topics[0].qos", "Invalid enum value 2"),
    ({"topics": [{"filter": "$share//a"}]}, "mqtt_client.topics[0]", "$share/<group>/<filter>"),
    ({"protocol": "3.1"}, "mqtt_client.protocol", "Invalid enum value"),
    ({"session_expiry_s": 0}, "mqtt_client", "session that expires at once"),
    ({"max_inflight": 0}, "mqtt_client", "max_inflight must be 1..65535"),
    ({"backoff_min_s": 5, "backoff_max_s": 1}, "mqtt_client", "backoff_min_s <= backoff_max_s"),
    ({"password": "pw"}, "mqtt_client", "password needs a username"),
    ({"tls": {"cert_file": "c.pem"}}, "mqtt_client.tls", "give both or neither"),
    ({"client_id": ""}, "mqtt_client", "client_id must be a non-empty string"),
    ({"keepalive_s": 2}, "mqtt_client", "keepalive_s must be 0"),
])
def test_invalid_settings_name_the_key(overrides: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(**overrides)
    assert info.value.key == key
    assert words in str(info.value)
    assert str(info.value).startswith(key)


@pytest.mark.parametrize("good", ["#", "+", "a/+/c", "a/b/#", "$share/g/a/#", "$SYS/broker/#", "/a//b"])
def test_valid_filters(good: str) -> None:
    check_topic_filter(good)


@pytest.mark.parametrize("bad", ["", "a/#/", "a#", "+a", "$share/g", "$share/g+/a", "a\x00b"])
def test_invalid_filters(bad: str) -> None:
    with pytest.raises(ValueError):
        check_topic_filter(bad)
