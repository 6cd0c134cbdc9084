"""Render a terminal capture (``tmux capture-pane -p``) to a PNG, for the command line's screenshots.

    tmux capture-pane -p -t SESSION > pane.txt
    python scripts/terminal_png.py pane.txt docs/screenshots/cli_check_drift.png --title "zeal check ..."

Plain text only (the command line prints no colours); one monospace cell per column, wide characters two.
"""

from __future__ import annotations

import argparse
import unicodedata
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
BACKGROUND, FOREGROUND, TITLE_BAR = (30, 30, 30), (225, 225, 225), (60, 60, 60)


def render(lines: list[str], title: str, font_size: int = 15) -> Image.Image:
    """The lines drawn as a terminal window: a title bar, then one row per line."""
    font = ImageFont.truetype(FONT, font_size)
    cell_w = font.getbbox("M")[2]
    cell_h = int(font_size * 1.35)
    columns = max([_width(line) for line in lines] + [80])
    pad, bar_h = 12, cell_h + 10
    image = Image.new("RGB", (columns * cell_w + 2 * pad, bar_h + len(lines) * cell_h + 2 * pad), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, image.width, bar_h], fill=TITLE_BAR)
    draw.text((pad, 5), title, font=font, fill=FOREGROUND)
    for row, line in enumerate(lines):
        x, y = pad, bar_h + pad + row * cell_h
        for char in line:
            draw.text((x, y), char, font=font, fill=FOREGROUND)
            x += cell_w * (2 if unicodedata.east_asian_width(char) in "WF" else 1)
    return image


def _width(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", help="text file from tmux capture-pane -p")
    parser.add_argument("out", help="PNG to write")
    parser.add_argument("--title", default="terminal", help="text of the window's title bar")
    args = parser.parse_args()
    lines = Path(args.capture).read_text().rstrip("\n").splitlines()
    render(lines, args.title).save(args.out)


if __name__ == "__main__":
    main()
