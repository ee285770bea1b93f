"""The us-east-1 price table `bench.cost` multiplies by: one line per billed dimension, each with its unit, its
price, the AWS page it comes from and the date it was read.

`verified` says whether the price itself was read on that page (in the stored copy of the page the search tools
hold) on `read`. A line with `verified=False` has a price that was *not* read there: its `note` says what was read
instead (a third-party page quoting the price, or the AWS page's wording without its figures) — check it against
the AWS page before relying on the figure. `docs/cost.md` lists those lines. Free tiers are not subtracted (they
are per account, shared with everything else the account runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

READ = "2026-12-01"
"""When the pages below were read (all on one day)."""

KINESIS = "https://aws.amazon.com/kinesis/data-streams/pricing/"
FIREHOSE = "https://aws.amazon.com/firehose/pricing/"
LAMBDA = "https://aws.amazon.com/lambda/pricing/"
LAMBDA_WHITEPAPER = "https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html"
DYNAMODB = "https://aws.amazon.com/dynamodb/pricing/on-demand/"
S3 = "https://aws.amazon.com/s3/pricing/"
GLUE = "https://aws.amazon.com/glue/pricing/"
LAKE_FORMATION = "https://aws.amazon.com/cn/lake-formation/pricing/"
"""Lake Formation's pricing page (English copy under /cn/) works a Glue Data Catalog example with its price."""
ATHENA = "https://aws.amazon.com/athena/pricing/"
STEP_FUNCTIONS = "https://aws.amazon.com/step-functions/pricing/"
SNS = "https://aws.amazon.com/sns/pricing/"
EVENTBRIDGE = "https://aws.amazon.com/eventbridge/pricing/"
SQS = "https://aws.amazon.com/sqs/pricing/"
KMS = "https://aws.amazon.com/kms/pricing/"
CLOUDWATCH = "https://aws.amazon.com/cloudwatch/pricing/"
PERSONALIZE = "https://aws.amazon.com/personalize/pricing/"


@dataclass(frozen=True, slots=True)
class Price:
    """One billed dimension of one service in us-east-1."""

    service: str
    unit: str
    """What one `usd` buys, e.g. `GB`, `million requests`, `stream-hour`."""
    usd: float
    source: str
    """The AWS pricing page (URL) the line belongs to."""
    read: str
    """The date (YYYY-MM-DD) the source was read."""
    verified: bool
    """True: the figure was read on `source`. False: see `note`."""
    note: str = ""

    def problems(self, key: str) -> list[str]:
        """What makes this line unusable: no source, no date, no unit, a negative price, an unverified line without
        a note saying why."""
        found = []
        if not self.source.startswith("https://"):
            found.append(f"price {key}: no source (expected the https:// URL of the AWS pricing page)")
        if len(self.read) != 10 or self.read[4] != "-" or self.read[7] != "-":
            found.append(f"price {key}: no date read (expected YYYY-MM-DD), got {self.read!r}")
        if not self.unit:
            found.append(f"price {key}: no unit")
        if not self.usd >= 0:
            found.append(f"price {key}: expected a price ≥ 0, got {self.usd!r}")
        if not self.verified and not self.note:
            found.append(f"price {key}: unverified but no note saying where the figure comes from")
        return found


_UNREAD = "the stored copy of this AWS page did not show its figures; price as last known to the author, not read"

PRICES: Mapping[str, Price] = MappingProxyType({
    # Kinesis page (read): "Data-In: The data ingested into Kinesis Data Streams is billed per GB written into your
    # data stream. This is calculated as the number of data records you send to the service, multiplied by the size
    # of each record rounded up to the nearest 1 KB (1,024 bytes)." and "You're also charged for each stream
    # operating in the on-demand capacity mode in your account at an hourly rate." The figures were not shown.
    "kinesis.on_demand_stream_hour": Price("Kinesis Data Streams", "stream-hour (on-demand)", 0.04, KINESIS, READ,
                                           False, _UNREAD),
    "kinesis.on_demand_gb_in": Price("Kinesis Data Streams", "GB in (records rounded up to 1 KB, on-demand)", 0.08,
                                     KINESIS, READ, False, _UNREAD),
    "kinesis.on_demand_gb_out": Price("Kinesis Data Streams", "GB read by a consumer (on-demand)", 0.04, KINESIS,
                                      READ, False, _UNREAD),
    "kinesis.shard_hour": Price("Kinesis Data Streams", "shard-hour (provisioned)", 0.015, KINESIS, READ, False,
                                _UNREAD + "; kindatechnical.com's Kinesis lesson also computes with $0.015 a "
                                          "shard-hour"),
    "kinesis.put_payload_units": Price("Kinesis Data Streams", "million PUT payload units (25 KB each, provisioned)",
                                       0.014, KINESIS, READ, False, _UNREAD),
    # Firehose page (read, German copy aws.amazon.com/de/kinesis/data-firehose/pricing/): ingestion "pro erfasstem
    # GB in 5-KB-Schritten" (per GB ingested in 5 KB increments); format conversion "pro GB basierend auf erfassten
    # GBs in 5-KB-Schritten"; dynamic partitioning "pro an S3 geliefertes GB, pro Objekt und optional pro
    # JQ-Verarbeitungsstunde". The figures were not shown.
    "firehose.ingestion_gb": Price("Data Firehose", "GB ingested (records rounded up to 5 KB; first 500 TB tier)",
                                   0.029, FIREHOSE, READ, False, _UNREAD),
    "firehose.format_conversion_gb": Price("Data Firehose", "GB converted to Parquet (5 KB increments)", 0.018,
                                           FIREHOSE, READ, False, _UNREAD),
    "firehose.dynamic_partitioning_gb": Price("Data Firehose", "GB delivered with dynamic partitioning", 0.020,
                                              FIREHOSE, READ, False, _UNREAD),
    "firehose.dynamic_partitioning_objects": Price("Data Firehose", "1,000 S3 objects delivered (dynamic "
                                                   "partitioning)", 0.005, FIREHOSE, READ, False, _UNREAD),
    # "How AWS Pricing Works", Lambda (read): "$0.20 per 1 million requests thereafter, or $0.0000002 per request."
    # and "$0.00001667 for every GB-second used thereafter." Duration is "rounded up to the nearest 1 millisecond".
    "lambda.requests": Price("Lambda", "million requests", 0.20, LAMBDA_WHITEPAPER, READ, True),
    "lambda.gb_second": Price("Lambda", "GB-second (x86)", 0.0000166667, LAMBDA_WHITEPAPER, READ, True,
                              "the whitepaper rounds it to $0.00001667"),
    # DynamoDB: the AWS on-demand page is in the stored corpus (docs), but its copy shows the key terms ("A standard
    # write request unit can write an item up to 1 KB") and not the figures. airbyte.com's DynamoDB pricing guide
    # (read): "After the 50% reduction implemented in late 2024: Write Request Units (WRU): $0.625 per million
    # write request units; Read Request Units (RRU): $0.125 per million read request units".
    "dynamodb.write_request_units": Price("DynamoDB", "million write request units (on-demand)", 0.625, DYNAMODB,
                                          READ, False, "the AWS page's stored copy shows no figures; figure read on "
                                          "airbyte.com/data-engineering-resources/dynamodb-pricing (after the "
                                          "November 2024 on-demand price cut; zeonedge.com and oneuptime.com still "
                                          "quote the earlier $1.25)"),
    "dynamodb.read_request_units": Price("DynamoDB", "million read request units (on-demand)", 0.125, DYNAMODB,
                                         READ, False, "the AWS page's stored copy shows no figures; figure read on "
                                         "airbyte.com/data-engineering-resources/dynamodb-pricing"),
    "dynamodb.storage_gb_month": Price("DynamoDB", "GB-month stored (Standard table class)", 0.25, DYNAMODB, READ,
                                       False, "the AWS page's stored copy shows no figures; price as last known, "
                                       "not read"),
    "s3.storage_gb_month": Price("S3", "GB-month (Standard, first 50 TB)", 0.023, S3, READ, False,
                                 "the stored copy of the AWS page (through a proxy) shows the wording, not the "
                                 "storage table; price as last known"),
    "s3.put_requests": Price("S3", "1,000 PUT/COPY/POST/LIST requests", 0.005, S3, READ, False,
                             "AWS page's stored copy shows no request table; athena.guide's pricing article (read) "
                             "gives list operations as $5 per million, c3x.dev \"PUT is $0.005/1K\""),
    "s3.get_requests": Price("S3", "1,000 GET requests", 0.0004, S3, READ, False,
                             "AWS page's stored copy shows no request table; athena.guide's pricing article (read): "
                             "get operations \"$0.4 per million\", c3x.dev \"GET is $0.0004/1K\""),
    # Lake Formation pricing page (read), its Glue Data Catalog example: "Now consider your storage usage remains the
    # same at one million tables per month, but your requests double to two million requests per month." ... "Your
    # first million requests are also free. You will be billed for one million requests above the free tier, which
    # is $1." (athena.guide gives the same $1 per million.) The stored copies of the Glue page itself did not show it.
    "glue.catalog_requests": Price("Glue Data Catalog", "million requests (after the first million a month)", 1.0,
                                   LAKE_FORMATION, READ, True,
                                   "\"You will be billed for one million requests above the free tier, which is "
                                   "$1.\" (Lake Formation pricing page, Glue Data Catalog example)"),
    # athena.guide (read): "It's a flat $5 per TB of data scanned, rounded to the nearest MB, with a 10 MB minimum."
    "athena.tb_scanned": Price("Athena", "TB scanned (10 MB minimum per query)", 5.0, ATHENA, READ, False,
                               "AWS page not in the stored corpus; figure and the 10 MB minimum read on "
                               "athena.guide's \"Athena Basics: Pricing Model\" and rcpedia.stanford.edu's Athena "
                               "page"),
    # Step Functions page (read): "$0.025 per 1,000 state transitions" and its state transitions pricing table:
    # "US East (N. Virginia) | $0.0250".
    "stepfunctions.state_transitions": Price("Step Functions", "1,000 state transitions (Standard)", 0.025,
                                             STEP_FUNCTIONS, READ, True,
                                             "\"$0.025 per 1,000 state transitions\"; table: \"US East (N. "
                                             "Virginia) | $0.0250\""),
    "sns.publishes": Price("SNS", "million publishes", 0.50, SNS, READ, False, "AWS pricing page not in the stored "
                           "corpus (the SNS FAQ copies found give no figures); factualminds.com: \"$0.50 per "
                           "million publishes for Standard topics\""),
    "sns.email": Price("SNS", "100,000 email notifications", 2.0, SNS, READ, False, "AWS pricing page not in the "
                       "stored corpus; factualminds.com: \"email at $2 per hundred thousand\""),
    "eventbridge.custom_events": Price("EventBridge", "million custom events put", 1.0, EVENTBRIDGE, READ, False,
                                       "AWS pricing page not in the stored corpus; blog.awsfundamentals.com and "
                                       "cloudburn.io: custom events \"$1.00 per 1 million\""),
    "eventbridge.scheduler_invocations": Price("EventBridge Scheduler", "million scheduled invocations", 1.0,
                                               EVENTBRIDGE, READ, False, "AWS pricing page not in the stored corpus "
                                               "(AWS's Scheduler launch post found, its opening has no figures); "
                                               "cloudburn.io: $1.00 per million after 14M free a month (wring.co "
                                               "says free: unsettled)"),
    "sqs.requests": Price("SQS", "million requests (standard queue)", 0.40, SQS, READ, False, "AWS pricing page not "
                          "in the stored corpus; unanswered.io and cloudburn.io: standard queues $0.40 per million "
                          "(first 100 billion a month)"),
    # KMS page (read): "Each AWS KMS key that you create in KMS costs $1/month." Its key usage table (the request
    # prices) was not in the stored copies (neither /kms/pricing/ nor /fr/kms/pricing/).
    "kms.key_month": Price("KMS", "customer managed key-month", 1.0, KMS, READ, True,
                           "\"Each AWS KMS key that you create in KMS costs $1/month.\""),
    "kms.requests": Price("KMS", "10,000 requests", 0.03, KMS, READ, False,
                          "the stored copies of the AWS page show the free tier (\"20,000 free AWS Key Management "
                          "Service requests each month\") but not the key usage table's figures; $0.03 per 10,000 "
                          "read only on third-party pages (wring.co, cloudburn.io, factualminds.com)"),
    # CloudWatch page (read): its free tier table ("5 GB Data (ingestion, archive storage, and data scanned by Logs
    # Insights queries)", "10 Alarm metrics", "10 Metrics (of Custom Metrics and Detailed Monitoring Metrics)") is in
    # the stored copy; the paid tier's tabs (Logs, Metrics, Alarms) are there without their figures.
    "cloudwatch.logs_ingested_gb": Price("CloudWatch", "GB of logs ingested (standard)", 0.50, CLOUDWATCH, READ,
                                         False, _UNREAD + "; factualminds.com: \"Logs ingestion at $0.50/GB\""),
    "cloudwatch.logs_stored_gb_month": Price("CloudWatch", "GB-month of logs stored", 0.03, CLOUDWATCH, READ, False,
                                             _UNREAD),
    "cloudwatch.metric_month": Price("CloudWatch", "custom metric-month (first 10,000)", 0.30, CLOUDWATCH, READ,
                                     False, _UNREAD + "; signoz.io: \"at $0.30/month for the first 10,000\""),
    "cloudwatch.alarm_month": Price("CloudWatch", "standard-resolution alarm metric-month", 0.10, CLOUDWATCH, READ,
                                    False, _UNREAD),
    # Personalize page (read, German copy aws.amazon.com/de/personalize/pricing/): training is billed per training
    # hour, "eine Stunde an Rechenkapazität unter Verwendung von 4v-CPUs und 8 GiB Arbeitsspeicher" (4 vCPU and
    # 8 GiB), and real-time recommendations per TPS-hour: "Sie bezahlen für das Maximum entweder minimal
    # bereitgestellt[er TPS oder der tatsächlichen TPS]". The figures were not in the excerpt.
    "personalize.training_hour": Price("Personalize", "training hour", 0.24, PERSONALIZE, READ, False, _UNREAD),
    "personalize.tps_hour": Price("Personalize", "TPS-hour of campaign capacity (first 20,000 a month)", 0.0556,
                                  PERSONALIZE, READ, False, _UNREAD),
    "personalize.ingestion_gb": Price("Personalize", "GB of data ingested", 0.05, PERSONALIZE, READ, False,
                                      _UNREAD),
})


def table_problems(prices: Mapping[str, Price] = PRICES) -> list[str]:
    """Every problem of every line (empty when the table is usable)."""
    return [problem for key, price in prices.items() for problem in price.problems(key)]


def unverified(prices: Mapping[str, Price] = PRICES) -> list[str]:
    return [key for key, price in prices.items() if not price.verified]
