import pytest

from contracts.errors import ConfigError
from streams.settings import load_settings


def test_env_values_are_typed(monkeypatch):
    monkeypatch.setenv("EDGELOOP_WINDOW_K", "4")
    monkeypatch.setenv("EDGELOOP_WINDOW_KEY", "dst")
    s = load_settings()
    assert s.window_k == 4 and s.window_key == "dst"


@pytest.mark.parametrize("key,value", [("EDGELOOP_WINDOW_K", "eight"), ("EDGELOOP_WINDOW_KEY", "mac"),
                                       ("EDGELOOP_BATCH_MAX", "0"), ("EDGELOOP_AUDIT_SAMPLE", "2"),
                                       ("EDGELOOP_HEARTBEAT_S", "9"), ("EDGELOOP_COMPRESSION", "brotli"),
                                       ("EDGELOOP_SHAPE_RULES", "flood_shape,repeat")])
def test_bad_value_names_key_and_value(monkeypatch, key, value):
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert e.value.key == key and value in str(e.value)


def test_api_key_is_secret(monkeypatch):
    monkeypatch.setenv("EDGELOOP_LLM_API_KEY", "sk-very-secret")
    s = load_settings()
    assert "sk-very-secret" not in repr(s)
    assert s.llm_api_key.get_secret_value() == "sk-very-secret"
    assert s.offline


def test_compression_maps_to_what_kafka_clients_take(monkeypatch):
    assert load_settings().kafka_compression == "zstd"
    monkeypatch.setenv("EDGELOOP_COMPRESSION", "lz4")
    assert load_settings().kafka_compression == "lz4"
    monkeypatch.setenv("EDGELOOP_COMPRESSION", "none")
    assert load_settings().kafka_compression is None


def test_shape_rules_default_to_all_three_and_can_be_left_out(monkeypatch):
    assert load_settings().shape_rules == "flood_shape,repeat_shape,one_service"
    monkeypatch.setenv("EDGELOOP_SHAPE_RULES", " repeat_shape ")
    assert load_settings().shape_rules == "repeat_shape"
    monkeypatch.setenv("EDGELOOP_SHAPE_RULES", "")
    assert load_settings().shape_rules == "none"
