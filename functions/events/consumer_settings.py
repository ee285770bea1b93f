"""Settings every consumer of the engagement stream shares: how a record's user is found, where counts go.

The Firehose normaliser, the rules aggregator and the event-tracker streamer all read `IDENTITY_MODE` and
`POWERTOOLS_METRICS_NAMESPACE` through `ConsumerSettings.from_env`, so they agree on what a user is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from functions.events.canonical import IdentityMode

DEFAULT_METRICS_NAMESPACE = "EngagementLoop"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerSettings:
    """What every consumer of the stream reads from its environment the same way (parsed once)."""

    identity_mode: IdentityMode = IdentityMode.USER_OR_ENDPOINT
    """How records without a user are attributed. Default `user_or_endpoint`."""
    metrics_namespace: str = DEFAULT_METRICS_NAMESPACE
    """CloudWatch namespace for the RecordsTransformed / RecordsRejected counts. Default `EngagementLoop`."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ConsumerSettings:
        """Read the settings; a bad value raises ValueError naming the variable, the value and the choices."""
        environ = os.environ if environ is None else environ
        raw_mode = environ.get("IDENTITY_MODE") or IdentityMode.USER_OR_ENDPOINT.value
        try:
            identity_mode = IdentityMode(raw_mode)
        except ValueError:
            choices = ", ".join(mode.value for mode in IdentityMode)
            raise ValueError(
                f"environment variable IDENTITY_MODE={raw_mode!r} is invalid: expected one of {choices}"
            ) from None
        namespace = environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_METRICS_NAMESPACE
        return cls(identity_mode=identity_mode, metrics_namespace=namespace)
