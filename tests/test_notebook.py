"""Notebooks: a table shows an HTML preview and a Diagram draws itself as SVG, rendered through a
real Jupyter kernel (nbclient + ipykernel), on both backends."""

from __future__ import annotations

import re
import textwrap
import xml.etree.ElementTree as ET

import nbformat
import pytest
from conftest import unique_schema_name
from nbclient import NotebookClient

import mp_dagster as mp

SVG = "{http://www.w3.org/2000/svg}"


def _setup_cell(db_url: str, schema_name: str) -> str:
    return textwrap.dedent(f"""
        import numpy as np
        import mp_dagster as mp

        schema = mp.Schema({schema_name!r}, database_url={db_url!r})

        @schema
        class Image(mp.Manual):
            definition = '''
            image_id : int
            ---
            label : varchar(40)
            image : blob
            '''

        @schema
        class Segmentation(mp.Computed):
            definition = '''
            -> Image
            ---
            n_rois : int
            '''

            class ROI(mp.Part):
                definition = '''
                -> master
                roi : int
                ---
                area : float64
                '''

            def make(self, key):
                self.insert1(dict(key, n_rois=2))
                self.ROI.insert([dict(key, roi=r, area=10.0 * r) for r in range(2)])

        Image.insert([dict(image_id=i, label=f"<b>{{i}}</b> & co", image=np.zeros((64, 64))) for i in range(30)])
        Segmentation.populate()
    """)


@pytest.fixture
def notebook_schema(db_url):
    name = unique_schema_name("nb")
    yield name
    mp.Schema(name, database_url=db_url).drop(force=True)


def _run(cells: list[str]) -> list:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    return [cell.outputs for cell in nb.cells]


def _rect(points: str) -> tuple[float, float, float, float]:
    xy = [tuple(map(float, p.split(","))) for p in points.split()]
    xs, ys = [x for x, _ in xy], [y for _, y in xy]
    return min(xs), min(ys), max(xs), max(ys)


def _shapes(svg: str) -> dict[str, tuple[float, float, float, float]]:
    """title of each node or cluster group -> its bounding box."""
    out = {}
    for g in ET.fromstring(svg).iter(f"{SVG}g"):
        if g.get("class") not in ("node", "cluster"):
            continue
        title = g.find(f"{SVG}title").text
        polygon, path, e = (g.find(f"{SVG}{k}") for k in ("polygon", "path", "ellipse"))
        if polygon is not None:
            out[title] = _rect(polygon.get("points"))
        elif path is not None:  # rounded boxes are drawn as paths of absolute points
            numbers = re.findall(r"-?\d+(?:\.\d+)?", path.get("d"))
            out[title] = _rect(" ".join(f"{x},{y}" for x, y in zip(numbers[::2], numbers[1::2])))
        else:
            cx, cy, rx, ry = (float(e.get(k)) for k in ("cx", "cy", "rx", "ry"))
            out[title] = (cx - rx, cy - ry, cx + rx, cy + ry)
    return out


def test_preview_and_diagram_render_in_a_notebook_kernel(db_url, notebook_schema):
    outputs = _run([
        _setup_cell(db_url, notebook_schema),
        "Image()",
        "Segmentation.ROI() & {'image_id': 3}",
        "mp.Diagram(schema)",
    ])
    assert not [o for cell in outputs for o in cell if o.output_type == "error"], outputs

    html = outputs[1][0]["data"]["text/html"]
    assert f"{notebook_schema}.image" in html
    assert "array float64 (64, 64)" in html
    assert "Total: 30 rows (showing the first 12)" in html
    assert html.count("<tr>") == 13  # header + 12 rows
    assert "&lt;b&gt;0&lt;/b&gt; &amp; co" in html and "<b>0</b>" not in html  # escaped
    assert re.search(r'<th class="key"[^>]*>image_id</th>', html)

    part = outputs[2][0]["data"]["text/html"]
    assert "Total: 2 rows" in part and "<td>10.0</td>" in part

    svg = outputs[3][0]["data"]["image/svg+xml"]
    for name in ("Image", "Segmentation", "Segmentation.ROI"):
        assert f">{name}</text>" in svg
    shapes = _shapes(svg)
    cluster = shapes[f"cluster_{notebook_schema}.segmentation"]
    roi = shapes[f"{notebook_schema}.segmentation__roi"]
    image = shapes[f"{notebook_schema}.image"]
    inside = lambda box, outer: (outer[0] <= box[0] and outer[1] <= box[1]  # noqa: E731
                                 and box[2] <= outer[2] and box[3] <= outer[3])
    assert inside(roi, cluster) and inside(shapes[f"{notebook_schema}.segmentation"], cluster)
    assert not inside(image, cluster)


def test_diagram_sources_and_text(schema):
    @schema
    class Animal(mp.Manual):
        definition = """
        animal_id : int
        """

    @schema
    class Scan(mp.Imported):
        definition = """
        -> Animal
        ---
        n : int
        """

        class Frame(mp.Part):
            definition = """
            -> master
            frame : int
            """

        def make(self, key):  # pragma: no cover - never populated here
            pass

    names = {t.full_name for t in mp.Diagram(Scan.Frame).tables}
    assert names == {Scan.full_name, Scan.Frame.full_name}  # a part brings its master
    whole = mp.Diagram(schema)
    assert [t.full_name for t in whole.tables] == [Animal.full_name, Scan.full_name, Scan.Frame.full_name]
    assert {t.full_name for t in (mp.Diagram(Animal) + mp.Diagram(Scan)).tables} == names | {Animal.full_name}
    assert f"{Animal.full_name} -> {Scan.full_name}" in repr(whole)
    assert f'subgraph "cluster_{Scan.full_name}"' in whole.dot()
    svg = whole.svg()
    assert svg.lstrip().startswith("<?xml") and "Scan.Frame" in svg
    with pytest.raises(mp.MPError, match="Diagram takes schemas, table classes or modules, not int"):
        mp.Diagram(3)
