"""The record of a batch a person can browse: ``summary.csv`` and ``index.html`` in the output folder.

One row per case: status (done, skipped: done by an earlier run, failed), volumes per region (WT,
TC, ET) and per label (NCR, ED; ET is both) in mL, Dice per region when the case folder holds
expert labels, the model, seconds, warnings, the one-line error of a failed case, and the files
written. The page is one static file (no server, no framework, a few lines of plain JavaScript to
sort the table by a column) showing every case's QC picture beside its figures, failures first.
Both are written atomically; the CSV is read back by a re-run with ``--skip-existing``.
"""
from __future__ import annotations

import csv
import html
import io
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from .atomic import write_text

VOLUMES = ("WT", "TC", "ET", "NCR", "ED")
DICE = ("WT", "TC", "ET")
COLUMNS = (("case", "status") + tuple(f"{v}_ml" for v in VOLUMES) + tuple(f"dice_{r}" for r in DICE)
           + ("model", "seconds", "warnings", "error", "labels", "qc_picture", "dicom_seg"))
_WARNING_SEPARATOR = " | "


@dataclass
class Row:
    case: str
    status: str                                            # done, skipped or failed
    volumes_ml: Dict[str, float] = field(default_factory=dict)
    dice: Dict[str, float] = field(default_factory=dict)
    model: str = ""
    seconds: Optional[float] = None
    warnings: List[str] = field(default_factory=list)
    error: str = ""
    files: Dict[str, str] = field(default_factory=dict)    # labels, qc_picture, dicom_seg: names inside OUT

    def as_csv(self) -> Dict[str, str]:
        out = {"case": self.case, "status": self.status, "model": self.model, "error": self.error,
               "seconds": "" if self.seconds is None else f"{self.seconds:.1f}",
               "warnings": _WARNING_SEPARATOR.join(self.warnings)}
        out.update({f"{v}_ml": f"{self.volumes_ml[v]:.3f}" for v in VOLUMES if v in self.volumes_ml})
        out.update({f"dice_{r}": f"{self.dice[r]:.4f}" for r in DICE if r in self.dice})
        out.update({k: self.files.get(k, "") for k in ("labels", "qc_picture", "dicom_seg")})
        return out

    @classmethod
    def from_csv(cls, rec: Dict[str, str]) -> "Row":
        def numbers(fmt: str, keys: Sequence[str]) -> Dict[str, float]:
            return {k: float(rec[fmt.format(k)]) for k in keys if rec.get(fmt.format(k))}

        return cls(rec["case"], rec.get("status") or "done", numbers("{}_ml", VOLUMES), numbers("dice_{}", DICE),
                   rec.get("model") or "", float(rec["seconds"]) if rec.get("seconds") else None,
                   [w for w in (rec.get("warnings") or "").split(_WARNING_SEPARATOR) if w], rec.get("error") or "",
                   {k: rec[k] for k in ("labels", "qc_picture", "dicom_seg") if rec.get(k)})


def ordered(rows: Sequence[Row]) -> List[Row]:
    """Failures first, then by case id."""
    return sorted(rows, key=lambda r: (r.status != "failed", r.case))


def write_summary(rows: Sequence[Row], path: str) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in ordered(rows):
        writer.writerow(r.as_csv())
    return write_text(path, buffer.getvalue())


def read_summary(path: str) -> Dict[str, Row]:
    """The rows of an earlier run's summary by case id (none when it is missing or unreadable)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return {rec["case"]: Row.from_csv(rec) for rec in csv.DictReader(f) if rec.get("case")}
    except (OSError, KeyError, ValueError, csv.Error):
        return {}


_STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:right}
td.text,th.text{text-align:left}th{background:#eee;cursor:pointer}
tr.failed td{background:#fde8e8}.error{color:#a00}.note{background:#fff4d0;padding:6px}
img.qc{width:640px;display:block}"""
_SORT = """function sortBy(col, numeric) {
  const body = document.querySelector('#cases tbody');
  const rows = Array.from(body.rows);
  const dir = body.dataset.col == col && body.dataset.dir == '1' ? -1 : 1;
  const key = r => r.cells[col].dataset.v;
  rows.sort((a, b) => (b.classList.contains('failed') - a.classList.contains('failed'))
    || dir * (numeric ? (parseFloat(key(a)) || 0) - (parseFloat(key(b)) || 0) : key(a).localeCompare(key(b))));
  rows.forEach(r => body.appendChild(r));
  body.dataset.col = col; body.dataset.dir = dir;
}"""


def _cell(value: str, sort_value: str = "", text: bool = False) -> str:
    cls = ' class="text"' if text else ""
    return f'<td{cls} data-v="{html.escape(sort_value or value)}">{value}</td>'


def _row_html(r: Row) -> str:
    e = html.escape
    cells = [_cell(e(r.case), r.case, True), _cell(e(r.status), r.status, True)]
    cells += [_cell(f"{r.volumes_ml[v]:.1f}" if v in r.volumes_ml else "", str(r.volumes_ml.get(v, ""))) for v in VOLUMES]
    cells += [_cell(f"{r.dice[d]:.3f}" if d in r.dice else "", str(r.dice.get(d, ""))) for d in DICE]
    cells.append(_cell("" if r.seconds is None else f"{r.seconds:.1f}", str(r.seconds or "")))
    notes = [f'<div class="error">{e(r.error)}</div>'] if r.error else []
    notes += [f"<div>{e(w)}</div>" for w in r.warnings]
    if r.files.get("qc_picture"):
        src = e(r.files["qc_picture"])
        notes.append(f'<a href="{src}"><img class="qc" src="{src}" alt="QC picture of {e(r.case)}"></a>')
    cells.append(_cell(f"<div>{e(r.model)}</div>" + "".join(notes), r.model, True))
    return f'<tr class="{e(r.status)}">{"".join(cells)}</tr>'


def write_index(rows: Sequence[Row], path: str, title: str, qc_note: str = "") -> str:
    """The page: counts, a note (e.g. why there are no QC pictures), failures with their errors,
    then the table of every case with its picture, sortable by any column."""
    e = html.escape
    ordered_rows = ordered(rows)
    counts = {s: sum(r.status == s for r in rows) for s in ("done", "skipped", "failed")}
    heads = ["case", "status"] + [f"{v} mL" for v in VOLUMES] + [f"Dice {d}" for d in DICE] + ["s"]
    header = "".join(f'<th onclick="sortBy({i}, {str(i > 1).lower()})"{" class=text" if i < 2 else ""}>{e(h)}</th>'
                     for i, h in enumerate(heads))
    header += f'<th class="text" onclick="sortBy({len(heads)}, false)">model, warnings, QC picture</th>'
    failed = "".join(f"<li><b>{e(r.case)}</b>: <span class=error>{e(r.error)}</span></li>"
                     for r in ordered_rows if r.status == "failed")
    parts = [f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{e(title)}</title>",
             f"<style>{_STYLE}</style><script>{_SORT}</script></head><body>",
             f"<h1>{e(title)}</h1>",
             f"<p>{len(rows)} cases: {counts['done']} done, {counts['skipped']} skipped (done before), "
             f"{counts['failed']} failed. Volumes in mL; click a column's title to sort by it (failures stay first). "
             "Research use only, not a medical device.</p>"]
    if qc_note:
        parts.append(f'<p class="note">{e(qc_note)}</p>')
    if failed:
        parts.append(f"<h2>Failed cases</h2><ul>{failed}</ul>")
    parts.append(f'<table id="cases"><thead><tr>{header}</tr></thead><tbody>')
    parts += [_row_html(r) for r in ordered_rows]
    parts.append("</tbody></table></body></html>\n")
    return write_text(path, "\n".join(parts))


def file_name(path: Optional[str]) -> str:
    return os.path.basename(path) if path else ""
