"""The default local MLflow store."""

import os
from pathlib import Path

from scsena.tracking import default_tracking_uri


def test_default_tracking_uri_is_an_sqlite_file_in_the_directory(tmp_path):
    runs = tmp_path / "runs" / "first"  # missing: created, but no store file is written
    uri = default_tracking_uri(runs)
    assert uri == f"sqlite:///{runs.resolve() / 'mlflow.db'}"
    assert runs.is_dir() and list(runs.iterdir()) == []
    assert default_tracking_uri(str(runs)) == uri  # a string names the same store


def test_default_tracking_uri_is_absolute_and_writes_nothing_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    before = sorted(os.listdir(tmp_path))
    uri = default_tracking_uri("sub")
    assert uri == f"sqlite:///{tmp_path.resolve() / 'sub' / 'mlflow.db'}"
    assert Path(uri.removeprefix("sqlite:///")).is_absolute()
    assert default_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert sorted(os.listdir(tmp_path)) == before
