"""The report as one self-contained HTML page: inline CSS, SVG and a few
lines of JavaScript (sorting and filtering the concept table); nothing is
fetched from anywhere."""

from __future__ import annotations

import json
from html import escape

from indexer.report import plots

HEADLINE = ("f1@5", "ndcg@10", "f1", "precision", "recall")

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1180px;
padding:0 18px 40px;color:#222}
h1{margin:22px 0 2px;font-size:24px}h2{margin-top:34px;border-bottom:1px solid #ddd;
padding-bottom:4px;font-size:19px}.sub{color:#666;margin:0 0 12px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #ddd;
border-radius:6px;padding:8px 14px;min-width:130px}.card b{display:block;
font-size:22px}.card span{color:#666;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:18px}
.grid figure{margin:0}figcaption{color:#555;font-size:13px}svg{max-width:100%;
height:auto}table{border-collapse:collapse;font-size:13px}
td,th{padding:3px 9px;border-bottom:1px solid #eee;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
#concepts th{cursor:pointer;user-select:none;position:sticky;top:0;background:#f6f6f6}
#concepts th[aria-sort=ascending]::after{content:" \\25B2"}
#concepts th[aria-sort=descending]::after{content:" \\25BC"}
.scroll{max-height:560px;overflow:auto;border:1px solid #ddd}
.warn{background:#fff3cd;border:1px solid #e0c36a;padding:8px 12px;border-radius:6px}
pre{background:#f6f6f6;padding:10px;overflow:auto;font-size:12px}
.uri{color:#777;font-size:12px}.cols{display:flex;gap:30px;flex-wrap:wrap}
input[type=search]{padding:5px 8px;width:280px;margin:6px 0}
"""

JS = """
(function(){
var table=document.getElementById('concepts'), body=table.tBodies[0];
var rows=Array.prototype.slice.call(body.rows), count=document.getElementById('shown');
table.tHead.addEventListener('click',function(ev){
  var th=ev.target.closest('th'); if(!th) return;
  var col=th.cellIndex, numeric=th.classList.contains('n');
  var dir=th.getAttribute('aria-sort')==='descending'?1:-1;
  if(!numeric && !th.hasAttribute('aria-sort')) dir=1;
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(c){
    c.removeAttribute('aria-sort');});
  th.setAttribute('aria-sort',dir===1?'ascending':'descending');
  rows.sort(function(a,b){
    var x=a.cells[col].getAttribute('data-v'), y=b.cells[col].getAttribute('data-v');
    if(numeric){x=parseFloat(x);y=parseFloat(y);}
    return x<y?-dir:x>y?dir:0;});
  rows.forEach(function(r){body.appendChild(r);});
});
document.getElementById('filter').addEventListener('input',function(ev){
  var q=ev.target.value.toLowerCase(), n=0;
  rows.forEach(function(r){
    var show=!q||r.textContent.toLowerCase().indexOf(q)>=0;
    r.hidden=!show; if(show) n++;});
  count.textContent=n;
});
})();
"""


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _cards(report: dict) -> str:
    metrics, intervals = report["metrics"], report["intervals"]
    out = []
    for name in HEADLINE:
        if name not in metrics:
            continue
        label = name if "@" in name else f"{name} (limit {report['settings']['limit']})"
        iv = intervals.get(name)
        extra = f"<span>[{_num(iv['low'])}, {_num(iv['high'])}]</span>" if iv else ""
        out.append(
            f'<div class="card"><span>{escape(label)}</span>'
            f"<b>{_num(metrics[name])}</b>{extra}</div>"
        )
    return '<div class="cards">' + "".join(out) + "</div>"


def _metrics_table(report: dict) -> str:
    intervals = report["intervals"]
    head = "<tr><th>metric</th><th class=n>value</th>"
    if intervals:
        head += "<th class=n>95% interval</th>"
    rows = []
    for name, value in report["metrics"].items():
        cells = f"<td>{escape(name)}</td><td class=n>{_num(value, 4)}</td>"
        if intervals:
            iv = intervals.get(name)
            cells += (
                f"<td class=n>[{_num(iv['low'], 4)}, {_num(iv['high'], 4)}]</td>"
                if iv
                else "<td></td>"
            )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table>{head}</tr>{''.join(rows)}</table>"


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def _operating_point(report: dict) -> str:
    s = report["settings"]
    return (
        "<h2>Limit and threshold</h2><div class=grid>"
        + _figure(
            plots.prf_curve(
                report["limit_curve"], "limit", s["limit"], f"limit {s['limit']}"
            ),
            f"Against the limit, at the project's threshold {s['threshold']:g}.",
        )
        + _figure(
            plots.prf_curve(
                report["threshold_curve"],
                "threshold",
                s["threshold"],
                f"threshold {s['threshold']:g}",
            ),
            f"Against the score threshold, at the project's limit {s['limit']}.",
        )
        + "</div>"
    )


def _seen_unseen(report: dict) -> str:
    data = report["seen_unseen"]
    if data is None:
        return (
            "<h2>Seen and unseen subjects</h2><p>Not available: this backend "
            "does not record which subjects it saw in training.</p>"
        )
    return (
        "<h2>Seen and unseen subjects</h2><div class=grid>"
        + _figure(
            plots.seen_unseen(data),
            f"{data['gold_seen']} gold subjects occur in the training data, "
            f"{data['gold_unseen']} do not.",
        )
        + "</div>"
    )


def _calibration(report: dict) -> str:
    data = report["calibration"]
    rows = "".join(
        f"<tr><td>{b['low']:.1f}–{b['high']:.1f}</td><td class=n>{b['count']}</td>"
        f"<td class=n>{_num(b['mean_score'])}</td>"
        f"<td class=n>{_num(b['share_correct'])}</td></tr>"
        for b in data["bins"]
    )
    table = (
        "<table><tr><th>score</th><th class=n>suggestions</th>"
        f"<th class=n>mean score</th><th class=n>share correct</th></tr>{rows}</table>"
    )
    return (
        "<h2>Calibration</h2><div class=grid>"
        + _figure(
            plots.reliability(data),
            f"The top {data['limit']} suggestions of each document "
            f"({data['suggestions']} in all); expected calibration error "
            f"{_num(data['ece'])}.",
        )
        + f"<div>{table}</div></div>"
    )


def _sources(report: dict) -> str:
    rows = report.get("sources")
    if not rows:
        return ""
    metrics = [m for m in rows[0] if m not in ("project", "fusion")]
    head = "".join(f"<th class=n>{escape(m)}</th>" for m in metrics)
    body = "".join(
        f"<tr><td>{escape(r['project'])}{' (fusion)' if r['fusion'] else ''}</td>"
        + "".join(f"<td class=n>{_num(r[m])}</td>" for m in metrics)
        + "</tr>"
        for r in rows
    )
    plotted = [r for r in rows if r.get("f1@5") is not None]
    return (
        "<h2>Sources</h2><div class=grid>"
        + _figure(
            plots.sources(plotted, "f1@5"),
            "Each source evaluated alone on the same documents (its own limit and "
            "threshold for the unsuffixed F1).",
        )
        + f"<div><table><tr><th>project</th>{head}</tr>{body}</table></div></div>"
    )


def _concepts(report: dict) -> str:
    data = report["concepts"]
    columns = [
        ("label", "concept", False),
        ("support", "support", True),
        ("suggested", "suggested", True),
        ("tp", "correct", True),
        ("fp", "wrong", True),
        ("precision", "precision", True),
        ("recall", "recall", True),
        ("f1", "F1", True),
    ]
    head = "".join(
        f"<th{' class=n' if numeric else ''}>{title}</th>"
        for _, title, numeric in columns
    )
    body = []
    for r in data["rows"]:
        cells = [
            f'<td data-v="{escape(r["label"].lower())}">{escape(r["label"])}'
            f" <span class=uri>{escape(r['uri'])}</span></td>"
        ]
        for key, _, _ in columns[1:]:
            cells.append(f'<td class=n data-v="{r[key]}">{_num(r[key])}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")

    def listing(items, what):
        if not items:
            return "<p>None.</p>"
        return (
            "<table><tr><th>concept</th>"
            + "".join(f"<th class=n>{w}</th>" for w, _ in what)
            + "</tr>"
            + "".join(
                f"<tr><td>{escape(i['label'])} <span class=uri>{escape(i['uri'])}"
                "</span></td>"
                + "".join(f"<td class=n>{i[k]}</td>" for _, k in what)
                + "</tr>"
                for i in items
            )
            + "</table>"
        )

    never = data["never_suggested"]
    return (
        f"<h2>Concepts</h2><p class=sub>{len(data['rows'])} concepts were gold "
        "subjects or suggested at the project's limit and threshold. Click a "
        "column to sort.</p>"
        '<input type="search" id="filter" placeholder="Filter concepts…" '
        'aria-label="Filter concepts"> <span id="shown">'
        f"{len(data['rows'])}</span> shown"
        f'<div class="scroll"><table id="concepts"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
        "<div class=cols><div><h3>Most often suggested wrongly</h3>"
        + listing(
            data["most_wrong"],
            [("wrong", "fp"), ("correct", "tp"), ("support", "support")],
        )
        + f"</div><div><h3>Gold concepts never suggested ({len(never)})</h3>"
        + listing(never[:100], [("support", "support")])
        + (
            f"<p>… and {len(never) - 100} more (see the JSON report).</p>"
            if len(never) > 100
            else ""
        )
        + "</div></div>"
    )


def _reproduce(report: dict) -> str:
    corpus = report["corpus"]
    digests = "".join(
        f"<tr><td>{escape(p)}</td><td><code>{d}</code></td></tr>"
        for p, d in corpus["sha256"].items()
    )
    settings = json.dumps(report["settings"], indent=1, ensure_ascii=False)
    models = json.dumps(report["models"], indent=1, ensure_ascii=False)
    return (
        "<h2>Reproduce</h2>"
        f"<p>Command: <code>{escape(report['command'] or '(not recorded)')}</code>"
        f"<br>Created {escape(report['created'])} with indexer "
        f"{escape(report['indexer_version'])}.</p>"
        f"<table><tr><th>corpus</th><th>sha256</th></tr>{digests}</table>"
        f"<h3>Settings</h3><pre>{escape(settings)}</pre>"
        "<details><summary>Model manifests</summary>"
        f"<pre>{escape(models)}</pre></details>"
    )


def render_html(report: dict) -> str:
    """The whole page."""
    trained_on = report["corpus"]["trained_on_this_corpus"]
    warning = (
        '<p class="warn">Evaluated on the corpus that '
        f"{escape(', '.join(trained_on))} was trained on: these numbers flatter "
        "the model.</p>"
        if trained_on
        else ""
    )
    m = report["metrics"]
    title = f"Evaluation of {report['project']}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f"<p class=sub>{escape(report['name'])} · "
        f"{escape(report['settings']['backend'])}"
        f" · {m.get('documents_with_subjects', 0)} of {m.get('documents', 0)} documents"
        f" with subjects · {escape(', '.join(report['corpus']['paths']))} · "
        f"{escape(report['created'])}</p>"
        + warning
        + _cards(report)
        + _operating_point(report)
        + _seen_unseen(report)
        + _calibration(report)
        + _sources(report)
        + _concepts(report)
        + "<h2>All metrics</h2>"
        + _metrics_table(report)
        + _reproduce(report)
        + f"<script>{JS}</script></body></html>\n"
    )
