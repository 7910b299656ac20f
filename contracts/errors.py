"""The exceptions edgeloop raises, all under one root.

    EdgeloopError
     ├── ConfigError          a setting is missing or malformed (names key and value)
     ├── RecordError          a topic value failed decoding or validation
     │    └── SchemaVersionError   the value's `schema` is not one this code reads
     ├── BrokerError          the broker could not be started or reached
     ├── SourceError          a capture or replay input could not be read
     ├── ModelError           a model bundle is unusable
     │    └── BundleVerificationError  hash or feature schema does not match
     ├── LabError             the traffic lab could not be built or torn down
     ├── EnforceError         a policy could not be enforced (streams/nftables.py, streams/enforce.py:
     │                        AddressError, NftError, PolicyRefused by the guard)
     ├── LLMError             an LLM call gave no usable answer (llm_agents/errors.py:
     │                        rate limit, timeout, unavailable, bad request, bad output, budget)
     └── BlueprintError       no usable blueprint or step code (llm_agents/blueprints/errors.py:
                              DesignError, CodeError)

Errors carry their context (topic, partition, offset, model version) as attributes so a
dead-letter record or a log line can report it without parsing messages.
"""
from __future__ import annotations


class EdgeloopError(Exception):
    """Root of every error edgeloop raises on purpose."""


class ConfigError(EdgeloopError):
    def __init__(self, key: str, value: object, reason: str) -> None:
        self.key, self.value, self.reason = key, value, reason
        super().__init__(f"{key}={value!r}: {reason}")


class RecordError(EdgeloopError):
    """A value that cannot be decoded or validated. `reason` is a short machine code."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail
        self.item: object = None  # the offending record inside a batch, when there was one
        self.index: int | None = None  # its position in the batch
        super().__init__(f"{reason}: {detail}")


class SchemaVersionError(RecordError):
    pass


class BrokerError(EdgeloopError):
    pass


class SourceError(EdgeloopError):
    pass


class ModelError(EdgeloopError):
    pass


class BundleVerificationError(ModelError):
    def __init__(self, version: str, detail: str) -> None:
        self.version, self.detail = version, detail
        super().__init__(f"bundle {version}: {detail}")


class LabError(EdgeloopError):
    pass
