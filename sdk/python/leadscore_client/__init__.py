"""leadscore's Python client: send events from servers over the HTTP API, or straight to Kafka."""

from leadscore_client.client import LeadscoreClient
from leadscore_client.transports import (
    HttpTransport,
    KafkaTransport,
    RejectedError,
    RetryableError,
    Transport,
)

__all__ = [
    "HttpTransport",
    "KafkaTransport",
    "LeadscoreClient",
    "RejectedError",
    "RetryableError",
    "Transport",
]
