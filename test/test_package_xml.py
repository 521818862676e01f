"""package.xml declares what the package imports, and nothing it does not: rosdep on a
robot installs exactly what the code needs."""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# import name -> rosdep key, where they differ (ROS packages keep their names)
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "yaml": "python3-yaml",
    "cv2": "python3-opencv",
    "tqdm": "python3-tqdm",
    "scipy": "python3-scipy",
    "matplotlib": "python3-matplotlib",
    "torch": "python3-pytorch-pip",
    "rosbags": "python3-rosbags-pip",
}
NO_ROSDEP_KEY = ("evo", "safetensors", "kiss_icp", "pynvml")  # pip only: package.xml says so


def _imports() -> set[str]:
    """Top-level modules the package and its launch files import, but the standard
    library and the package itself."""
    names = set()
    for path in [*ROOT.glob("dynfusion_ros/**/*.py"), *ROOT.glob("launch/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"dynfusion_ros", "__future__"}


def test_package_xml_declares_every_import_and_no_other():
    text = (ROOT / "package.xml").read_text()
    tree = ET.fromstring(text)
    declared = {e.text for e in tree if e.tag in ("depend", "exec_depend", "build_depend")}
    imported = _imports()
    needed = {ROSDEP_KEYS.get(name, name) for name in imported if name not in NO_ROSDEP_KEY}
    assert needed - declared == set(), "imported but not in package.xml"
    assert declared - needed == set(), "in package.xml but never imported"
    for name in NO_ROSDEP_KEY:
        assert name in imported and f"{name.replace('_', '-')}" in text, name
