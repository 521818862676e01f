"""The environment fixer that `make env` runs, on fake prefixes (the real one is in use)."""

import importlib.util
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy
import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("build_ros_env", REPO / "tools" / "build_ros_env.py")
build_ros_env = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_ros_env)

FOREIGN = (
    'INTERFACE_INCLUDE_DIRECTORIES "/opt/python/cp311-cp311/include/python3.11;'
    "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include;"
    '${_IMPORT_PREFIX}/include/std_msgs"\n'
)


def test_foreign_include_dirs_are_rewritten_once(tmp_path):
    export = tmp_path / "share" / "std_msgs" / "cmake" / "export_std_msgs__pyExport.cmake"
    export.parent.mkdir(parents=True)
    export.write_text(FOREIGN)
    untouched = tmp_path / "share" / "other" / "cmake" / "otherExport.cmake"
    untouched.parent.mkdir(parents=True)
    untouched.write_text('INTERFACE_INCLUDE_DIRECTORIES "${_IMPORT_PREFIX}/include"\n')

    assert build_ros_env.fix_exported_include_dirs(tmp_path) == 1
    text = export.read_text()
    assert "/opt/python" not in text
    assert sysconfig.get_paths()["include"] in text and numpy.get_include() in text
    assert "${_IMPORT_PREFIX}/include/std_msgs" in text
    assert build_ros_env.fix_exported_include_dirs(tmp_path) == 0  # idempotent


def test_package_share_is_registered_by_symlinks(tmp_path, monkeypatch):
    build_ros_env.register_package_share(tmp_path)
    build_ros_env.register_package_share(tmp_path)  # second run changes nothing
    share = tmp_path / "share" / "dynfusion_ros"
    assert (share / "package.xml").resolve() == REPO / "package.xml"
    for folder in build_ros_env.SHARED_FOLDERS:
        link = share / folder
        assert link.resolve() == REPO / folder if (REPO / folder).is_dir() else not link.exists()

    from dynfusion_ros import resources

    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    assert resources.package_share("dynfusion_ros") == share
    monkeypatch.setattr(resources.sys, "prefix", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"'not_a_package' is not installed.*make env"):
        resources.package_share("not_a_package")


@pytest.mark.skipif(
    Path(sys.prefix).resolve() != (REPO / ".venv").resolve(),
    reason="only meaningful in the environment `make env` built",
)
def test_environment_is_up_to_date_so_a_second_make_env_does_nothing():
    result = subprocess.run(
        ["make", "-q", "env"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, "make env would rebuild: an input is newer than the stamp"
