"""Generate handwriting-like text-line images from real text, written in the IAM layout.

Text: `corpus.txt` next to this file, 4,000 short lines wrapped from CPython standard-library
docstrings (PSF licence). Glyphs: the TrueType fonts found on the machine (DejaVu families on
Debian) or Pillow's built-in font; each generated "form" plays one writer (font, size, slant, ink),
and every line gets its own elastic distortion, rotation, blur and noise. Results on this data are
labelled as generated, never as IAM.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy.ndimage import gaussian_filter, map_coordinates
from tqdm.auto import tqdm

CORPUS = Path(__file__).with_name("corpus.txt")
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")
LINES_PER_FORM = 8


def find_fonts() -> list[str]:
    fonts = sorted(str(p) for d in FONT_DIRS if Path(d).is_dir() for p in Path(d).rglob("*.ttf"))
    # monospaced faces look least like handwriting; use them only when nothing else exists
    proportional = [f for f in fonts if "Mono" not in Path(f).name]
    return proportional or fonts


def _font(path: str | None, size: int):
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size)


def elastic(arr: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float) -> np.ndarray:
    """Smooth random displacement field (the classic elastic distortion for handwriting)."""
    h, w = arr.shape
    dx = gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma) * alpha
    dy = gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma) * alpha
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return map_coordinates(arr, [yy + dy, xx + dx], order=1, mode="constant", cval=255.0)


def render_line(text: str, font_path: str | None, size: int, slant: float, ink: int,
                rng: np.random.Generator) -> Image.Image:
    font = _font(font_path, size)
    left, top, right, bottom = font.getbbox(text)
    pad = size // 2
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    img = Image.new("L", (w + int(abs(slant) * h) + 2, h), 255)
    ImageDraw.Draw(img).text((pad - left + (int(abs(slant) * h) if slant > 0 else 0), pad - top),
                             text, fill=ink, font=font)
    # slant like cursive writing: x' = x + slant * (y - h)
    img = img.transform(img.size, Image.AFFINE, (1, slant, -slant * h if slant > 0 else 0, 0, 1, 0),
                        resample=Image.BILINEAR, fillcolor=255)
    img = img.rotate(float(rng.uniform(-1.5, 1.5)), resample=Image.BILINEAR, expand=True, fillcolor=255)
    arr = elastic(np.asarray(img, dtype=np.float64), rng, alpha=float(rng.uniform(1.5, 3.0)) * size / 10,
                  sigma=float(rng.uniform(3.0, 5.0)))
    arr = arr + rng.normal(0, 12, arr.shape)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 0.8))))


def _style(seed: int, form_no: int, fonts: list[str]):
    """One "writer" per form: font, size, slant, ink grey level."""
    rng = np.random.default_rng([seed, form_no, 1])
    return (fonts[rng.integers(len(fonts))] if fonts else None, int(rng.integers(20, 29)),
            float(rng.uniform(-0.1, 0.35)), int(rng.integers(0, 90)))


def _make_line(args) -> str:
    """Render line i (its randomness depends only on (seed, i), so workers can share the job)."""
    out, i, seed, fonts, texts = args
    form_no, line_no = divmod(i, LINES_PER_FORM)
    style = _style(seed, form_no, fonts)
    rng = np.random.default_rng([seed, i, 2])
    text = texts[int(rng.integers(len(texts)))]
    img = render_line(text, *style, rng)
    writer = f"g{form_no // 100:02d}"
    form = f"{writer}-{form_no % 100:03d}"
    line_id = f"{form}-{line_no:02d}"
    path = Path(out) / "lines" / writer / form / f"{line_id}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return (f"{line_id} ok {style[3]} {len(text.split())} 0 0 {img.width} {img.height} "
            f"{'|'.join(text.split(' '))}")


def generate(out_dir: str | Path, n_lines: int, seed: int = 0, fonts: list[str] | None = None,
             progress: bool = True, workers: int = 1) -> Path:
    """Write `lines.txt` and `lines/<writer>/<form>/<id>.png` under out_dir; returns out_dir.
    The output is the same for any number of workers."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = [t for t in CORPUS.read_text(encoding="utf-8").splitlines() if t.strip()]
    fonts = find_fonts() if fonts is None else fonts
    jobs = [(str(out), i, seed, fonts, texts) for i in range(n_lines)]
    bar = dict(total=n_lines, desc="generating lines", disable=not progress)
    if workers > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(workers) as pool:
            rows = list(tqdm(pool.imap(_make_line, jobs, chunksize=16), **bar))
    else:
        rows = [_make_line(j) for j in tqdm(jobs, **bar)]
    header = ["# generated handwriting-like lines (training/iam/generate.py); NOT the IAM database",
              f"# fonts: {', '.join(Path(f).name for f in fonts) or 'Pillow built-in'}; seed {seed}",
              "# format: id status graylevel components x y w h text|with|bars"]
    # lines.txt last: its presence marks a finished set
    tmp = out / "lines.txt.tmp"
    tmp.write_text("\n".join(header + rows) + "\n", encoding="utf-8")
    tmp.replace(out / "lines.txt")
    return out
