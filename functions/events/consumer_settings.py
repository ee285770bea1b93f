"""Settings every consumer of the engagement streams shares: how a record's user is found, which stream is the
apps' one, where counts go.

The Firehose normaliser, the rules aggregator and the event-tracker streamer all read `IDENTITY_MODE`,
`APP_STREAM_ARN` and `POWERTOOLS_METRICS_NAMESPACE` through `ConsumerSettings.from_env`, so they agree on what
a user is and on which records are trusted (docs/security.md, "Who may write what").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from functions.events.canonical import IdentityMode
from functions.events.parsing import MAX_NAME_CHARS

DEFAULT_METRICS_NAMESPACE = "EngagementLoop"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerSettings:
    """What every consumer of the stream reads from its environment the same way (parsed once)."""

    identity_mode: IdentityMode = IdentityMode.USER_OR_ENDPOINT
    """How records without a user are attributed. Default `user_or_endpoint`."""
    metrics_namespace: str = DEFAULT_METRICS_NAMESPACE
    """CloudWatch namespace for the RecordsTransformed / RecordsRejected counts. Default `EngagementLoop`."""
    app_stream_arn: str = ""
    """APP_STREAM_ARN: the stream any holder of the app producer policy writes. Default empty: no app stream."""
    app_may_report: frozenset[str] = frozenset()
    """APP_MAY_REPORT: comma-separated push event types (of `_campaign.*`, `_journey.*`) the app stream may carry
    although reserved. Default empty: none."""

    def trusts(self, source_stream_arn: str | None) -> bool:
        """Whether records read from `source_stream_arn` are trusted (`is_trusted_source`)."""
        return is_trusted_source(source_stream_arn, self.app_stream_arn)

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
        app_stream_arn = environ.get("APP_STREAM_ARN", "")
        if app_stream_arn and not app_stream_arn.startswith("arn:"):
            raise ValueError(f"environment variable APP_STREAM_ARN={app_stream_arn!r} is invalid: expected the app "
                             "stream's ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME), or empty for none")
        app_may_report = parse_app_may_report(environ.get("APP_MAY_REPORT", ""), source="environment variable "
                                                                                        "APP_MAY_REPORT")
        return cls(identity_mode=identity_mode, metrics_namespace=namespace, app_stream_arn=app_stream_arn,
                   app_may_report=app_may_report)


MAX_APP_MAY_REPORT = 20


def parse_app_may_report(raw: str | list[str], *, source: str) -> frozenset[str]:
    """The event types of `appMayReport` (a list, or comma-separated text): each an exact `_campaign.*` or
    `_journey.*` type (`APP_MAY_REPORT_FAMILIES`); raises ValueError naming `source`, the value and the fix."""
    from functions.events.normalise import APP_MAY_REPORT_FAMILIES

    names = [n.strip() for n in (raw.split(",") if isinstance(raw, str) else raw) if n.strip()]
    if len(names) > MAX_APP_MAY_REPORT:
        raise ValueError(f"{source}: {len(names)} event types, more than {MAX_APP_MAY_REPORT}")
    for name in names:
        if len(name) > MAX_NAME_CHARS or not name.startswith(APP_MAY_REPORT_FAMILIES) or "*" in name:
            raise ValueError(f"{source}: {name[:60]!r} is not an event type apps may be allowed to report: name "
                             f"exact types of {', '.join(f + '*' for f in APP_MAY_REPORT_FAMILIES)} (e.g. "
                             f"_campaign.opened_notification); _email.*, _sms.*, _custom.recommender and trk_* are "
                             f"never the app's")
    return frozenset(names)


def is_trusted_source(source_stream_arn: str | None, app_stream_arn: str) -> bool:
    """Trust by where a record was read from, never by its content: with an app stream configured, a record
    from it, or from a stream the event does not name, is untrusted; everything else is the trusted stream.

    The consumer's event names its stream: `eventSourceARN` of each Lambda Kinesis record
    (https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html, example event) and `sourceKinesisStreamArn`
    of a Firehose transformation event with a Kinesis source
    (https://docs.aws.amazon.com/lambda/latest/dg/services-kinesisfirehose.html, example event). An enhanced
    fan-out consumer's ARN is the stream's ARN followed by `/consumer/...`.
    """
    if not app_stream_arn:
        return True
    if not source_stream_arn:
        return False  # fail closed: with two streams, a record that names none is not shown to be trusted
    return source_stream_arn != app_stream_arn and not source_stream_arn.startswith(app_stream_arn + "/consumer/")
