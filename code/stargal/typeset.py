"""Typesetting of the PDF report with reportlab: a small document model (paragraphs, lists, tables, figures,
sections) laid out as an A4 paper with numbered tables and figures, captions and page numbers.

The runner (``stages/report.py``) decides what the document says; this module only decides how it looks.
Tables are ruled (top, header and bottom rules), numbers are right-aligned, and a table narrows its font
(down to 6 pt) and wraps its header cells rather than wrap a row. A header wraps only between its words: a
column is never narrower than its longest header word, and a table too wide for the page at 6 pt is set as
stacked parts of its columns (the first column repeated in each). Text is set in the standard PDF fonts, so
it is extractable.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# ---------------------------------------------------------------- the document model


@dataclass
class Para:
    """A paragraph; ``**bold**`` and ```code``` are the only markup."""

    text: str
    style: str = "body"  # body, note, lead


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Code:
    """Preformatted text (a Markdown code fence): monospaced, its line breaks and indentation kept."""

    text: str


@dataclass
class TableBlock:
    """A numbered table: ``rows`` of str/int/float/None cells (None prints as an en dash)."""

    columns: list[str]
    rows: list[list]
    caption: str
    digits: int | dict[str, int] = 3  # decimals of float cells (per column name if a dict)
    bold_rows: Sequence[int] = ()
    note: str | None = None  # a line under the table


@dataclass
class FigureBlock:
    """A numbered figure: one image, or several side by side sharing the caption."""

    images: list[Path]
    caption: str
    width: float = 1.0  # fraction of the text width the whole row of images takes


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    ran: bool = True
    status: str = ""  # the one line shown instead of the section when it did not run


@dataclass
class Document:
    title: str
    subtitle: str
    facts: list[tuple[str, str]]  # label, text: the run's identity under the title
    front: list  # blocks of the first page (the headline)
    sections: list[Section]
    author: str = "stargal"


# ---------------------------------------------------------------- layout constants

PAGE_MARGIN_MM = 18
BODY_PT = 9.5
TABLE_PT = (8.0, 7.5, 7.0, 6.5, 6.0)  # table font sizes tried, largest first
CELL_PAD = 3.0  # points left and right of a cell's text
CELL_SLACK = 1.5  # points a column gets beyond its text, against rounding in reportlab's line breaking
CODE_PT = 7.5
COURIER_EM = 0.6  # every Courier glyph is 0.6 em wide
_NUMBER = re.compile(r"^[\s+\-\u2212]?[\d.,]+([eE][+\-]?\d+)?(\s?(%|s|MB|GB|px|x))?(\s?\(\S+\))?$|^[\-\u2013]$")


def _code_size(size: float) -> float:
    """The size of `code` in text of ``size`` (a little smaller: Courier looks larger than Helvetica)."""
    return round(size * 0.88, 1)


def _markup(text: str, size: float = BODY_PT) -> str:
    """Escape ``text`` for a reportlab Paragraph and turn **bold** and `code` (Courier, a little smaller than the
    surrounding ``size``) into tags."""
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    text = re.sub(r"`([^`]+)`", rf'<font face="Courier" size="{_code_size(size)}">\1</font>', text)
    return text


def cell_text(value, digits: int = 3) -> str:
    """A table cell: en dash for None/NaN, fixed decimals for floats, thousands separators for large ints."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "\u2013"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    return str(value)


def is_numeric_column(cells: Sequence[str]) -> bool:
    """True when every non-empty cell reads as a number (right-aligned then)."""
    filled = [c for c in cells if c.strip()]
    return bool(filled) and all(_NUMBER.match(c.strip()) for c in filled)


# ---------------------------------------------------------------- rendering


class _Styles:
    def __init__(self):
        from reportlab.lib.enums import TA_CENTER, TA_LEFT
        from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet

        base = getSampleStyleSheet()
        body = ParagraphStyle(
            "body", parent=base["BodyText"], fontName="Helvetica", fontSize=BODY_PT, leading=BODY_PT * 1.3,
            spaceAfter=4, alignment=TA_LEFT,
        )  # fmt: skip
        self.body = body
        self.lead = ParagraphStyle("lead", parent=body, fontSize=10.5, leading=14, spaceAfter=6)
        self.note = ParagraphStyle("note", parent=body, fontSize=8, leading=10, textColor="#444444")
        self.title = ParagraphStyle(
            "title", parent=body, fontName="Helvetica-Bold", fontSize=19, leading=23, spaceAfter=4
        )
        self.subtitle = ParagraphStyle("subtitle", parent=body, fontSize=11.5, leading=15, textColor="#333333")
        self.h1 = ParagraphStyle(
            "h1", parent=body, fontName="Helvetica-Bold", fontSize=12.5, leading=16, spaceBefore=10, spaceAfter=4,
            keepWithNext=1,
        )  # fmt: skip
        self.caption = ParagraphStyle("caption", parent=body, fontSize=8.3, leading=10.5, spaceBefore=2, spaceAfter=8)
        self.table_caption = ParagraphStyle(
            "tcaption", parent=self.caption, spaceBefore=4, spaceAfter=3, keepWithNext=1
        )
        self.bullet = ParagraphStyle("bullet", parent=body, leftIndent=12, bulletIndent=2, spaceAfter=2)
        self.fact_label = ParagraphStyle("fact_label", parent=body, fontName="Helvetica-Bold", fontSize=8.5, leading=11)
        self.fact = ParagraphStyle("fact", parent=body, fontSize=8.5, leading=11, spaceAfter=0)
        self.code = ParagraphStyle(
            "code", parent=body, fontName="Courier", fontSize=CODE_PT, leading=CODE_PT * 1.2, leftIndent=10,
            spaceBefore=1, spaceAfter=6,
        )  # fmt: skip
        self.center = TA_CENTER

    def header_cell(self, size: float):
        from reportlab.lib.styles import ParagraphStyle

        # splitLongWords=0: a word is never cut (layout_table makes every column as wide as its longest word)
        return ParagraphStyle(
            f"head{size}", fontName="Helvetica-Bold", fontSize=size, leading=size * 1.2, alignment=0,
            splitLongWords=0,
        )  # fmt: skip


# ---------------------------------------------------------------- table layout


@dataclass
class _Column:
    """Widths in points a column needs at one font size, padding included."""

    head: float  # its longest header word: narrower would cut that word (headers wrap only between words)
    least: float  # its widest cell too: narrower would clip a cell (rows are never wrapped)
    full: float  # its whole header on one line too


@dataclass
class TablePart:
    """Columns of a table set side by side (indices into its columns) and their widths in points."""

    columns: list[int]
    widths: list[float]


@dataclass
class TableLayout:
    size: float  # font size of the whole table
    parts: list[TablePart]  # one part, or stacked parts when the columns do not fit side by side


def header_words(header: str, size: float) -> list[float]:
    """Widths of the words of a header cell as it is set (bold Helvetica, `code` in Courier as ``_markup`` pairs
    the backticks): the units a header may wrap between."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    text = re.sub(r"\*\*(.+?)\*\*", r"\1", header)
    widths, word = [], 0.0
    for i, part in enumerate(re.split(r"`([^`]+)`", text)):  # odd items: code
        font, pt = ("Courier", _code_size(size)) if i % 2 else ("Helvetica-Bold", size)
        for piece in re.split(r"(\s+)", part):
            if piece.isspace():
                widths.append(word)
                word = 0.0
            else:
                word += stringWidth(piece, font, pt)
    return [w for w in [*widths, word] if w > 0] or [0.0]


def _columns(headers: Sequence[str], texts: list[list[str]], bold: set[int], size: float) -> list[_Column]:
    """The widths each column needs at ``size`` (``bold``: indices of rows set in bold, which are wider)."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    pad = 2 * CELL_PAD + CELL_SLACK
    fonts = ["Helvetica-Bold" if i in bold else "Helvetica" for i in range(len(texts))]
    out = []
    for j, header in enumerate(headers):
        data = max((stringWidth(r[j], f, size) for r, f in zip(texts, fonts, strict=True)), default=0.0)
        head = max(header_words(header, size)) + pad
        least = max(head, data + pad)
        out.append(_Column(head, least, max(least, stringWidth(header, "Helvetica-Bold", size) + pad)))
    return out


def layout_table(headers: Sequence[str], texts: list[list[str]], bold: set[int], width: float) -> TableLayout:
    """Font size and column widths of a table: the largest size of TABLE_PT at which its rows fit ``width`` on one
    line each with every header word whole; at the smallest size, stacked parts of its columns when need be."""
    for size in TABLE_PT:
        cols = _columns(headers, texts, bold, size)
        if sum(c.least for c in cols) <= width:
            break
    groups = _column_groups([c.least for c in cols], width)
    return TableLayout(size, [TablePart(g, _part_widths([cols[j] for j in g], width)) for g in groups])


def _column_groups(least: list[float], width: float) -> list[list[int]]:
    """Consecutive columns in groups that fit ``width`` side by side, each led by the first column (the rows'
    labels); one group when they all fit."""
    groups = [[0]]
    for j in range(1, len(least)):
        if len(groups[-1]) > 1 and sum(least[k] for k in groups[-1]) + least[j] > width:
            groups.append([0])
        groups[-1].append(j)
    return groups


def _part_widths(cols: list[_Column], width: float) -> list[float]:
    """Widths of the columns of one part: spare width lets headers wrap less (up to one line each); a part still
    too wide (a cell wider than the page) narrows the cells' overflow, never below a header word."""
    least = [c.least for c in cols]
    spare = width - sum(least)
    if spare >= 0:
        wants = [c.full - c.least for c in cols]
        share = min(1.0, spare / sum(wants)) if sum(wants) > 0 else 0.0
        return [w + want * share for w, want in zip(least, wants, strict=True)]
    excess = [c.least - c.head for c in cols]
    room = max(0.0, width - sum(c.head for c in cols))
    keep = min(1.0, room / sum(excess)) if sum(excess) > 0 else 0.0
    return [c.head + e * keep for c, e in zip(cols, excess, strict=True)]


def _cell_texts(block: TableBlock) -> list[list[str]]:
    """The rows as cell strings, padded to the number of columns."""

    def digits_of(name: str) -> int:
        return block.digits.get(name, 3) if isinstance(block.digits, dict) else block.digits

    ncol = len(block.columns)
    if any(len(row) > ncol for row in block.rows):
        raise ValueError(f"table '{block.caption}': a row has more cells than its {ncol} columns")
    texts = [[cell_text(v, digits_of(c)) for v, c in zip(row, block.columns, strict=False)] for row in block.rows]
    return [row + [""] * (ncol - len(row)) for row in texts]


def _ruled_table(block: TableBlock, texts: list[list[str]], part: TablePart, size: float, styles: _Styles):
    """One part of a table: its header cells (wrapping between words) and rows, ruled, numbers right-aligned."""
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph, Table, TableStyle

    head_style = styles.header_cell(size)
    header = [Paragraph(_markup(block.columns[j], size), head_style) for j in part.columns]
    rows = [[row[j] for j in part.columns] for row in texts]
    table = Table([header, *rows], colWidths=part.widths, repeatRows=1, hAlign="LEFT")
    style = [
        ("FONT", (0, 1), (-1, -1), "Helvetica", size, size * 1.2),
        ("VALIGN", (0, 0), (-1, 0), "BOTTOM"),
        ("LEFTPADDING", (0, 0), (-1, -1), CELL_PAD),
        ("RIGHTPADDING", (0, 0), (-1, -1), CELL_PAD),
        ("TOPPADDING", (0, 0), (-1, -1), 1.2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.6),
        ("LINEABOVE", (0, 0), (-1, 0), 1.0, colors.black),
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black),
        ("LINEBELOW", (0, -1), (-1, -1), 1.0, colors.black),
    ]
    for k, j in enumerate(part.columns):
        if is_numeric_column([r[j] for r in texts]):
            style.append(("ALIGN", (k, 1), (k, -1), "RIGHT"))
    for i in block.bold_rows:
        style.append(("FONT", (0, i + 1), (-1, i + 1), "Helvetica-Bold", size, size * 1.2))
    if len(texts) > 6:
        style.append(("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f3f3f3")]))
    table.setStyle(TableStyle(style))
    return table


def _table_flowable(block: TableBlock, number: int, width: float, styles: _Styles) -> list:
    """Caption, ruled table (or its stacked parts) and note; the font shrinks until the rows fit the text width
    unwrapped."""
    from reportlab.platypus import Paragraph, Spacer

    texts = _cell_texts(block)
    layout = layout_table(block.columns, texts, set(block.bold_rows), width)
    caption = _markup(block.caption, 8.3)
    if len(layout.parts) > 1:
        caption += f" Set in {len(layout.parts)} parts, each led by the first column."
    out: list = [Paragraph(f"<b>Table {number}.</b> {caption}", styles.table_caption)]
    for k, part in enumerate(layout.parts):
        out += [Spacer(1, 6)] if k else []
        out.append(_ruled_table(block, texts, part, layout.size, styles))
    # the note's paragraph spacing, or a little space: a figure next must not touch the bottom rule
    out.append(Paragraph(_markup(block.note, 8), styles.note) if block.note else Spacer(1, 6))
    return out


def _code_flowable(block: Code, width: float, styles: _Styles):
    """A code block; a line longer than the text width continues on the next line rather than run off the page."""
    from reportlab.platypus import Preformatted

    chars = int((width - styles.code.leftIndent) / (CODE_PT * COURIER_EM))
    return Preformatted(block.text, styles.code, maxLineLength=chars)


def _image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError):
        return None


def _figure_flowable(block: FigureBlock, number: int, width: float, styles: _Styles, max_height: float) -> list:
    """The images of one figure side by side (scaled to a common height), then the caption."""
    from reportlab.platypus import Image, KeepTogether, Paragraph, Table, TableStyle

    sizes = [(p, _image_size(p)) for p in block.images]
    sizes = [(p, s) for p, s in sizes if s]
    if not sizes:
        return [
            Paragraph(f"Figure {number}: image unreadable ({', '.join(p.name for p in block.images)}).", styles.note)
        ]
    gap = 6.0
    total = width * block.width - gap * (len(sizes) - 1)
    aspect_sum = sum(w / h for _, (w, h) in sizes)
    height = min(total / aspect_sum, max_height)
    images = [Image(str(p), width=height * w / h, height=height) for p, (w, h) in sizes]
    if len(images) == 1:
        row = images[0]
        row.hAlign = "CENTER"
    else:
        row = Table([images], colWidths=[im.drawWidth + gap for im in images], hAlign="CENTER")
        row.setStyle(TableStyle([("LEFTPADDING", (0, 0), (-1, -1), gap / 2), ("RIGHTPADDING", (0, 0), (-1, -1), gap / 2),
                                 ("TOPPADDING", (0, 0), (-1, -1), 0), ("BOTTOMPADDING", (0, 0), (-1, -1), 0)]))  # fmt: skip
    caption = Paragraph(f"<b>Figure {number}.</b> {_markup(block.caption, 8.3)}", styles.caption)
    return [KeepTogether([row, caption])]


def _blocks(blocks: list, counters: dict, width: float, styles: _Styles, max_fig: float) -> list:
    from reportlab.platypus import KeepTogether, ListFlowable, ListItem, Paragraph

    out: list = []
    for block in blocks:
        if isinstance(block, Para):
            style = getattr(styles, block.style)
            out.append(Paragraph(_markup(block.text, style.fontSize), style))
        elif isinstance(block, Bullets):
            items = [ListItem(Paragraph(_markup(t), styles.bullet), leftIndent=12) for t in block.items]
            out.append(ListFlowable(items, bulletType="bullet", start="\u2022", leftIndent=10, bulletFontSize=7))
        elif isinstance(block, Code):
            out.append(_code_flowable(block, width, styles))
        elif isinstance(block, TableBlock):
            counters["table"] += 1
            parts = _table_flowable(block, counters["table"], width, styles)
            out.append(KeepTogether(parts) if len(block.rows) <= 25 else parts[0])
            if len(block.rows) > 25:
                out.extend(parts[1:])
        elif isinstance(block, FigureBlock):
            counters["figure"] += 1
            out.extend(_figure_flowable(block, counters["figure"], width, styles, max_fig))
        else:
            raise TypeError(f"unknown block {type(block).__name__}")
    return out


def _numbered_canvas(title: str):
    from reportlab.pdfgen.canvas import Canvas

    class NumberedCanvas(Canvas):
        """Writes "page N of M" once the page count is known."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._pages: list[dict] = []

        def showPage(self):  # noqa: N802 (reportlab's name)
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self):
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self._footer(total)
                super().showPage()
            super().save()

        def _footer(self, total: int) -> None:
            from reportlab.lib.units import mm

            w, _ = self._pagesize
            self.saveState()
            self.setFont("Helvetica", 7.5)
            self.setFillGray(0.35)
            self.drawString(PAGE_MARGIN_MM * mm, 10 * mm, title)
            self.drawRightString(w - PAGE_MARGIN_MM * mm, 10 * mm, f"page {self._pageNumber} of {total}")
            self.restoreState()

    return NumberedCanvas


def render(doc: Document, path: str | os.PathLike) -> int:
    """Typeset ``doc`` as an A4 PDF at ``path``; return the number of pages."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = _Styles()
    margin = PAGE_MARGIN_MM * mm
    template = SimpleDocTemplate(
        str(path), pagesize=A4, leftMargin=margin, rightMargin=margin, topMargin=margin, bottomMargin=margin + 4 * mm,
        title=doc.title, author=doc.author, subject=doc.subtitle, invariant=1,
    )  # fmt: skip
    width = template.width
    max_fig = template.height * 0.42
    story: list = [Paragraph(_markup(doc.title), styles.title), Paragraph(_markup(doc.subtitle), styles.subtitle)]
    story.append(Spacer(1, 6))
    if doc.facts:
        facts = Table(
            [[Paragraph(_markup(k, 8.5), styles.fact_label), Paragraph(_markup(v, 8.5), styles.fact)] for k, v in doc.facts],
            colWidths=[28 * mm, width - 28 * mm], hAlign="LEFT",
        )  # fmt: skip
        facts.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                   ("TOPPADDING", (0, 0), (-1, -1), 0.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 0.5)]))  # fmt: skip
        story += [facts, Spacer(1, 8)]
    counters = {"table": 0, "figure": 0}
    story += _blocks(doc.front, counters, width, styles, max_fig)
    for number, section in enumerate(doc.sections, start=1):
        heading = f"{number}. {section.title}"
        if not section.ran:
            story.append(Paragraph(f"<b>{_markup(heading)}:</b> {_markup(section.status or 'not run')}", styles.body))
            continue
        story.append(Paragraph(_markup(heading), styles.h1))
        story += _blocks(section.blocks, counters, width, styles, max_fig)
    template.build(story, canvasmaker=_numbered_canvas(doc.title))
    return template.page
