"""The site's pages: plain HTML and one CSS file, no JavaScript, every image lazy-loaded.

    index.html            the model, its settings, and per layer a strip of units (all of them for
                          a layer with at most `INDEX_UNITS` units: a segmentation model's classes)
    l/<layer>.html        one page per layer: a grid of all its units
    u/<unit>.html         one page per unit: visualization, negative, diversity set, dataset examples,
                          the sanity check, the objective and the command that makes each image
    style.css, img/       the stylesheet and every image (PNGs with their recipes)

Example:
    >>> page("t", "<p>hi</p>", depth=1).count('href="../style.css"')
    1
"""
from __future__ import annotations

import dataclasses as dc
import html
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from ..atlas import safe_name
from .units import DIVERSITY_SET, Unit

INDEX_UNITS = 32
CSS = """\
body{font-family:system-ui,sans-serif;margin:1.2em auto;max-width:1100px;padding:0 1em;color:#222;background:#fafafa}
a{color:#0645ad;text-decoration:none}a:hover{text-decoration:underline}
nav{font-size:14px;margin-bottom:1em}nav a{margin-right:1em}
h1{font-size:22px;margin:.2em 0}h2{font-size:17px;margin:1.2em 0 .4em}
.grid{display:flex;flex-wrap:wrap;gap:6px}
.cell{width:112px;text-align:center;font-size:11px}
.cell img{width:112px;height:112px;image-rendering:pixelated;background:#ddd;display:block}
.pair{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0}figcaption{font-size:12px;color:#555;margin-top:2px}
.big{width:224px;height:224px;image-rendering:pixelated;background:#ddd}
.strip img{max-width:100%;height:auto;image-rendering:pixelated;background:#ddd}
.div img{width:112px;height:112px;image-rendering:pixelated;background:#ddd}
code,pre{font-family:ui-monospace,monospace;font-size:12px}
pre{background:#f0f0f0;padding:6px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.joined{background:#e6f4e6}
.note{font-size:13px;color:#555;max-width:80ch}
"""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def layer_page(layer: str) -> str:
    return f"l/{safe_name(layer)}.html"


def page(title: str, body: str, *, depth: int) -> str:
    """A whole HTML document; `depth` is how many folders below the site root it lives (0 or 1)."""
    up = "../" * depth
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><link rel="stylesheet" href="{up}style.css">'
        f"<title>{esc(title)}</title></head><body>\n{body}\n</body></html>\n"
    )


def _img(src: str, alt: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<img src="{quote(src)}" alt="{esc(alt)}" loading="lazy" decoding="async"{c}>'


def _score(v: float | None) -> str:
    return "" if v is None else f"{v:.3g}"


def unit_cell(u: Unit, score: float | None, up: str) -> str:
    return (f'<div class="cell"><a href="{up}{quote(u.page)}">{_img(up + "img/" + u.vis, u.label)}'
            f"{esc(u.label)}</a><br>{_score(score)}</div>")


def index_html(title: str, settings: Mapping[str, Any], layers: Mapping[str, Sequence[Unit]],
               scores: Mapping[str, float | None]) -> str:
    """The site's front page: settings, and per layer its units (up to `INDEX_UNITS`) and a link to all."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in settings.items())
    about = ('<p class="note">Each unit\'s page shows the image that maximizes it, the one that minimizes it, '
             "a diversity set, the natural images that drive it most and least (with --images), a sanity check "
             "of how the visualization travels through the network compared with natural images, and the exact "
             "command that renders each picture again.</p>")
    parts = [f"<h1>{esc(title)}</h1>", f"<table>{rows}</table>", about]
    for layer, units in layers.items():
        more = f' &middot; <a href="{quote(layer_page(layer))}">all {len(units)} units</a>'
        parts.append(f'<h2 id="{esc(safe_name(layer))}">{esc(layer)} ({len(units)} units){more}</h2>')
        parts.append(
            '<div class="grid">' + "".join(unit_cell(u, scores.get(u.vis), "") for u in units[:INDEX_UNITS]) + "</div>"
        )
    return page(title, "\n".join(parts), depth=0)


def layer_html(title: str, layer: str, units: Sequence[Unit], scores: Mapping[str, float | None]) -> str:
    """One layer's page: every unit as a thumbnail with its final score, linking to its page."""
    body = (f'<nav><a href="../index.html">&larr; index</a></nav><h1>{esc(layer)}</h1>'
            f'<p class="note">{len(units)} units of {esc(title)}; under each, the final score of its visualization.</p>'
            + '<div class="grid">' + "".join(unit_cell(u, scores.get(u.vis), "../") for u in units) + "</div>")
    return page(f"{layer} - {title}", body, depth=1)


@dc.dataclass(frozen=True)
class UnitView:
    """What a unit page shows besides the unit itself."""

    unit: Unit
    scores: Mapping[str, float | None]  # file name -> final score
    commands: Mapping[str, str]  # "vis", "neg", "div" -> command line
    examples: Sequence[tuple[str, float]] = ()  # top examples: (name, score)
    bottom: Sequence[tuple[str, float]] = ()
    sanity: Any = None  # a sanity.PathReport
    detect: Mapping[str, float] | None = None
    prev: Unit | None = None
    next: Unit | None = None


def _sanity_table(view: UnitView) -> str:
    rep = view.sanity
    head = "<tr><th>layer</th><th>vis~pos</th><th>vis~neg</th><th>pos~pos</th><th>pos~neg</th>"
    head += "<th>probe acc.</th></tr>" if view.detect else "</tr>"
    on = False
    rows = []
    for r in rep.rows:
        on = on or r.layer == rep.joins_at
        cls = ' class="joined"' if on else ""
        cells = "".join(f"<td>{v:.2f}</td>" for v in (r.vis_pos, r.vis_neg, r.pos_pos, r.pos_neg))
        if view.detect:
            cells += f"<td>{view.detect.get(r.layer, float('nan')):.2f}</td>"
        rows.append(f"<tr{cls}><td>{esc(r.layer)}</td>{cells}</tr>")
    verdict = (f"The visualizations join the natural path at <b>{esc(rep.joins_at)}</b> (shaded)." if rep.joins_at
               else "The visualizations do not join the natural path at any layer shown.")
    return (
        f"<table>{head}{''.join(rows)}</table><p class=\"note\">{verdict} Mean Spearman correlation of spatially "
        "averaged activations: vis = this unit's visualization and diversity set, pos = its top dataset examples, "
        f"neg = its bottom ones; the natural path is joined where vis~pos is at least {rep.threshold:g} x pos~pos "
        f"and vis~pos - vis~neg at least {rep.threshold:g} x (pos~pos - pos~neg), at that layer and every later one. "
        "Probe acc.: held-out balanced accuracy of a linear "
        "probe telling the visualizations from the examples (0.5: alike; 1: off the natural manifold).</p>"
    )


def _examples(title: str, src: str, items: Sequence[tuple[str, float]]) -> str:
    names = ", ".join(f"{esc(n)} ({s:.3g})" for n, s in items)
    return (f'<figure class="strip">{_img(src, title)}<figcaption>{esc(title)}: {names}</figcaption></figure>')


def unit_html(title: str, view: UnitView) -> str:
    """One unit's page (see the module docstring)."""
    u = view.unit
    stored = view.scores.get(u.neg)  # the score of -objective, which the negative maximized
    neg = None if stored is None else -stored
    nav = [
        '<a href="../index.html">&larr; index</a>',
        f'<a href="../{quote(layer_page(u.layer))}">layer {esc(u.layer)}</a>',
    ]
    if view.prev is not None:
        nav.append(f'<a href="../{quote(view.prev.page)}">&lsaquo; {esc(view.prev.label)}</a>')
    if view.next is not None:
        nav.append(f'<a href="../{quote(view.next.page)}">{esc(view.next.label)} &rsaquo;</a>')
    parts = [
        f"<nav>{''.join(nav)}</nav>",
        f"<h1>{esc(u.label)}</h1>",
        f"<p><code>{esc(u.objective)}</code></p>",
        '<div class="pair">',
        f'<figure>{_img("../img/" + u.vis, "visualization", "big")}<figcaption>maximized, score '
        f'{_score(view.scores.get(u.vis))}</figcaption></figure>',
        f'<figure>{_img("../img/" + u.neg, "negative", "big")}<figcaption>minimized (negative), score '
        f'{_score(neg)}</figcaption></figure>',
        "</div>",
        "<h2>Diversity set</h2>",
        '<div class="div grid">'
        + "".join(_img("../img/" + u.div(i), f"diverse {i}") for i in range(DIVERSITY_SET))
        + "</div>",
    ]
    if view.examples:
        parts += ["<h2>Dataset examples</h2>", _examples("drive it most", "../img/" + u.top, view.examples),
                  _examples("drive it least", "../img/" + u.bottom, view.bottom)]
    if view.sanity is not None:
        parts += ["<h2>Sanity check</h2>", _sanity_table(view)]
    replay = ('<p class="note">Every PNG carries its recipe: '
              f"<code>lucent-dsl render --recipe img/{esc(u.vis)}</code> renders it again (from the site folder).</p>")
    parts += ["<h2>Reproduce</h2>", replay]
    parts += [f"<p>{esc(name)}:</p><pre>{esc(cmd)}</pre>" for name, cmd in view.commands.items()]
    return page(f"{u.label} - {title}", "\n".join(parts), depth=1)
