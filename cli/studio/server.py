"""`python -m cli studio`: the rules studio, a local web page to edit, check, preview, save and deploy the rules
sheet (docs/studio.md). Binds 127.0.0.1 unless `--allow-remote` is given with another `--host`."""

from __future__ import annotations

import argparse
import socket
import sys
import webbrowser
from pathlib import Path

LOCAL_HOSTS = ("127.0.0.1", "localhost")
DEFAULT_PORT = 8750
DEFAULT_RULES = Path("rules/demo.csv")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "studio", help="edit, check and preview the rules sheet in a local web page",
        description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES, metavar="SHEET.csv",
                        help=f"the sheet to edit (default {DEFAULT_RULES}); a missing file is a new sheet, "
                             "created on the first save")
    sample = parser.add_mutually_exclusive_group()
    sample.add_argument("--events", type=Path, metavar="FILE",
                        help="sample events (JSON lines, as `rules replay` reads them) for the preview and "
                             "suggestions")
    sample.add_argument("--lake", type=Path, metavar="DIR", help="sample events from a lake folder instead")
    parser.add_argument("--stack", metavar="NAME", help="diff against this stack's published rules; deploy to it")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a --host other than 127.0.0.1/localhost (anyone who can reach it can edit "
                             "and deploy with the token in the page)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.set_defaults(func=studio_command)


def studio_command(args: argparse.Namespace) -> int:
    err = sys.stderr
    if args.host in ("0.0.0.0", "::", ""):
        print(f"studio: refusing to bind {args.host or 'every address'}: requests must name the address the studio "
              "listens on (its Host check stops DNS rebinding), so give one address, e.g. --host 192.168.1.20",
              file=err)
        return 2
    if args.host not in LOCAL_HOSTS and not args.allow_remote:
        print(f"studio: refusing to bind {args.host}: the studio can save and deploy, so it listens on 127.0.0.1 "
              "only (pass --allow-remote to bind another address)", file=err)
        return 2
    if args.host not in LOCAL_HOSTS:
        print(f"studio: warning: binding {args.host}: anyone who can reach it and read the page can edit and deploy",
              file=err)
    import uvicorn

    from cli.studio.app import StudioSettings, create_app
    from cli.studio.preview import SampleError, load_sample
    from cli.studio.save import SaveRefused
    from cli.studio.sheet_model import EditRefused

    sample = None
    source = args.events or args.lake
    if source is not None:
        print(f"studio: reading {source}…", file=err)
        try:
            sample = load_sample(source)
        except SampleError as error:
            print(f"studio: {error}", file=err)
            return 2
        print(f"studio: {sample.records:,} records ({sample.rejected:,} rejected by the normaliser)", file=err)
    if not args.rules.exists():
        print(f"studio: {args.rules} does not exist: starting a new sheet, written there on the first save", file=err)
    try:
        sock = socket.create_server((args.host, args.port))
    except OSError as error:
        print(f"studio: cannot listen on {args.host}:{args.port}: {error.strerror or error}", file=err)
        return 2
    port = sock.getsockname()[1]
    try:
        app = create_app(StudioSettings(args.rules, port, args.host, sample, args.stack))
    except (SaveRefused, EditRefused) as error:
        sock.close()
        print(f"studio: {error}", file=err)
        return 2
    url = f"http://{'127.0.0.1' if args.host == 'localhost' else args.host}:{port}/"
    print(f"studio: {url} (Ctrl-C stops it)", file=err)
    if not args.no_browser:
        webbrowser.open(url)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    return 0
