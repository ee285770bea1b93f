"""A seeded synthetic engagement stream for `python -m cli demo`: raw records exactly as they sit on the
Kinesis stream, one JSON record per line, in arrival order.

A small online shop over `days` days, per user:

- app events, written by the app as canonical JSON (`engagement-loop/v1`, `functions/events/app.py`):
  `_session.start` (attributes `platform`, `app_version`), `view_item` (an `item_id`; attributes `category`,
  `source`; metric `duration_s`), `add_to_cart` (metrics `quantity`, `price`) and `purchase` (one per order:
  the producer's id `ord-…`, the order's first item, metrics `amount` first, then `items`);
- Amazon Pinpoint event-stream records: `_campaign.send` for two email campaigns (`weekly_picks` every
  Tuesday, `autumn_sale` once) and two push campaigns (`daily_deal` every other day, `back_in_stock` on
  Saturdays); `_journey.send` for the `welcome` journey (new users, on days 0, 2, 5 and 9 after they join)
  and the `winback` journey (quiet users, once). The user is inside `client_context.custom.endpoint`, a
  JSON *string*, as Pinpoint writes it. Email engagement — `_email.open` (some opened twice),
  `_email.click`, `_email.unsubscribe` (no more email afterwards) — carries the campaign or journey
  attributes; Pinpoint stamps it with the send time and it arrives when it happens. Push opens
  (`_campaign.opened_notification`) are recorded by the app's SDK and start an app session;
- recommendation exposures: every message carries items recommended for its recipient, and they go through
  the exposure-tracking code (`functions/tracking/exposures.py`) exactly as Pinpoint's recommender
  invocation would, becoming `_custom.recommender` records on the stream just before the message is sent;
- faults a real stream has: producer duplicates (the same line again up to a minute later) and late
  arrivals (app records held by an offline device, arriving 2–36 hours after the event).

Times are `days` whole UTC days ending on `end_day(seed)`: a fixed day chosen by the seed (never today, so a
run is reproducible), in the week before Amazon Pinpoint's end of support (2026-10-30), so the sample
sheet's date rule (2026-10-08 … 2026-10-21) falls inside the default 30 days. Every user draws from a
random generator of their own (seeded by the seed and the user id), so changing `--users` keeps the others'
events as they were.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

DEFAULT_USERS = 2_500
DEFAULT_DAYS = 30
DEFAULT_SEED = 7
MAX_USERS = 100_000
MAX_DAYS = 366

FIRST_END_DAY = date(2026, 10, 23)
"""The seed picks the last day among FIRST_END_DAY … FIRST_END_DAY + 6 days (before 2026-10-30)."""

APP_SCHEMA = "engagement-loop/v1"
ACCOUNT_ID = "123456789012"
EMAIL_SENDER = "news@shop.example.com"
CATEGORIES = ("shoes", "jackets", "knitwear", "bags", "hats", "accessories")
CATALOGUE_SIZE = 240
DUPLICATE_RATE = 0.015
LATE_RATE = 0.02
MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000
WELCOME_STEPS_DAYS = (0, 2, 5, 9)
# Relative chance of an app session starting in each UTC hour (quiet nights, lunch and evening peaks).
HOUR_WEIGHTS = (1, .6, .4, .3, .3, .5, 1, 2, 3, 3, 3, 3.5, 4, 4, 3, 3, 3, 4, 5, 6, 6, 5, 3, 2)


def end_day(seed: int) -> date:
    """The stream's last day for `seed`."""
    return FIRST_END_DAY + timedelta(days=seed % 7)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSpec:
    """What to generate."""

    users: int = DEFAULT_USERS
    """Number of users. Default 500."""
    days: int = DEFAULT_DAYS
    """Whole UTC days of events, ending on `end_day(seed)`. Default 30."""
    seed: int = DEFAULT_SEED
    """Seeds everything, the dates included. Default 7."""

    def __post_init__(self) -> None:
        for name, low, high in (("users", 1, MAX_USERS), ("days", 1, MAX_DAYS)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name}: expected a whole number in {low}..{high}, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: expected a whole number ≥ 0, got {self.seed!r}")

    @property
    def last_day(self) -> date:
        return end_day(self.seed)

    @property
    def first_day(self) -> date:
        return self.last_day - timedelta(days=self.days - 1)

    @property
    def start_ms(self) -> int:
        return _day_ms(self.first_day)

    @property
    def end_ms(self) -> int:
        """The first millisecond after the stream's last day."""
        return _day_ms(self.last_day) + DAY_MS


@dataclass(frozen=True, slots=True)
class SyntheticStream:
    """The generated lines (arrival order) and what was injected into them."""

    spec: StreamSpec
    lines: list[str]
    duplicates: int
    """Lines that repeat an earlier line (producer retries)."""
    late: int
    """App records that arrived 2–36 hours after their event time."""

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="\n") as out:
            for line in self.lines:
                out.write(line + "\n")
        return path


def generate(spec: StreamSpec = StreamSpec(), *, progress: Callable[[int], None] | None = None) -> SyntheticStream:
    """Generate the stream; `progress(n)` is called after each user with the number of users done."""
    world = _World(spec)
    records: list[_Record] = []
    width = max(4, len(str(spec.users)))
    late = duplicates = 0
    for number in range(1, spec.users + 1):
        user_id = f"user-{number:0{width}d}"
        rng = random.Random(f"{spec.seed}:faults:{user_id}")
        own = _UserStream(world, user_id).records()
        for record in list(own):
            if record.can_be_late and rng.random() < LATE_RATE:
                # An offline device: the record reaches the stream hours after it happened.
                record.arrival_ms += rng.randint(2 * HOUR_MS, 36 * HOUR_MS)
                late += 1
            if rng.random() < DUPLICATE_RATE:
                own.append(_Record(record.arrival_ms + rng.randint(500, 60_000), record.line))
                duplicates += 1
        records.extend(own)
        if progress:
            progress(number)
    # Stream order is arrival order; ties keep generation order (a message's exposures before its send).
    ordered = sorted(enumerate(records), key=lambda pair: (pair[1].arrival_ms, pair[0]))
    # The stream is read up to the end of its last day: what has not arrived by then is not in it.
    lines = [record.line for _, record in ordered if record.arrival_ms < spec.end_ms]
    return SyntheticStream(spec, lines, duplicates, late)


# --- the world: catalogue, campaigns -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Item:
    item_id: str
    category: str
    price: float


@dataclass(frozen=True, slots=True)
class _Campaign:
    """One run of a campaign: everything a send record and the recommender invocation need."""

    campaign_id: str
    activity_id: str
    channel: str  # EMAIL or PUSH
    scheduled_ms: int
    items: int
    """Recommended items per message."""
    audience: float
    """Share of eligible users it goes to."""
    subject: str


class _World:
    """What every user shares: the catalogue and the campaign calendar."""

    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        rng = random.Random(f"{spec.seed}:world")
        self.app_id = f"{rng.getrandbits(128):032x}"
        self.items: list[_Item] = []
        for number in range(1, CATALOGUE_SIZE + 1):
            price = round(max(4.0, rng.lognormvariate(3.3, 0.55))) - 0.01
            self.items.append(_Item(f"sku-{number:04d}", rng.choice(CATEGORIES), price))
        rng.shuffle(self.items)
        self.by_id = {item.item_id: item for item in self.items}
        # Popularity falls with rank (a long tail), within each category too.
        self.weights = [1 / (rank + 1) ** 0.8 for rank in range(len(self.items))]
        self.by_category = {c: [(i, w) for i, w in zip(self.items, self.weights) if i.category == c]
                            for c in CATEGORIES}
        self.campaigns = self._calendar(rng)

    def _calendar(self, rng: random.Random) -> list[_Campaign]:
        spec, campaigns = self.spec, []

        def add(campaign_id: str, channel: str, day: date, hour: int, items: int, audience: float,
                subject: str) -> None:
            activity = f"{campaign_id}-{day:%Y%m%d}-{rng.getrandbits(32):08x}"
            campaigns.append(_Campaign(campaign_id, activity, channel, _day_ms(day) + hour * HOUR_MS, items,
                                       audience, subject))

        sale_day = spec.first_day + timedelta(days=int(spec.days * 0.6))
        for offset in range(spec.days):
            day = spec.first_day + timedelta(days=offset)
            if day.weekday() == 1:
                add("weekly_picks", "EMAIL", day, 9, 4, 0.9, "Picked for you this week")
            if day == sale_day:
                add("autumn_sale", "EMAIL", day, 10, 5, 1.0, "Autumn sale: up to 40% off")
            if (spec.last_day - day).days % 2 == 0:
                add("daily_deal", "PUSH", day, 17, 1, 0.95, "Today's deal")
            if day.weekday() == 5:
                add("back_in_stock", "PUSH", day, 11, 1, 0.3, "Back in stock")
        return campaigns

    def recommend(self, rng: random.Random, categories: tuple[str, ...], count: int) -> list[str]:
        """`count` distinct items, mostly from the user's categories, popular ones first more often."""
        chosen: list[str] = []
        while len(chosen) < count:
            pool = self.by_category[rng.choice(categories)] if rng.random() < 0.75 else None
            items, weights = zip(*pool) if pool else (self.items, self.weights)
            item = rng.choices(items, weights)[0].item_id
            if item not in chosen:
                chosen.append(item)
        return chosen

    def item(self, rng: random.Random, categories: tuple[str, ...]) -> _Item:
        pool = self.by_category[rng.choice(categories)] if rng.random() < 0.7 else None
        items, weights = zip(*pool) if pool else (self.items, self.weights)
        return rng.choices(items, weights)[0]

    def item_by_id(self, item_id: str) -> _Item:
        return self.by_id[item_id]


# --- one user's records --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Record:
    arrival_ms: int
    line: str
    can_be_late: bool = False
    """An app event (not an exposure): its device may hold it back."""


@dataclass(slots=True)
class _Message:
    """A message to send this user: a campaign run or a journey step."""

    sent_ms: int
    channel: str
    items: int
    campaign: _Campaign | None = None
    journey_id: str | None = None
    journey_activity_id: str | None = None
    journey_run_id: str | None = None
    subject: str = ""


class _UserStream:
    """One user's profile, and every record their month produces (`records()`)."""

    def __init__(self, world: _World, user_id: str) -> None:
        self.world, self.user_id = world, user_id
        spec = world.spec
        self.rng = rng = random.Random(f"{spec.seed}:{self.user_id}")
        self.activity = min(5.0, max(0.1, rng.lognormvariate(0.0, 0.75)))
        # A third of the users sign up during the stream and get the welcome journey.
        self.join_ms = (spec.start_ms + rng.randrange(spec.days * DAY_MS)) if rng.random() < 0.35 else None
        self.platform = rng.choice(("ios", "android", "android", "web"))
        self.has_push = self.platform != "web" and rng.random() < 0.85
        self.email_endpoint = f"{rng.getrandbits(64):016x}"
        self.push_endpoint = f"{rng.getrandbits(64):016x}"
        self.categories = tuple(rng.sample(CATEGORIES, rng.choice((1, 2, 2, 3))))
        self.open_email = min(0.8, 0.1 + 0.18 * self.activity)
        self.open_push = min(0.75, 0.05 + 0.16 * self.activity)
        self.unsubscribed = False
        self.out: list[_Record] = []

    # -- the plan ------------------------------------------------------------------------------------

    def records(self) -> list[_Record]:
        spec, rng = self.world.spec, self.rng
        start = self.join_ms or spec.start_ms
        if self.join_ms:
            self._session(self.join_ms, source="signup")
        for offset in range(spec.days):
            day_ms = spec.start_ms + offset * DAY_MS
            weekend = datetime.fromtimestamp(day_ms / 1000, tz=timezone.utc).weekday() >= 5
            for _ in range(_poisson(rng, 0.3 * self.activity * (1.3 if weekend else 1.0))):
                at = day_ms + rng.choices(range(24), HOUR_WEIGHTS)[0] * HOUR_MS + rng.randrange(HOUR_MS)
                if at > start:
                    self._session(at)
        for message in sorted(self._messages(start), key=lambda m: m.sent_ms):
            self._send(message)
        return self.out

    def _messages(self, start_ms: int) -> Iterable[_Message]:
        spec, rng = self.world.spec, self.rng
        for campaign in self.world.campaigns:
            if campaign.scheduled_ms < start_ms or rng.random() >= campaign.audience:
                continue
            if campaign.channel == "PUSH" and not self.has_push:
                continue
            # Pinpoint works through the audience in the minutes after the scheduled time.
            yield _Message(campaign.scheduled_ms + 5_000 + rng.randrange(10 * MINUTE_MS), campaign.channel,
                           campaign.items,
                           campaign=campaign, subject=campaign.subject)
        if self.join_ms:
            run = f"{rng.getrandbits(128):032x}"
            for step, days in enumerate(WELCOME_STEPS_DAYS, start=1):
                sent = self.join_ms + days * DAY_MS + 5 * MINUTE_MS
                if sent < spec.end_ms:
                    yield _Message(sent, "EMAIL", 3, journey_id="welcome", journey_activity_id=f"welcome-{step}",
                                   journey_run_id=run, subject=f"Welcome ({step}/{len(WELCOME_STEPS_DAYS)})")
        elif self.activity < 0.45 and rng.random() < 0.5:
            sent = spec.start_ms + rng.randrange(spec.days * DAY_MS)
            yield _Message(sent, "EMAIL", 3, journey_id="winback", journey_activity_id="winback-1",
                           journey_run_id=f"{rng.getrandbits(128):032x}", subject="We miss you")

    # -- app events ----------------------------------------------------------------------------------

    def _app(self, event_type: str, at: int, *, item: str | None = None, attributes: dict[str, str] | None = None,
             metrics: dict[str, float] | None = None, event_id: str | None = None) -> None:
        record: dict[str, Any] = {"schema": APP_SCHEMA, "event_type": event_type, "event_time_ms": at,
                                  "user_id": self.user_id}
        if event_id:
            record["event_id"] = event_id
        if item:
            record["item_id"] = item
        if attributes:
            record["attributes"] = attributes
        if metrics:
            record["metrics"] = metrics
        self.out.append(_Record(at, _compact(record), can_be_late=True))

    def _session(self, at: int, *, source: str = "browse", first_item: str | None = None,
                 campaign: str | None = None) -> None:
        rng, world = self.rng, self.world
        platform = "web" if source == "email" else self.platform
        self._app("_session.start", at, attributes={"platform": platform,
                                                   "app_version": "web" if platform == "web" else "4.12.0"})
        clock, cart = at, []
        views = 1 + min(12, int(rng.expovariate(1 / (1.5 + self.activity))))
        for number in range(views):
            clock += rng.randint(5_000, 3 * MINUTE_MS)
            item = world.item_by_id(first_item) if number == 0 and first_item else world.item(rng, self.categories)
            attributes = {"category": item.category, "source": source if number == 0 else "browse"}
            if campaign and number == 0:
                attributes["campaign_id"] = campaign
            self._app("view_item", clock, item=item.item_id, attributes=attributes,
                      metrics={"duration_s": round(rng.lognormvariate(3.0, 0.8), 1)})
            if rng.random() < 0.2 + (0.1 if number == 0 and first_item else 0):
                clock += rng.randint(3_000, 40_000)
                quantity = 1 if rng.random() < 0.85 else 2
                cart.append((item, quantity))
                self._app("add_to_cart", clock, item=item.item_id, attributes={"category": item.category},
                          metrics={"quantity": quantity, "price": item.price})
        if cart and rng.random() < 0.45:
            clock += rng.randint(30_000, 5 * MINUTE_MS)
            amount = round(sum(item.price * quantity for item, quantity in cart), 2)
            self._app("purchase", clock, item=cart[0][0].item_id,
                      event_id=f"ord-{rng.getrandbits(48):012x}",
                      attributes={"currency": "EUR", "payment": rng.choice(("card", "card", "paypal", "wallet"))},
                      metrics={"amount": amount, "items": sum(quantity for _, quantity in cart)})

    # -- messages and their engagement ---------------------------------------------------------------

    def _send(self, message: _Message) -> None:
        rng = self.rng
        if message.channel == "EMAIL" and self.unsubscribed:
            return
        endpoint = self.email_endpoint if message.channel == "EMAIL" else self.push_endpoint
        items = self._exposures(message, endpoint)
        sent = message.sent_ms
        self._pinpoint(message, "_journey.send" if message.journey_id else "_campaign.send", endpoint, sent,
                       sent + rng.randint(50, 1_500), send=True)
        if message.channel == "PUSH":
            if rng.random() < self.open_push:
                opened = sent + int(min(20 * HOUR_MS, rng.lognormvariate(math.log(40 * MINUTE_MS), 1.2)))
                self._pinpoint(message, "_campaign.opened_notification", endpoint, opened,
                               opened + rng.randint(300, 5_000))
                self._session(opened + rng.randint(2_000, 10_000), source="push", first_item=items[0],
                              campaign=message.campaign.campaign_id if message.campaign else None)
            return
        if rng.random() >= self.open_email:
            return
        opened = sent + int(min(6 * DAY_MS, rng.lognormvariate(math.log(3 * HOUR_MS), 1.2)))
        # Pinpoint stamps email events with the send time; they arrive when they happen.
        self._pinpoint(message, "_email.open", endpoint, sent, opened, mail={"open": opened})
        if rng.random() < 0.1:
            again = opened + rng.randint(HOUR_MS, 2 * DAY_MS)
            self._pinpoint(message, "_email.open", endpoint, sent, again, mail={"open": again})
        if rng.random() < 0.35:
            clicked = opened + rng.randint(5_000, 10 * MINUTE_MS)
            item = rng.choice(items)
            tag = message.campaign.campaign_id if message.campaign else message.journey_id
            link = f"https://shop.example.com/p/{item}?utm_source=pinpoint&utm_campaign={tag}"
            self._pinpoint(message, "_email.click", endpoint, sent, clicked, mail={"click": clicked, "link": link})
            self._session(clicked + rng.randint(3_000, 20_000), source="email", first_item=item,
                          campaign=message.campaign.campaign_id if message.campaign else None)
        elif rng.random() < 0.02:
            left = opened + rng.randint(10_000, 5 * MINUTE_MS)
            self._pinpoint(message, "_email.unsubscribe", endpoint, sent, left, mail={"unsubscribe": left})
            self.unsubscribed = True

    def _endpoint_definition(self, message: _Message, endpoint: str) -> dict[str, Any]:
        definition: dict[str, Any] = {"ChannelType": "EMAIL", "Address": f"{self.user_id}@example.com"} \
            if message.channel == "EMAIL" else \
            {"ChannelType": "APNS" if self.platform == "ios" else "GCM", "Address": f"{endpoint}-device-token"}
        definition.update({"EndpointStatus": "ACTIVE", "OptOut": "NONE", "User": {"UserId": self.user_id}})
        return definition

    def _exposures(self, message: _Message, endpoint: str) -> list[str]:
        """The recommender invocation for this message, through the exposure-tracking code; its items."""
        from functions.tracking.exposures import ProviderIdType, RecommenderRequest, pinpoint_exposures

        items = self.world.recommend(self.rng, self.categories, message.items)
        # A campaign run's scheduled time is the same for its whole audience; a journey step starts just before.
        scheduled_ms = message.campaign.scheduled_ms if message.campaign else message.sent_ms - 5_000
        scheduled = datetime.fromtimestamp(scheduled_ms / 1000, tz=timezone.utc)
        invocation: dict[str, Any] = {"ApplicationId": self.world.app_id,
                                      "ScheduledTime": scheduled.isoformat(timespec="milliseconds")
                                      .replace("+00:00", "Z")}
        if message.campaign:
            invocation.update({"CampaignId": message.campaign.campaign_id, "TreatmentId": "0",
                               "ActivityId": message.campaign.activity_id})
        else:
            invocation.update({"JourneyId": message.journey_id, "ActivityId": message.journey_activity_id})
        invocation["Endpoints"] = {endpoint: {**self._endpoint_definition(message, endpoint),
                                              "RecommendationItems": items}}
        request = RecommenderRequest.parse(invocation)
        found = pinpoint_exposures(request, ProviderIdType.PINPOINT_USER_ID, now_ms=message.sent_ms)
        for exposure in found.exposures:
            # Written by the recommender Lambda a moment before Pinpoint sends the message.
            line = exposure.to_stream_record().data.decode("utf-8")
            self.out.append(_Record(message.sent_ms - self.rng.randint(500, 3_000), line))
        return items

    def _pinpoint(self, message: _Message, event_type: str, endpoint: str, event_ms: int, arrival_ms: int, *,
                  send: bool = False, mail: dict[str, Any] | None = None) -> None:
        if message.campaign:
            attributes = {"campaign_id": message.campaign.campaign_id,
                          "campaign_activity_id": message.campaign.activity_id, "treatment_id": "0"}
        else:
            attributes = {"journey_id": message.journey_id, "journey_activity_id": message.journey_activity_id,
                          "journey_run_id": message.journey_run_id}
        definition = self._endpoint_definition(message, endpoint)
        if send:
            if message.campaign:
                attributes.update({"delivery_type": definition["ChannelType"], "campaign_send_status": "SUCCESS"})
            else:
                attributes.update({"journey_send_status": "SUCCESS", "journey_activity_type": message.channel})
        record: dict[str, Any] = {
            "event_type": event_type, "event_timestamp": event_ms, "arrival_timestamp": arrival_ms,
            "event_version": "3.1", "application": {"app_id": self.world.app_id, "sdk": {}},
            "client": {"client_id": endpoint}, "device": {"platform": {}}, "session": {},
            "attributes": attributes,
        }
        if event_type == "_campaign.opened_notification":
            # Recorded by the app's SDK on the device: the endpoint and its user are top-level.
            record["device"] = {"platform": {"name": self.platform}}
            record["endpoint"] = {"Id": endpoint, "ChannelType": definition["ChannelType"],
                                  "User": {"UserId": self.user_id}}
        else:
            context = {key: value for key, value in definition.items() if key != "Address"}
            record["client_context"] = {"custom": {"endpoint": json.dumps(context, separators=(",", ":"))}}
        record["awsAccountId"] = ACCOUNT_ID
        if mail is not None:
            record["attributes"]["feedback"] = mail.get("link", "opened" if "open" in mail else "unsubscribed")
            record["facets"] = {"email_channel": {"mail_event": self._mail_facet(message, event_ms, mail)}}
        self.out.append(_Record(arrival_ms, _compact(record)))

    def _mail_facet(self, message: _Message, sent_ms: int, mail: dict[str, Any]) -> dict[str, Any]:
        to = f"{self.user_id}@example.com"
        facet: dict[str, Any] = {"mail": {
            "message_id": f"{sent_ms:x}-{self.email_endpoint}-000000", "message_send_timestamp": sent_ms,
            "from_address": EMAIL_SENDER, "destination": [to], "headers_truncated": False,
            "common_headers": {"from": EMAIL_SENDER, "to": [to], "subject": message.subject}}}
        client = {"ip_address": f"198.51.100.{int(self.email_endpoint[:2], 16) % 254 + 1}",
                  "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15"}
        if "link" in mail:
            facet["click"] = {**client, "link": mail["link"]}
        elif "open" in mail:
            facet["open"] = client
        return facet


def _poisson(rng: random.Random, mean: float) -> int:
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)


def _compact(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
