"""Where the running functions get the rules: the published `RuleSet` JSON in S3, re-read at most once a
minute, so a new version is in use within a minute of being published, without a redeploy.

`S3RulesSource` keeps the last good copy: when S3 fails (or holds a document that does not parse) it logs a
warning and carries on with that copy; with no copy at all it raises `RulesUnavailable`, and the caller's
batch is retried. A re-read sends the cached ETag, so an unchanged document costs a 304 and no download.
`StaticRules` serves a fixed set (tests, local replay).

Also here: `Env`, the environment reader the rules functions' `from_env()`s share, so each names every
missing or invalid variable at once.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from functions.rules.model import RuleSet

logger = Logger()

DEFAULT_MAX_AGE_SECONDS = 60


class Env:
    """Reads variables from an environment, collecting problems instead of failing on the first."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.problems: list[str] = []

    def text(self, name: str, default: str | None = None, *, what: str = "") -> str:
        value = (self.environ.get(name) or "").strip() or default
        if value is None:
            self.problems.append(f"{name} is missing" + (f" ({what})" if what else ""))
            return ""
        return value

    def positive_int(self, name: str, default: int) -> int:
        raw = (self.environ.get(name) or "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            self.problems.append(f"{name}={raw!r} is invalid: expected a whole number ≥ 1")
            return default
        return value

    def check(self, function: str) -> None:
        """Raise ValueError listing every problem found so far."""
        if self.problems:
            raise ValueError(f"{function} function environment: " + "; ".join(self.problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class RulesSettings:
    """Where the published rules are."""

    bucket: str
    """RULES_BUCKET, required."""
    key: str
    """RULES_KEY, required: the object holding `RuleSet.to_json()`."""
    max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS
    """RULES_MAX_AGE_SECONDS, default 60: how stale a function's copy may get."""

    @classmethod
    def read(cls, env: Env) -> RulesSettings:
        return cls(bucket=env.text("RULES_BUCKET", what="bucket of the published rules"),
                   key=env.text("RULES_KEY", what="object key of the published rules JSON"),
                   max_age_seconds=env.positive_int("RULES_MAX_AGE_SECONDS", DEFAULT_MAX_AGE_SECONDS))


class RulesUnavailable(Exception):
    """No rules could be read and none were cached."""


class RulesSource(Protocol):
    """The rules in force now."""

    def current(self) -> RuleSet: ...


@dataclass(frozen=True, slots=True)
class StaticRules:
    """A fixed rule set."""

    rules: RuleSet

    def current(self) -> RuleSet:
        return self.rules


class S3RulesSource:
    """The published rules in S3, cached for `max_age_seconds` (clock: seconds, monotonic by default)."""

    def __init__(self, client: Any, settings: RulesSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._client, self._settings, self._clock = client, settings, clock
        self._rules: RuleSet | None = None
        self._etag: str | None = None
        self._checked_at = 0.0

    def current(self) -> RuleSet:
        now = self._clock()
        if self._rules is not None and now - self._checked_at < self._settings.max_age_seconds:
            return self._rules
        try:
            self._fetch()
        except (ClientError, BotoCoreError, ValueError, KeyError, TypeError) as error:
            where = f"s3://{self._settings.bucket}/{self._settings.key}"
            if self._rules is None:
                raise RulesUnavailable(f"cannot read the rules at {where}: {error}") from error
            logger.warning("rules not refreshed; keeping the cached version",
                           extra={"location": where, "version": self._rules.version, "error": str(error)})
        # Also after a failure: try again after another max age, not on every batch.
        self._checked_at = now
        assert self._rules is not None
        return self._rules

    def _fetch(self) -> None:
        request = {"Bucket": self._settings.bucket, "Key": self._settings.key}
        if self._etag and self._rules is not None:
            request["IfNoneMatch"] = self._etag
        try:
            response = self._client.get_object(**request)
        except ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 304:
                return
            raise
        rules = RuleSet.from_json(response["Body"].read().decode("utf-8"))
        if self._rules is None or rules.version != self._rules.version:
            logger.info("rules loaded", extra={"version": rules.version, "rules": len(rules)})
        self._rules, self._etag = rules, response.get("ETag")
