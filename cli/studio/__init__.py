"""The rules studio's logic core: pure functions a local web page calls (docs/studio.md).

- `sheet_model`: the sheet as rows of cells, edited by operations that return a new model, checked with the
  sheet's own parser (`functions/rules/sheet.py`), written back as CSV;
- `preview`: each valid rule's audience on sample events, by the memory engine, cached per rule;
- `suggestions`: event types, attribute names and values seen in the sample, with counts;
- `diff`: what changed against the sheet on disk or a stack's published rules, and which changes reset counters;
- `save`: writing the CSV back only over the file that was opened, unchanged since.

No web framework here: the web layer (Starlette) turns these results into pages and JSON.
"""
