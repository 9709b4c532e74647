"""The HTML kit (ucfpipe.core.html) that a run's report.html and predict --window's report.html share: below both,
loading nothing heavy, and every string reaching a page as text."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from helpers import REPO
from ucfpipe.core import html


def test_script_json_cannot_close_its_script_element():
    text = html.script_json({"name": "</script><script>alert(1)</script><!--"})
    assert "<" not in text and ">" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script><!--"}


def test_a_document_asks_the_network_for_nothing_and_escapes_its_title():
    page = html.document("<b>a & b</b>", "<p>body</p>", {"x": "</script>"})
    assert "default-src 'none'; img-src data:" in page
    assert "<title>&lt;b&gt;a &amp; b&lt;/b&gt;</title>" in page
    assert "<script>" not in page  # no script given: the page runs nothing
    assert html.document("t", "", {}, "var a = 1;").count("<script>var a = 1;</script>") == 1


def test_a_thumbnail_is_a_jpeg_data_uri_of_the_given_width():
    import base64

    import cv2

    uri = html.jpeg_data_uri(np.full((48, 96, 3), 200, np.uint8), width=32)
    assert uri.startswith("data:image/jpeg;base64,")
    image = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (16, 32, 3)


def test_the_kit_loads_no_opencv_and_nothing_of_the_stages():
    code = ("import sys, ucfpipe.core.html; "
            "print(sorted(m for m in sys.modules if m == 'cv2' or m.startswith(('ucfpipe.stage', 'ucfpipe.serving'))))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_report_pages_and_the_windowed_page_use_the_one_kit():
    from ucfpipe.stage_two import report_page

    assert report_page.document is html.document and report_page.jpeg_data_uri is html.jpeg_data_uri
    source = (REPO / "ucfpipe" / "serving" / "timeline.py").read_text() + (REPO / "ucfpipe" / "serving" / "windows.py").read_text()
    assert "report_page" not in source  # serving's page takes the kit from below stage two


def test_write_page_writes_it_whole_and_says_where_and_how_big(tmp_path):
    small, large = "<p>" + "x" * 300_000 + "</p>", "<p>" + "x" * 1_300_000 + "</p>"
    assert html.write_page(tmp_path / "small.html", small) == f"wrote {tmp_path / 'small.html'} (0.29 MiB)"
    assert html.write_page(tmp_path / "large.html", large) == f"wrote {tmp_path / 'large.html'} (1.2 MiB)"
    assert (tmp_path / "large.html").read_text() == large and not list(tmp_path.glob(".*.tmp"))
