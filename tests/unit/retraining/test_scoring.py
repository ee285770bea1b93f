"""The scoring model's one validator and its loaders (stack file, CSV, config values)."""

from __future__ import annotations

import pytest

from functions.retraining.scoring import ScoringError, ScoringModel

FIXTURES = "tests/fixtures/interactions"
EXPECTED = {"_campaign.send": 1.0, "_journey.send": 2.0, "_email.open": 3.0, "_email.click": 4.0,
            "_SMS.SUCCESS": 5.0, "purchase": 10.0}


def test_stack_file_and_csv_give_the_same_model():
    from_yaml = ScoringModel.load(f"{FIXTURES}/Pulumi.preview.yaml")
    from_csv = ScoringModel.load(f"{FIXTURES}/scoring.csv")
    assert dict(from_yaml.values) == dict(from_csv.values) == EXPECTED
    assert from_yaml == from_csv and hash(from_yaml) == hash(from_csv)


def test_values_are_floats_and_read_only():
    model = ScoringModel.from_mapping({"_email.open": 50, "purchase": "2.5"}, source="s")
    assert dict(model.values) == {"_email.open": 50.0, "purchase": 2.5}
    assert all(type(v) is float for v in model.values.values())
    with pytest.raises(TypeError):
        model.values["_email.open"] = 1  # type: ignore[index]


def test_config_value_forms_agree():
    mapping = {"_email.open": 50, "_email.click": 100}
    forms = [mapping, ["_email.open=50", "_email.click=100"], '{"_email.open": 50, "_email.click": 100}',
             '["_email.open=50", "_email.click=100"]']
    assert {ScoringModel.from_config_value(form, source="s") for form in forms} == {
        ScoringModel.from_mapping(mapping, source="s")}


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ({"_custom.recommender": 1}, "s, key '_custom.recommender': _custom.recommender records exposures"),
        ({"": 1}, "s, key '': event type '' is empty"),
        ({"  ": 1}, "event type '  ' is empty"),
        ({404: 1}, "s, key 404: event type 404 is not text; quote it, e.g. \"404\""),
        ({"_email.open": "lots"}, "s, key '_email.open': value 'lots' for '_email.open' is not a finite number"),
        ({"_email.open": float("nan")}, "is not a finite number"),
        ({"_email.open": "inf"}, "is not a finite number"),
        ({"_email.open": True}, "value True for '_email.open' is not a finite number"),
        ({"_email.open": None}, "is not a finite number"),
        ({}, "s: no event types are scored"),
        ({f"type{i}": i for i in range(11)}, "11 event types are scored; Amazon Personalize accepts at most 10"),
    ],
)
def test_invalid_models_name_where_and_what(mapping, expected):
    with pytest.raises(ScoringError) as raised:
        ScoringModel.from_mapping(mapping, source="s")
    assert expected in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_ten_types_are_allowed():
    assert len(ScoringModel.from_mapping({f"type{i}": i for i in range(10)}, source="s").values) == 10


def test_every_problem_is_reported_at_once(tmp_path):
    path = tmp_path / "scoring.csv"
    path.write_text("event_type,event_value\n_email.open,1\n_email.open,2\n_custom.recommender,3\n"
                    "purchase\n\n_email.click,abc\n")
    with pytest.raises(ScoringError) as raised:
        ScoringModel.load(path)
    assert raised.value.problems == [
        f"{path}, row 5: expected 2 columns (EVENT_TYPE,EVENT_VALUE), got 1",
        f"{path}, row 3: event type '_email.open' is already scored at row 2; keep one",
        f"{path}, row 4: _custom.recommender records exposures (what was recommended), not engagement; "
        "remove it from the scoring model",
        f"{path}, row 7: value 'abc' for '_email.click' is not a finite number; write a number such as 50 or 0.5",
    ]


def test_csv_header_is_required(tmp_path):
    path = tmp_path / "scoring.csv"
    path.write_text("_email.open,1\n")
    with pytest.raises(ScoringError, match=r"row 1: the header must be EVENT_TYPE,EVENT_VALUE, but it reads "
                                           r"'_email.open' and 1 more cell, not shown \(2 cells, separated by "
                                           r"commas\)"):
        ScoringModel.load(path)


def test_entries_must_be_type_equals_value():
    with pytest.raises(ScoringError, match=r"s, entry 2: '_email.click' is not EVENT_TYPE=VALUE"):
        ScoringModel.from_entries(["_email.open=1", "_email.click"], source="s")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("config:\n  aws:region: eu-west-1\n", "no `engagement-loop:scoring` under `config:`; add it"),
        ("config:\n  engagement-loop:scoring:\n    _email.open: x\n",
         "Pulumi.bad.yaml, config engagement-loop:scoring, key '_email.open': value 'x'"),
        ("config:\n  engagement-loop:scoring: 5\n", "expected a list of EVENT_TYPE=VALUE entries"),
        ("config: [\n", "not valid YAML"),
    ],
)
def test_stack_file_problems_name_the_file_and_key(tmp_path, text, expected):
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(text)
    with pytest.raises(ScoringError) as raised:
        ScoringModel.load(path)
    assert str(path) in str(raised.value) and expected in str(raised.value)


def test_unknown_file_kinds_and_missing_files_are_explained(tmp_path):
    (tmp_path / "scoring.json").write_text("{}")
    with pytest.raises(ScoringError, match="unknown scoring file type '.json'"):
        ScoringModel.load(tmp_path / "scoring.json")
    with pytest.raises(ScoringError, match="no such file"):
        ScoringModel.load(tmp_path / "missing.csv")


def test_a_model_built_directly_is_validated_too():
    with pytest.raises(ScoringError, match="ScoringModel, key '_custom.recommender'"):
        ScoringModel({"_custom.recommender": 1.0})
    assert ScoringModel({" _email.open ": 2}).values == {"_email.open": 2.0}


def test_event_weights_scale_positive_values_to_the_largest_and_zero_the_rest():
    model = ScoringModel.from_mapping({"_email.open": 50, "_email.click": 100, "_email.unsubscribe": -200,
                                       "_email.send": 0}, source="test")
    assert model.event_weights() == {"_email.open": 0.5, "_email.click": 1.0, "_email.unsubscribe": 0.0,
                                     "_email.send": 0.0}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("EVENT_TYPE,EVENT_VALUE\n_email.open,50\n_email.click,100\n", {"_email.open": 50.0, "_email.click": 100.0}),
        ("EVENT_TYPE;EVENT_VALUE\n_email.open;50\n_email.click;100\n", {"_email.open": 50.0, "_email.click": 100.0}),
        ("event_type\tevent_value\n_email.open\t50\n", {"_email.open": 50.0}),
        ("\ufeffEVENT_TYPE;EVENT_VALUE\r\n_email.open;0,5\r\n_email.click;1\r\n", {"_email.open": 0.5, "_email.click": 1.0}),
        ('EVENT_TYPE,EVENT_VALUE\n"odd;type",2\n', {"odd;type": 2.0}),
        ('EVENT_TYPE;EVENT_VALUE\n"odd,type";2\n', {"odd,type": 2.0}),
    ],
    ids=["comma", "semicolon", "tab", "bom-crlf-decimal-comma", "quoted-semicolon", "quoted-comma"],
)
def test_scoring_csv_as_spreadsheets_save_it(tmp_path, text, expected):
    path = tmp_path / "scoring.csv"
    path.write_bytes(text.encode("utf-8"))
    assert dict(ScoringModel.load(path).values) == expected


def test_a_scoring_header_that_cannot_be_read_is_shown_as_an_excerpt(tmp_path):
    path = tmp_path / "scoring.csv"
    path.write_text("SECRET_TOKEN=" + "s" * 500 + "\n")
    with pytest.raises(ScoringError) as raised:
        ScoringModel.load(path)
    (problem,) = raised.value.problems
    assert "but it reads 'SECRET_TOKEN…' (1 cell, separated by commas)" in problem and "sss" not in problem


def test_scoring_hints_show_the_list_form(tmp_path):
    path = tmp_path / "Pulumi.x.yaml"
    path.write_text("config:\n  aws:region: eu-west-1\n")
    with pytest.raises(ScoringError) as raised:
        ScoringModel.load(path)
    assert "pulumi config set --path 'scoring[0]' _email.open=50" in str(raised.value)
    with pytest.raises(ScoringError) as raised:
        ScoringModel.from_entries([], source="scoring")
    assert "pulumi config set --path 'scoring[0]' _email.open=50" in str(raised.value)
