"""Off-screen pictures (nphm.pictures) read back as images, and the markdown tables."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import trimesh

from nphm import pictures
from nphm.utils.tables import format_metric, markdown_table

iio = pytest.importorskip("imageio.v3")
pytest.importorskip("pyvista")

WHITE = 255


def _read(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 image."""
    image = iio.imread(path)
    return image[..., :3]


def _drawn(image: np.ndarray) -> np.ndarray:
    """(H, W) mask of the pixels that differ from the white background."""
    return (image < WHITE - 5).any(axis=-1)


def _red(image: np.ndarray) -> np.ndarray:
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return (r > 180) & (g < 80) & (b < 80)


def _saturated(image: np.ndarray) -> np.ndarray:
    """Clearly coloured pixels (not grey, black or white)."""
    return image.max(axis=-1).astype(int) - image.min(axis=-1) > 60


def _sphere(center=(0.0, 0.0, 0.0), radius=0.3) -> trimesh.Trimesh:
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    mesh.apply_translation(center)
    return mesh


# --------------------------------------------------------------------------- mesh figures
def test_mesh_picture_projects_in_the_nphm_frame(tmp_path):
    """A small sphere right of and above the origin shows up where a pinhole camera at
    (0, 0, 2.6) looking along -z (up +y, 30 degree view angle) projects it."""
    size = 256
    center = np.array([0.4, 0.25, 0.0])
    path = pictures.mesh_picture(tmp_path / "m.png", _sphere(center, 0.05), size=size)
    image = _read(path)
    assert image.shape == (size, size, 3)
    f = (size / 2) / math.tan(math.radians(15.0))
    col, row = size / 2 + f * center[0] / 2.6, size / 2 - f * center[1] / 2.6
    rows, cols = np.nonzero(_drawn(image))
    assert len(rows) > 50
    assert abs(cols.mean() + 0.5 - col) < 3 and abs(rows.mean() + 0.5 - row) < 3
    # nothing else is drawn: the far side of the image is background
    assert not _drawn(image)[:, : size // 2].any()


def test_mesh_grid_size_and_blank_tile(tmp_path):
    tile = (320, 320)
    meshes = [("sphere", _sphere()), ("nothing", None), ("again", _sphere())]
    path = pictures.render_mesh_grid(tmp_path / "g.png", meshes, title="epoch 0", tile=tile, max_columns=2)
    image = _read(path)
    # 2 columns, 2 blocks of (front, side) rows
    assert image.shape == (4 * tile[1], 2 * tile[0], 3)
    drawn = _drawn(image)

    def core(row, col):
        """The tile's area away from its labels (top) and the "(no surface)" note (left)."""
        w, h = tile
        return drawn[row * h + int(0.15 * h):(row + 1) * h, col * w + int(0.45 * w):(col + 1) * w]

    for row in (0, 1):  # front and side views of the sphere, and of the missing mesh
        assert core(row, 0).sum() > 1000
        assert not core(row, 1).any()
    assert core(2, 0).sum() > 1000 and core(3, 0).sum() > 1000
    assert not core(2, 1).any() and not core(3, 1).any()  # unused tiles of the last block


def test_mesh_grid_colors_and_no_meshes(tmp_path):
    image = _read(pictures.render_mesh_grid(tmp_path / "c.png", [("s", _sphere())], colors=["red"],
                                            tile=(200, 100)))
    assert image.shape == (200, 200, 3)
    assert _red(image).sum() > 500
    empty = _read(pictures.render_mesh_grid(tmp_path / "e.png", [("a", None)], tile=(200, 200)))
    assert empty.shape == (400, 200, 3) and not _saturated(empty).any()


def test_fit_figure_points_per_panel(tmp_path):
    meshes = [_sphere(), _sphere(), _sphere()]
    obs = _sphere(radius=0.32).vertices
    path = pictures.fit_figure(tmp_path / "f.png", meshes, [obs, None, obs[:5]], ["a", "b", "c"], columns=2,
                               panel=200)
    image = _read(path)
    assert image.shape == (400, 400, 3)
    red = _red(image)
    assert red[:200, :200].sum() > 100  # observed points over the first fit
    assert not red[:200, 200:].any()  # no observations for the second
    with pytest.raises(ValueError):
        pictures.fit_figure(tmp_path / "none.png", [], [], [])


# --------------------------------------------------------------------------- evaluation
def _scan_result(points, normals):
    return SimpleNamespace(subject=3, expression=1, scale_to_mm=250.0,
                           gt=SimpleNamespace(points=points, normals=normals),
                           metrics={"chamfer_l1": 1.0, "normals consistency": 0.9, "f_score_05": 0.5},
                           metrics_face={"chamfer_l1": 0.5})


def test_scan_figure_panels(tmp_path):
    gt = _sphere(radius=0.3)
    points, face = trimesh.sample.sample_surface(gt, 4000, seed=0)
    pred = _sphere(radius=0.31)
    path = pictures.scan_figure(tmp_path / "s.png", _scan_result(points, gt.face_normals[face]), pred,
                                input_points=points[:500], window=(800, 400))
    image = _read(path)
    assert image.shape == (400, 800, 3)
    drawn, coloured = _drawn(image), _saturated(image)
    for row in (0, 1):
        rows = slice(row * 200 + 40, (row + 1) * 200 - 40)
        for col in range(4):
            assert drawn[rows, col * 200 + 40:(col + 1) * 200 - 40].sum() > 500, (row, col)
        assert coloured[rows, 40:160].sum() > 200  # blue input points
        assert not coloured[rows, 240:360].any()  # grey prediction
        assert coloured[rows, 640:760].sum() > 500  # error-coloured prediction

    no_input = _read(pictures.scan_figure(tmp_path / "n.png", _scan_result(points, gt.face_normals[face]), pred,
                                          input_points=np.zeros((0, 3)), window=(800, 400)))
    assert not _saturated(no_input)[:, 40:160].any()


# --------------------------------------------------------------------------- dataset
class _Manager:
    """The part of DataManager the dataset pictures use."""

    def __init__(self, root: Path, observations: bool):
        self.root, self.observations = root, observations
        self.scan = _sphere((0.0, -0.05, 0.0), 0.3)

    def load_scan(self, subject, expression):
        if expression == 9:
            raise ValueError("unreadable")
        return self.scan

    load_registration = load_flame = load_scan

    def anchors(self, subject, expression):
        return np.array([[0.0, 0.0, 0.3], [0.1, 0.1, 0.28]])

    def landmarks(self, subject, expression):
        return np.array([[-0.1, 0.0, 0.28]])

    def neck_keep_mask(self, vertices, subject, expression):
        return np.asarray(vertices)[:, 1] > -0.1

    def observation_path(self, subject, expression, back=False):
        path = self.root / f"{expression}{'_back' if back else ''}.npy"
        if self.observations and not path.is_file():
            np.save(path, self.scan.vertices[self.scan.vertices[:, 2] * (-1 if back else 1) > 0])
        return path

    def load_observation(self, subject, expression, back=False):
        return np.load(self.observation_path(subject, expression, back))


def test_dataset_pictures(tmp_path):
    manager = _Manager(tmp_path, observations=True)
    image = _read(pictures.scan_registration_flame_figure(tmp_path / "m.png", manager, 0, 1, size=160))
    assert image.shape == (160, 640, 3)
    red = _red(image)
    assert all(red[:, i * 160:(i + 1) * 160].any() for i in range(4))  # anchors, and the kept part

    image = _read(pictures.expression_scans_figure(tmp_path / "e.png", manager, 0, [0, 9, 1, 2, 3], size=100))
    assert image.shape == (200, 400, 3)  # 4 panels per row
    drawn, red = _drawn(image), _red(image)
    assert drawn[20:80, 20:80].sum() > 100 and drawn[120:180, 20:80].sum() > 100  # first and fifth scan
    assert red[:100, 100:200].any() and not red[:100, :100].any()  # the unreadable scan's note
    assert not drawn[40:98, 140:198].any()  # ... and no surface
    drawn[:, 99:101] = drawn[:, 199:201] = drawn[:, 299:301] = drawn[99:101] = False  # panel borders
    assert not drawn[100:, 100:].any()  # unused panels stay empty

    assert pictures.observations_figure(tmp_path / "o.png", manager, 0, [0, 1], size=120)
    assert _read(tmp_path / "o.png").shape == (120, 240, 3)
    assert not pictures.observations_figure(tmp_path / "none.png", _Manager(tmp_path / "x", False), 0, [0, 1])
    assert not (tmp_path / "none.png").exists()


# --------------------------------------------------------------------------- tables
def test_markdown_table_metric_cells():
    rows = [["head", "12", 1.23456, None, float("nan"), 123.456, np.float64(0.5)],
            ["face", "3", -0.0004, 99.9996, 7, "1.23456", np.float32(2.0)]]
    expected = "\n".join([
        "| region | scans | a | b | c | d | e |",
        "|---|---|---|---|---|---|---|",
        "| head | 12 | 1.235 | - | nan | 123.5 | 0.500 |",
        "| face | 3 | -0.000 | 100.000 | 7.000 | 1.23456 | 2.000 |",
    ])
    assert markdown_table(["region", "scans", "a", "b", "c", "d", "e"], rows, cell=format_metric) == expected


def test_markdown_table_plain_cells():
    rows = [[256, "sparse", "1,234", 0.5, None], ["x", 1.0, "-", 3, 2.5e-7]]
    expected = "\n".join([
        "| res | kind | n | s | note |",
        "|---|---|---|---|---|",
        "| 256 | sparse | 1,234 | 0.5 | None |",
        "| x | 1.0 | - | 3 | 2.5e-07 |",
    ])
    assert markdown_table(["res", "kind", "n", "s", "note"], rows, cell=str) == expected
    assert markdown_table(["a"], [], cell=str) == "| a |\n|---|"


def test_format_metric():
    assert [format_metric(v) for v in (None, "abc", float("nan"), 0.12345, 100.0, -250.04, 3)] == \
        ["-", "abc", "nan", "0.123", "100.0", "-250.0", "3.000"]


def test_display_mesh_simplifies_large_meshes_close_to_the_surface():
    """A fine sphere (r 0.5, 328k faces) drawn with about 100k faces, every vertex within a
    fraction of a cell of the true sphere; small meshes are drawn as they are."""
    from nphm.pictures.base import display_mesh

    fine = trimesh.creation.icosphere(subdivisions=7, radius=0.5)
    shown = display_mesh(fine, max_faces=100_000)
    assert 60_000 <= len(shown.faces) <= 130_000
    cell = math.sqrt(3.0 * fine.area / 100_000)
    radial = np.abs(np.linalg.norm(shown.vertices, axis=1) - 0.5)
    assert radial.max() < 0.25 * cell and np.median(radial) < 0.02 * cell
    assert abs(shown.area / fine.area - 1.0) < 0.01
    small = trimesh.creation.icosphere(subdivisions=3)
    assert display_mesh(small, max_faces=100_000) is small
