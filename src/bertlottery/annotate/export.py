"""Write the labelled maps of a maps folder in two layouts.

``OUT_DIR/``::

    export.json                  where it came from; counts per kind and label; the layouts below
    toolkit/                     a maps folder of its own (index.json, maps/<example>.npz) holding the
                                 labelled examples only, plus labels.json: what the toolkit's pattern
                                 classifier trains on
    paper/<kind>/<name>.npy      one float32 [query, key] map per labelled item ([T, T], T its tokens)
    paper/<kind>/labels.txt      the paper's labels file: one line per label, ``label = name1, name2, ...``
    paper/<kind>/labels.tsv      the same as ``name<TAB>label`` lines (the layout of the released code's
                                 norm-based set)

``OUT_DIR`` follows the toolkit's rule for output folders (`bertlottery.runs.prepare_output_dir`):
new, empty, or an export written before; anything else only with ``overwrite``, which writes the three
entries above into it and keeps everything else. An export replaces exactly those entries, each by a
rename, and writes ``export.json`` last: a folder with ``export.json`` holds one whole export.

Both layouts are what ``bertlottery.attention.classifier.load_labelled`` reads: give it
``OUT_DIR/toolkit`` or ``OUT_DIR/paper/<kind>`` (the maps beside their labels file, as it expects).

Maps labelled "unsure" are in neither layout (they are no pattern: no classifier trains on them and
no agreement counts them); ``export.json`` gives their number as ``n_unsure``.

``<name>`` is ``<example>_L<layer>_H<head>`` (``ex017_L03_H05``). One folder per kind because the paper
trained one classifier on raw maps and another on norm-based ones. The released code's reader of
``labels.txt`` folds every label containing "vertical" into "vertical" (it merged the sub-types of
vertical attention of Kovaleva et al.'s set); a reader that copies that rule would fold
"vertical+diagonal" into "vertical" too, so read ``labels.tsv`` or keep the five labels apart.

>>> summary = export_labelled("runs/attention/maps", "runs/attention/labelled")   # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import runs
from ..attention import maps_format as fmt
from ..errors import UserError
from .store import LABELS, MapsStore

__all__ = ["EXPORT_FORMAT", "export_labelled", "paper_name"]

EXPORT_FORMAT = "bertlottery-labelled-attention/1"
SUMMARY_FILE = "export.json"
KIND = "annotate-export"  # the kind of output folder an export is (`bertlottery.runs.prepare_output_dir`)


def paper_name(example: str, layer: int, head: int) -> str:
    """File stem of one map in the paper layout: ``paper_name("ex017", 3, 5) == "ex017_L03_H05"``."""
    return f"{example}_L{layer:02d}_H{head:02d}"


def export_labelled(maps_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                    overwrite: bool = False) -> dict[str, Any]:
    """Write every labelled map of ``maps_dir`` to ``out_dir`` (see the module docstring).

    ``out_dir`` must be new, empty or an earlier export, unless ``overwrite`` (see the module docstring).
    Returns the summary also written to ``export.json``.
    """
    store = MapsStore(maps_dir)
    out_dir = Path(out_dir).expanduser()
    if out_dir.resolve() == store.root or store.root.is_relative_to(out_dir.resolve()):
        raise UserError(f"--export {out_dir} would write into the maps folder itself; choose another folder.")
    answered = store.labels()
    labels = {item_id: label for item_id, label in answered.items() if label != fmt.UNSURE}
    if not labels:
        unsure = f" ({len(answered)} marked unsure, which are not exported)" if answered else ""
        raise UserError(f"{store.root} has no labels yet{unsure}; label some maps with `bertlottery annotate "
                        f"{maps_dir}` first.")
    runs.prepare_output_dir(out_dir, KIND, overwrite=overwrite)
    by_example: dict[str, dict[str, str]] = defaultdict(dict)
    for item_id, label in labels.items():
        by_example[store.item(item_id).example][item_id] = label
    examples = [e for e in store.index.examples if e.id in by_example]  # index order

    counts: dict[str, Counter] = {kind: Counter() for kind in store.kinds}
    with _entries_replaced(out_dir) as scratch:
        toolkit = scratch / "toolkit"
        (toolkit / fmt.MAPS_SUBDIR).mkdir(parents=True)
        for kind in store.kinds:
            (scratch / "paper" / kind).mkdir(parents=True)
        lines: dict[str, dict[str, list[str]]] = {kind: defaultdict(list) for kind in store.kinds}
        for example in examples:
            shutil.copyfile(store.map_file(example.id), toolkit / fmt.MAPS_SUBDIR / f"{example.id}.npz")
            for item_id in by_example[example.id]:
                item, label = store.item(item_id), labels[item_id]
                name = paper_name(item.example, item.layer, item.head)
                np.save(scratch / "paper" / item.kind / f"{name}.npy", store.load_map(item))
                lines[item.kind][label].append(name)
                counts[item.kind][label] += 1
        runs.write_json(toolkit / fmt.INDEX_FILE, replace(store.index, examples=tuple(examples)).to_json())
        fmt.write_labels(toolkit, labels)
        for kind in store.kinds:
            folder = scratch / "paper" / kind
            (folder / "labels.txt").write_text("".join(
                f"{label} = {', '.join(lines[kind][label])}\n" for label in LABELS if lines[kind][label]))
            (folder / "labels.tsv").write_text("".join(
                f"{name}\t{label}\n" for label in LABELS for name in lines[kind][label]))
        summary = {
            "format": EXPORT_FORMAT,
            "source": str(store.root),
            "model": store.index.model,
            "task": store.index.task,
            "weights": store.index.weights,
            "labels": list(LABELS),
            "n_labelled": len(labels),
            "n_unsure": len(answered) - len(labels),
            "n_examples": len(examples),
            "counts": {kind: {label: counts[kind][label] for label in LABELS} for kind in store.kinds},
            "layouts": {"toolkit": "toolkit/", "paper": {kind: f"paper/{kind}/" for kind in store.kinds}},
        }
        runs.write_json(scratch / SUMMARY_FILE, summary)
    return summary


@contextmanager
def _entries_replaced(out_dir: Path) -> Iterator[Path]:
    """Yield an empty scratch folder inside ``out_dir``; at the end, each of its entries replaces the
    entry of the same name in ``out_dir`` (``export.json`` last), and nothing else there is touched.

    Written by hand because the folder itself may not be replaced (it may hold a user's files, see the
    module docstring). An error while writing removes the scratch folder and leaves ``out_dir`` as it
    was; one while replacing leaves no ``export.json`` (the folder never looks complete) and the old
    entries in a hidden ``.old-*`` folder beside them.
    """
    scratch = Path(tempfile.mkdtemp(prefix=".partial-", dir=out_dir))
    try:
        yield scratch
        trash = Path(tempfile.mkdtemp(prefix=".old-", dir=out_dir))
        names = sorted(p.name for p in scratch.iterdir())
        names.sort(key=lambda name: name == SUMMARY_FILE)  # the summary last: it marks a whole export
        if (out_dir / SUMMARY_FILE).exists():
            os.replace(out_dir / SUMMARY_FILE, trash / SUMMARY_FILE)
        for name in names:
            target = out_dir / name
            if target.exists() or target.is_symlink():
                os.replace(target, trash / name)  # set aside, deleted only once every new entry is in
            os.replace(scratch / name, target)
        shutil.rmtree(trash)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
