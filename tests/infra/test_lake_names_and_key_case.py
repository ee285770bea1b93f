"""Issue 10, findings 8 and 9: the lake keeps the case of attribute and metric keys, and every lake name in the
graph comes from the stack config (LakeConfig.names), valid for Glue, Athena and SES even for a stack named
`prod.eu`, and accepted by the Lambdas' own settings checks."""

from __future__ import annotations

import re
from unittest import mock

import pulumi
import pytest

from components.config import PROJECT
from functions.events.canonical import LAKE_COLUMN_TYPES, CanonicalEvent, EventSource
from functions.lake_names import check_glue_name, check_workgroup_name, derived_lake_names

FIREHOSE = "aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream"
FUNCTION = "aws:lambda/function:Function"
SES_DESTINATION = "aws:sesv2/configurationSetEventDestination:ConfigurationSetEventDestination"
# SES API reference, EventDestination `Name`: ASCII letters, digits, _ and -, at most 64 characters.
SES_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@pytest.mark.parametrize("name", ["events-firehose", "events-app-firehose"])
def test_firehose_keeps_json_key_case_when_it_converts_to_parquet(dev_graph, name):
    conversion = dev_graph.one(FIREHOSE, name).inputs["extendedS3Configuration"]["dataFormatConversionConfiguration"]
    deserializer = conversion["inputFormatConfiguration"]["deserializer"]
    # OpenXJsonSerDe CaseInsensitive defaults to true, which lower-cases every key (productCategory → productcategory).
    assert deserializer == {"openXJsonSerDe": {"caseInsensitive": False, "convertDotsInJsonKeysToUnderscores": False}}


def test_case_sensitive_matching_still_finds_every_column(dev_graph):
    # Glue keeps column names in lower case; the normaliser writes exactly those keys, so exact matching finds them.
    table = dev_graph.one("aws:glue/catalogTable:CatalogTable")
    columns = [c["name"] for c in table.inputs["storageDescriptor"]["columns"]]
    assert columns == [c.lower() for c in columns] == list(LAKE_COLUMN_TYPES)
    event = CanonicalEvent(event_id="e1", source=EventSource.APP, event_type="purchase", event_time_ms=1,
                           arrival_time_ms=1, attributes={"productCategory": "shoes"})
    assert list(event.to_json_dict()) == columns


def test_the_local_lake_keeps_map_keys_that_differ_only_by_case(tmp_path):
    import duckdb

    from functions.retraining.lake import duckdb_sql, write_lake

    event = CanonicalEvent(event_id="e1", source=EventSource.APP, event_type="purchase", event_time_ms=1,
                           arrival_time_ms=1_700_000_000_000,
                           attributes={"productCategory": "shoes", "productcategory": "hats"},
                           metrics={"Price": 2.5, "price": 1.0})
    [path] = write_lake([event], tmp_path)
    athena = ("SELECT element_at(attributes, 'productCategory'), element_at(attributes, 'productcategory'), "
              "element_at(metrics, 'Price') FROM lake")
    with duckdb.connect() as con:
        con.execute(f"CREATE VIEW lake AS SELECT * FROM read_parquet('{path}')")
        assert con.execute(duckdb_sql(athena)).fetchone() == ("shoes", "hats", 2.5)


@pytest.fixture(scope="module")
def dotted_stack(monitor, dev_stack_config, run_stack):
    from tests.infra.conftest import Graph

    before = len(monitor.registered)
    with mock.patch.object(pulumi, "get_stack", return_value="prod.eu"):
        outputs = run_stack(dev_stack_config)
    return Graph(list(monitor.registered[before:]), outputs)


def test_a_dotted_stack_name_gives_valid_names_from_one_source(dotted_stack):
    names = derived_lake_names(PROJECT, "prod.eu")
    assert (names.database, names.workgroup) == ("engagement_loop_prod_eu", "engagement-loop-prod.eu")
    database = dotted_stack.one("aws:glue/catalogDatabase:CatalogDatabase").inputs["name"]
    workgroup = dotted_stack.one("aws:athena/workgroup:Workgroup").inputs["name"]
    table = dotted_stack.one("aws:glue/catalogTable:CatalogTable").inputs["name"]
    assert (database, table, workgroup) == (names.database, names.table, names.workgroup)
    check_glue_name(database, "database"), check_glue_name(table, "table")
    check_workgroup_name(workgroup, "workgroup")
    destination = dotted_stack.one(SES_DESTINATION).inputs["eventDestinationName"]
    assert destination == "engagement-loop-prod-eu" and SES_NAME.fullmatch(destination)
    assert dotted_stack.outputs["glueDatabase"] == database and dotted_stack.outputs["athenaWorkgroup"] == workgroup


def test_the_lambdas_settings_accept_the_names_the_graph_gives_them(dotted_stack):
    from functions.retraining.settings import RetrainingSettings
    from functions.rules.backfill import BackfillSettings

    database = dotted_stack.one("aws:glue/catalogDatabase:CatalogDatabase").inputs["name"]
    workgroup = dotted_stack.one("aws:athena/workgroup:Workgroup").inputs["name"]
    backfill = dotted_stack.one(FUNCTION, "rules-backfill-handler-function").inputs["environment"]["variables"]
    steps = dotted_stack.one(FUNCTION, "retraining-steps-function").inputs["environment"]["variables"]
    for env in (backfill, steps):
        assert (env["GLUE_DATABASE"], env["ATHENA_WORKGROUP"]) == (database, workgroup)
    settings = BackfillSettings.from_env({k: str(v) for k, v in backfill.items()})
    assert (settings.database, settings.workgroup) == (database, workgroup)
    retraining = RetrainingSettings.from_env({k: str(v) for k, v in steps.items()})
    assert (retraining.database, retraining.workgroup) == (database, workgroup)


def test_a_long_stack_name_gives_an_ses_destination_name_within_the_limit():
    from components.event_stream_pipeline import ses_event_destination_name

    long_one = ses_event_destination_name(derived_lake_names(PROJECT, "a" * 90 + ".x"))
    other = ses_event_destination_name(derived_lake_names(PROJECT, "a" * 90 + ".y"))
    assert SES_NAME.fullmatch(long_one) and SES_NAME.fullmatch(other) and long_one != other
    assert ses_event_destination_name(derived_lake_names(PROJECT, "dev")) == "engagement-loop-dev"
