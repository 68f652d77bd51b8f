"""``bertlottery annotate MAPS_DIR``: label attention maps by hand in a local web page.

Light at import time: the server, numpy and the page load only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "cmd_annotate"]


def register(sub) -> None:
    p = sub.add_parser(
        "annotate",
        help="label attention maps by hand (diagonal, block, vertical, vertical+diagonal, heterogeneous, "
             "or unsure)",
        description="Serve a local page (127.0.0.1 only) that shows one attention map at a time and saves "
                    "each label to MAPS_DIR/labels.json at once; reloading resumes at the first unlabelled "
                    "map. Maps come in a shuffled order (a head's raw and norm maps never one after the "
                    "other) whose seed is recorded in MAPS_DIR/annotate.json, so every start shows the same "
                    "order. Maps labelled 'unsure' are saved but never exported. With --export, write the "
                    "labelled set instead and exit.",
    )
    p.add_argument("maps_dir", metavar="MAPS_DIR", help="a folder written by `bertlottery attention maps`")
    p.add_argument("--port", type=int, default=None,
                   help="port on 127.0.0.1 (default 8765, or any free one if 8765 is taken; 0 = any free one)")
    p.add_argument("--kind", action="append", dest="kinds", metavar="KIND",
                   help="label only this map kind (raw or norm; repeatable; default all)")
    order = p.add_mutually_exclusive_group()
    order.add_argument("--shuffle-seed", type=int, default=None,
                       help="visit the maps in this seed's shuffled order, and record it for the next start "
                            "(default: the seed recorded in MAPS_DIR/annotate.json, or a new one)")
    order.add_argument("--file-order", action="store_true",
                       help="visit the maps in the folder's order (example, layer, head, kind) instead of shuffled")
    p.add_argument("--export", metavar="OUT_DIR",
                   help="write the labelled maps (toolkit and paper layouts) to OUT_DIR and exit")
    p.add_argument("--export-dir", metavar="DIR",
                   help="where the page's Export button writes (default MAPS_DIR/export; an earlier export "
                        "there is replaced)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --export (or the page's Export) write into a folder that is not an earlier export; "
                        "its entries of the same names are replaced, nothing else in it is deleted")
    p.add_argument("--open", action="store_true", help="also open the page in the default browser")
    p.set_defaults(func=cmd_annotate)


def cmd_annotate(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from .export import export_labelled
    from .server import DEFAULT_PORT, make_server
    from .store import ORDER_FILE, MapsStore, order_seed

    if args.export:
        summary = export_labelled(args.maps_dir, args.export, overwrite=args.overwrite)
        per_kind = ", ".join(f"{kind} {sum(counts.values())}" for kind, counts in summary["counts"].items())
        unsure = f"; {summary['n_unsure']} marked unsure left out" if summary["n_unsure"] else ""
        print(f"wrote {summary['n_labelled']} labelled maps ({per_kind}) to {args.export}{unsure}")
        return 0
    if args.port is not None and not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {args.port}.")
    store = MapsStore(args.maps_dir, kinds=args.kinds)  # checks the folder before anything is written to it
    if not args.file_order:
        store = MapsStore(args.maps_dir, kinds=args.kinds, shuffle_seed=order_seed(store.root, args.shuffle_seed))
    export_dir = Path(args.export_dir) if args.export_dir else store.root / "export"
    if args.port is None:
        try:
            server = make_server(store, export_dir, DEFAULT_PORT, overwrite=args.overwrite)
        except UserError:
            server = make_server(store, export_dir, 0, overwrite=args.overwrite)
    else:
        server = make_server(store, export_dir, args.port, overwrite=args.overwrite)
    print(f"{store.n_labelled()} of {len(store.items)} maps labelled in {store.root}")
    if store.shuffle_seed is None:
        print("order: the folder's (example, layer, head, kind)")
    else:
        print(f"order: shuffled with seed {store.shuffle_seed} (recorded in {store.root / ORDER_FILE}; "
              "--file-order for the folder's order)")
    print(f"annotate at {server.url}  (Ctrl-C to stop; labels are saved after every click)", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(f"stopped; labels are in {store.root / 'labels.json'}")
    finally:
        server.server_close()
    return 0
