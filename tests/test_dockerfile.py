"""The Dockerfile cannot be built here; check what can be checked without a Docker engine."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_hadolint_passes():
    exe = shutil.which(
        "hadolint",
        path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    )
    if exe is None:
        pytest.skip("hadolint not installed")
    result = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_like_the_readme():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # same Python as the project requires
    base = re.search(r"^FROM python:(\d+\.\d+)", DOCKERFILE, re.M)
    assert base and project["requires-python"] == f">={base.group(1)}"
    # the package is installed from the source tree (editable, as the README does), with torch
    install = re.search(r"RUN pip install (.+)", DOCKERFILE)
    assert install and "-e '." in install.group(1) and "torch" in install.group(1)
    assert "COPY src ./src" in DOCKERFILE and "COPY pyproject.toml" in DOCKERFILE
    # the image runs the same main job as the README
    assert 'ENTRYPOINT ["scsena"]' in DOCKERFILE and 'CMD ["demo"]' in DOCKERFILE
    assert "scsena = " in (ROOT / "pyproject.toml").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "scsena demo" in readme and "docker run" in readme
