"""The studio's web layer through Starlette's test client: the security rules (Host, token, content type, GET
changes nothing), the edit, save and deploy flows. The page itself is driven in Chromium by
tests/e2e/test_studio_browser.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from cli.studio.app import Deployer, StudioSettings, create_app

from .conftest import DEMO

TOKEN = "test-token"
BASE = "http://127.0.0.1:8750"
HEADERS = {"X-CSRF-Token": TOKEN}


@pytest.fixture()
def sheet(tmp_path) -> Path:
    path = tmp_path / "demo.csv"
    shutil.copyfile(DEMO, path)
    return path


def client(path: Path, sample=None, **settings: Any) -> TestClient:
    return TestClient(create_app(StudioSettings(path, 8750, sample=sample, token=TOKEN, **settings)), base_url=BASE)


def edit(c: TestClient, **operation: Any):
    return c.post("/api/edit", json=operation, headers=HEADERS)


def target_c(state: dict[str, Any]) -> int:
    return state["columns"].index("Target-C")


# --- security ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example:8750", "127.0.0.1:9999", "127.0.0.1", "localhost.evil:8750",
                                  "0.0.0.0:8750"])
def test_a_foreign_host_header_is_refused(sheet, host):
    c = client(sheet)
    assert c.get("/", headers={"Host": host}).status_code == 400
    assert c.post("/api/save", json={}, headers={**HEADERS, "Host": host}).status_code == 400


@pytest.mark.parametrize("host", ["127.0.0.1:8750", "localhost:8750", "LOCALHOST:8750"])
def test_the_bound_address_is_served(sheet, host):
    assert client(sheet).get("/api/state", headers={"Host": host}).status_code == 200


def test_the_page_carries_the_token_and_the_security_headers(sheet):
    answer = client(sheet).get("/")
    assert answer.status_code == 200
    assert f'<meta name="csrf-token" content="{TOKEN}">' in answer.text
    assert "<script>" not in answer.text  # the script is a file, so the CSP needs no 'unsafe-inline'
    assert answer.headers["content-security-policy"].startswith("default-src 'self'; frame-ancestors 'none'")
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store"
    assert client(sheet).get("/static/studio.js").headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize("headers", [{}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}])
@pytest.mark.parametrize("route", ["/api/edit", "/api/save", "/api/deploy/preview", "/api/deploy/up"])
def test_a_post_without_the_token_is_refused(sheet, headers, route):
    before = sheet.read_bytes()
    c = client(sheet)
    edit(c, op="set_cell", row=0, column=6, value="9")  # a change that a save would write
    answer = c.post(route, json={"op": "delete_row", "row": 0}, headers=headers)
    assert answer.status_code == 403
    assert "X-CSRF-Token" in answer.json()["error"]
    assert sheet.read_bytes() == before
    assert len(c.get("/api/state").json()["rows"]) == 4


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"])
def test_a_post_that_is_not_json_is_refused(sheet, content_type):
    c = client(sheet)
    answer = c.post("/api/edit", content=b'{"op": "delete_row", "row": 0}',
                    headers={**HEADERS, "Content-Type": content_type})
    assert answer.status_code == 403
    assert len(c.get("/api/state").json()["rows"]) == 4


def test_get_changes_nothing(sheet):
    c = client(sheet)
    edit(c, op="set_cell", row=0, column=6, value="9")
    stat = sheet.stat()
    for path in ("/", "/api/state", "/api/sheet.csv", "/static/studio.js", "/static/studio.css"):
        assert c.get(path).status_code == 200
    for path in ("/api/save", "/api/edit", "/api/deploy/preview", "/api/deploy/up"):
        assert c.get(path).status_code == 405
    assert sheet.stat().st_mtime_ns == stat.st_mtime_ns
    assert os.listdir(sheet.parent) == ["demo.csv"]


# --- editing -----------------------------------------------------------------------------------------------


def test_a_bad_cell_gets_rules_checks_message_at_its_cell_and_the_other_rows_keep_their_preview(sheet, sample):
    c = client(sheet, sample)
    first = c.get("/api/state").json()
    assert set(first["previews"]) == {"push-regular", "welcome-second-send", "mid-october-spender", "active-week"}
    column = target_c(first)
    state = edit(c, op="set_cell", row=0, column=column, value="abc").json()["state"]
    problems = state["rows"][0]["problems"]
    assert [p["text"] for p in problems] == ["row 2, column Target-C: 'abc' is not a whole number (write a count, e.g. 3)"]
    assert problems[0]["column_index"] == column
    assert state["lines"][0] == "demo.csv: " + problems[0]["text"]
    assert not state["accepted"]
    assert state["rows"][0]["rule_id"] is None
    assert set(state["previews"]) == {"welcome-second-send", "mid-october-spender", "active-week"}
    assert [c["kind"] for c in state["diff_disk"]] == ["removed"]
    assert state["dirty"]


@pytest.mark.parametrize("operation, rows", [
    ({"op": "add_row"}, 5), ({"op": "copy_row", "row": 0}, 5), ({"op": "delete_row", "row": 1}, 3),
    ({"op": "move_row", "row": 0, "to": 3}, 4)])
def test_row_operations(sheet, operation, rows):
    state = edit(client(sheet), **operation).json()["state"]
    assert len(state["rows"]) == rows


def test_copy_keeps_rule_ids_stable(sheet):
    state = edit(client(sheet), op="copy_row", row=0).json()["state"]
    assert [row["rule_id"] for row in state["rows"][:2]] == ["push-regular", "push-regular-copy"]
    assert [c["kind"] for c in state["diff_disk"]] == ["added"]


@pytest.mark.parametrize("operation, status, words", [
    ({"op": "delete_row", "row": 9}, 422, "there is no row 11"),
    ({"op": "set_cell", "row": 0, "column": 6, "value": 3}, 400, "value: expected text"),
    ({"op": "explode"}, 400, "unknown edit"),
    ({"op": "add_column", "column": "RuleId"}, 422, "already has a RuleId column")])
def test_a_refused_edit_says_why_and_changes_nothing(sheet, operation, status, words):
    c = client(sheet)
    answer = edit(c, **operation)
    assert answer.status_code == status
    assert words in answer.json()["error"]
    assert not c.get("/api/state").json()["dirty"]


# --- saving ------------------------------------------------------------------------------------------------


def test_save_writes_the_sheet(sheet):
    c = client(sheet)
    edit(c, op="set_cell", row=0, column=6, value="5")
    answer = c.post("/api/save", json={}, headers=HEADERS)
    assert answer.status_code == 200
    assert answer.json()["result"] == f"saved {sheet.resolve()}"
    assert sheet.read_text() == DEMO.read_text().replace("daily_deal,at_least,3,", "daily_deal,at_least,5,", 1)
    state = answer.json()["state"]
    assert not state["dirty"] and state["diff_disk"] == []


def test_save_refuses_a_file_changed_on_disk(sheet):
    c = client(sheet)
    edit(c, op="set_cell", row=0, column=6, value="5")
    sheet.write_text(DEMO.read_text() + "aggregator,x,na,na,at_least,1,na,999,,no,9999-99-99,9999-99-99,\n")
    elsewhere = sheet.read_bytes()
    answer = c.post("/api/save", json={}, headers=HEADERS)
    assert answer.status_code == 409
    assert "changed on disk since it was opened" in answer.json()["error"]
    assert sheet.read_bytes() == elsewhere
    assert answer.json()["state"]["dirty"]


def test_a_missing_sheet_is_a_new_one_created_on_save(tmp_path):
    path = tmp_path / "new.csv"
    c = client(path)
    state = c.get("/api/state").json()
    assert state["new_sheet"] and state["rows"] == [] and state["header"][0] == "RuleId"
    edit(c, op="add_row")
    assert c.post("/api/save", json={}, headers=HEADERS).status_code == 200
    assert path.read_text().startswith("RuleId,RuleType,")
    assert not c.get("/api/state").json()["new_sheet"]


# --- deploying ---------------------------------------------------------------------------------------------


class FakeDeployer(Deployer):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def published_rules(self, stack):
        from cli.studio.sheet_model import SheetModel

        return SheetModel.from_csv(DEMO.read_text()).check().rules.rules[:2]

    def preview(self, stack, sheet):
        self.calls.append(("preview", stack, sheet.read_text()))
        return {"config_changes": {"engagement-loop:rulesSheet": {"old": "rules/sample.csv", "new": "x"}},
                "change_summary": {"same": 40, "update": 1}}

    def up(self, stack, sheet):
        self.calls.append(("up", stack, sheet.read_text()))
        return {"config_changes": {}, "change_summary": {"update": 1}, "result": "succeeded"}


def test_deploy_needs_a_stack(sheet):
    answer = client(sheet).post("/api/deploy/preview", json={}, headers=HEADERS)
    assert answer.status_code == 400 and "--stack" in answer.json()["error"]


def test_deploy_previews_then_runs_up_only_on_confirmation(sheet):
    deployer = FakeDeployer()
    c = client(sheet, stack="dev", deployer=deployer)
    state = c.get("/api/state").json()
    assert [change["kind"] for change in state["diff_stack"]] == ["added", "added"]  # against the published two
    preview = c.post("/api/deploy/preview", json={}, headers=HEADERS).json()["result"]
    assert preview["change_summary"] == {"same": 40, "update": 1}
    assert [call[0] for call in deployer.calls] == ["preview"]
    assert c.post("/api/deploy/up", json={"preview_id": "guess"}, headers=HEADERS).status_code == 409
    done = c.post("/api/deploy/up", json={"preview_id": preview["preview_id"]}, headers=HEADERS)
    assert done.status_code == 200 and done.json()["result"]["result"] == "succeeded"
    assert [call[0] for call in deployer.calls] == ["preview", "up"]
    # A confirmation is used once.
    assert c.post("/api/deploy/up", json={"preview_id": preview["preview_id"]}, headers=HEADERS).status_code == 409


def test_deploy_refuses_an_unsaved_or_bad_sheet_and_a_sheet_changed_since_the_preview(sheet):
    deployer = FakeDeployer()
    c = client(sheet, stack="dev", deployer=deployer)
    preview_id = c.post("/api/deploy/preview", json={}, headers=HEADERS).json()["result"]["preview_id"]
    edit(c, op="set_cell", row=0, column=6, value="5")
    answer = c.post("/api/deploy/up", json={"preview_id": preview_id}, headers=HEADERS)
    assert answer.status_code == 409 and "save the sheet first" in answer.json()["error"]
    c.post("/api/save", json={}, headers=HEADERS)
    answer = c.post("/api/deploy/up", json={"preview_id": preview_id}, headers=HEADERS)
    assert answer.status_code == 409 and "changed since the deploy preview" in answer.json()["error"]
    edit(c, op="set_cell", row=0, column=6, value="abc")
    c.post("/api/save", json={}, headers=HEADERS)
    answer = c.post("/api/deploy/preview", json={}, headers=HEADERS)
    assert answer.status_code == 422 and "1 problem(s)" in answer.json()["error"]
    assert [call[0] for call in deployer.calls] == ["preview"]


def test_deploy_without_the_pulumi_cli_says_so_and_offers_the_csv(sheet, monkeypatch):
    """The real `automation.py` on the repository's dev stack: validated, then no CLI (as on these machines)."""
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    project = Path(__file__).resolve().parents[3]
    before = sorted(path.name for path in (project / "rules").iterdir())
    c = client(sheet, stack="dev")
    assert c.get("/api/state").json()["stack_error"] is None
    answer = c.post("/api/deploy/preview", json={}, headers=HEADERS)
    assert answer.status_code == 503
    body = answer.json()
    assert body["pulumi_missing"] and "the Pulumi CLI is not installed" in body["error"]
    assert body["csv"] == str(sheet.resolve())
    assert c.get("/api/sheet.csv").text == DEMO.read_text()
    assert sorted(path.name for path in (project / "rules").iterdir()) == before


def test_up_refuses_a_sheet_changed_on_disk_after_the_preview(sheet):
    """Review (issue 13): `automation` reads the sheet by path, so a file edited on disk after the preview (a
    spreadsheet saving over it) was deployed although nobody had seen it."""
    deployer = FakeDeployer()
    c = client(sheet, stack="dev", deployer=deployer)
    preview_id = c.post("/api/deploy/preview", json={}, headers=HEADERS).json()["result"]["preview_id"]
    sheet.write_text(sheet.read_text().replace("at_least,3", "at_least,1", 1))
    answer = c.post("/api/deploy/up", json={"preview_id": preview_id}, headers=HEADERS)
    assert answer.status_code == 409 and "changed on disk since the studio opened or saved it" in answer.json()["error"]
    assert [call[0] for call in deployer.calls] == ["preview"]
    assert c.post("/api/deploy/preview", json={}, headers=HEADERS).status_code == 409  # nor previewed unseen


def test_a_new_sheet_too_large_to_save_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """Review (issue 13): the first save of a new sheet wrote an oversize file, reported a failure, and every later
    save then refused to replace "a file that appeared"."""
    from cli.studio import app

    monkeypatch.setattr(app, "MAX_SHEET_BYTES", 400)
    path = tmp_path / "new.csv"
    c = client(path)
    for n in range(3):
        assert edit(c, op="add_row").status_code == 200
        assert edit(c, op="set_cell", row=n, column="EventName", value="x" * 100).status_code == 200
    answer = c.post("/api/save", json={}, headers=HEADERS)
    assert answer.status_code == 409 and "more than the 400" in answer.json()["error"] and not path.exists()
    edit(c, op="delete_row", row=2)
    edit(c, op="delete_row", row=1)
    assert c.post("/api/save", json={}, headers=HEADERS).status_code == 200 and path.exists()


def test_the_session_cannot_grow_a_sheet_it_could_not_save(sheet, monkeypatch):
    """Review (issue 13): blank rows were unbounded, and no edit looked at the sheet's total size."""
    from cli.studio import sheet_model

    c = client(sheet)
    monkeypatch.setattr(sheet_model, "MAX_SHEET_BYTES", len(DEMO.read_bytes()) + 50)
    answer = edit(c, op="set_cell", row=0, column="AttributeValue", value="v" * 200)
    assert answer.status_code == 422 and "would make the sheet" in answer.json()["error"]
    monkeypatch.setattr(sheet_model, "MAX_SHEET_BYTES", 10 ** 7)
    monkeypatch.setattr(sheet_model, "MAX_BLANK_ROWS", 3)
    rows = len(c.get("/api/state").json()["rows"])
    statuses = [edit(c, op="add_row").status_code for _ in range(sheet_model.MAX_RULES + 5 - rows)]
    assert statuses.count(200) == sheet_model.MAX_RULES + 3 - rows and statuses[-1] == 422


def test_a_body_that_nests_too_deeply_or_announces_too_much_is_refused_cleanly(sheet):
    c = client(sheet)
    answer = c.post("/api/edit", content=b"[" * 100_000, headers={**HEADERS, "Content-Type": "application/json"})
    assert answer.status_code == 400 and "nests too deeply" in answer.json()["error"]
    answer = c.post("/api/edit", content=b"{}", headers={**HEADERS, "Content-Type": "application/json",
                                                         "Content-Length": str(10 ** 9)})
    assert answer.status_code == 413


def test_values_a_spreadsheet_would_run_as_formulas_are_never_suggested():
    """Review (issue 13): attribute values come from end users' devices; one click must not put `=HYPERLINK(…)`
    into a sheet marketers open in a spreadsheet."""
    from cli.studio.suggestions import suggest
    from functions.events.canonical import CanonicalEvent, EventSource

    events = [CanonicalEvent(event_id=f"e{n}", source=EventSource.APP, event_type="click", event_time_ms=n,
                             arrival_time_ms=n, user_id="u", attributes={"ref": value})
              for n, value in enumerate(["=HYPERLINK(\"http://x\")", "+1", "-2", "@sum", "\tx", "home", "home"])]
    [seen] = suggest(events).event_types
    [attribute] = seen.attributes
    assert [value.value for value in attribute.values] == ["home"]


def test_an_edit_from_a_tab_that_missed_a_change_is_refused_not_applied_to_the_wrong_row(sheet):
    """Review (issue 13): two tabs share the sheet and name rows by position; a stale tab's edit after the other
    tab deleted a row landed on the row that moved up."""
    c = client(sheet)
    seen = c.get("/api/state").json()
    assert edit(c, op="delete_row", row=0, version=seen["version"]).status_code == 200  # tab 1
    stale = edit(c, op="set_cell", row=0, column="Target-C", value="9", version=seen["version"])  # tab 2
    assert stale.status_code == 409 and "changed in another tab" in stale.json()["error"]
    latest = stale.json()["state"]
    assert latest["version"] == seen["version"] + 1 and len(latest["rows"]) == len(seen["rows"]) - 1
    assert latest["rows"][0]["cells"] == seen["rows"][1]["cells"]  # untouched
    assert edit(c, op="set_cell", row=0, column="Target-C", value="9", version=latest["version"]).status_code == 200


# --- the command -------------------------------------------------------------------------------------------


def test_the_command_refuses_another_address_without_allow_remote(capsys):
    from cli.__main__ import main

    assert main(["studio", "--host", "192.168.1.20", "--no-browser"]) == 2
    assert "refusing to bind 192.168.1.20" in capsys.readouterr().err
    # Every address at once cannot pass the Host check: refused even with --allow-remote.
    assert main(["studio", "--host", "0.0.0.0", "--allow-remote", "--no-browser"]) == 2
    assert "give one address" in capsys.readouterr().err


def test_the_command_says_what_is_wrong_with_the_sample(tmp_path, capsys):
    from cli.__main__ import main

    assert main(["studio", "--events", str(tmp_path / "none.jsonl"), "--no-browser"]) == 2
    assert "none.jsonl: no such file" in capsys.readouterr().err
