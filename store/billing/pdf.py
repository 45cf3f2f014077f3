"""A small PDF writer for receipts: one or more A4 pages of left- or right-aligned text lines.

Plain PDF 1.4 with the standard Helvetica fonts (every reader has them, nothing embedded),
text encoded as WinAnsi (Latin-1 plus the usual punctuation; anything else becomes "?").
Enough for a receipt; deliberately nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PAGE_WIDTH, PAGE_HEIGHT = 595, 842  # A4 in points
MARGIN = 56
# WinAnsi code points PDF readers map from cp1252 (the euro sign, dashes, quotes).
_ENCODING = "cp1252"
# Helvetica's advance widths (1/1000 em) for the printable ASCII range, for right alignment.
_WIDTHS = (
    [278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278]
    + [556] * 10
    + [278, 278, 584, 584, 584, 556, 1015]
    + [667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667]
    + [778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, 333]
    + [556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, 556]
    + [556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584]
)


def text_width(text: str, size: float) -> float:
    """Approximate width in points (bold is a little wider; close enough to align)."""
    total = 0
    for ch in text:
        code = ord(ch)
        total += _WIDTHS[code - 32] if 32 <= code < 127 else 556
    return total * size / 1000


def _escape(text: str) -> bytes:
    raw = text.encode(_ENCODING, errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


@dataclass
class Document:
    """Lines are placed top-down; ``line`` moves down, ``gap`` adds space."""

    pages: list[list[bytes]] = field(default_factory=lambda: [[]])
    y: float = PAGE_HEIGHT - MARGIN

    def _ensure_room(self, height: float) -> None:
        if self.y - height < MARGIN:
            self.pages.append([])
            self.y = PAGE_HEIGHT - MARGIN

    def text(self, x: float, text: str, *, size: float = 10, bold: bool = False) -> None:
        font = b"/F2" if bold else b"/F1"
        self.pages[-1].append(
            b"BT %s %.1f Tf %.2f %.2f Td (%s) Tj ET" % (font, size, x, self.y, _escape(text))
        )

    def line(
        self,
        left: str = "",
        right: str = "",
        *,
        size: float = 10,
        bold: bool = False,
        indent: float = 0,
    ) -> None:
        """One line: ``left`` at the margin, ``right`` aligned to the right margin."""
        height = size * 1.45
        self._ensure_room(height)
        self.y -= height
        if left:
            self.text(MARGIN + indent, left, size=size, bold=bold)
        if right:
            x = PAGE_WIDTH - MARGIN - text_width(right, size)
            self.text(x, right, size=size, bold=bold)

    def rule(self) -> None:
        self._ensure_room(8)
        self.y -= 6
        self.pages[-1].append(
            b"0.6 w %d %.2f m %d %.2f l S" % (MARGIN, self.y, PAGE_WIDTH - MARGIN, self.y)
        )

    def gap(self, points: float = 8) -> None:
        self.y -= points

    def render(self, *, title: str = "") -> bytes:
        """The whole file."""
        objects: list[bytes] = []

        def add(body: bytes) -> int:
            objects.append(body)
            return len(objects)

        catalog = add(b"")  # filled in below, once the page tree's number is known
        pages_obj = add(b"")
        regular = add(
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
        )
        bold = add(
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold "
            b"/Encoding /WinAnsiEncoding >>"
        )
        kids = []
        for ops in self.pages:
            stream = b"\n".join(ops)
            content = add(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
            kids.append(
                add(
                    b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %d %d] "
                    b"/Resources << /Font << /F1 %d 0 R /F2 %d 0 R >> >> /Contents %d 0 R >>"
                    % (pages_obj, PAGE_WIDTH, PAGE_HEIGHT, regular, bold, content)
                )
            )
        objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_obj
        objects[pages_obj - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
            b" ".join(b"%d 0 R" % k for k in kids),
            len(kids),
        )
        info = add(b"<< /Title (%s) /Producer (Store) >>" % _escape(title))
        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for number, body in enumerate(objects, start=1):
            offsets.append(len(out))
            out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
        xref = len(out)
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
        for offset in offsets:
            out += b"%010d 00000 n \n" % offset
        out += b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
            len(objects) + 1,
            catalog,
            info,
            xref,
        )
        return bytes(out)
