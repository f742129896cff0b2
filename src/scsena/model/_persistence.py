"""Saving and loading SENAVAE: safe files, versions and the saved registry."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import torch
from scvi.data import AnnDataManager

from scsena.data import rna_modality

from ._save_load import (
    ADATA_FILE,
    MDATA_FILE,
    MODEL_FILE,
    MODEL_FORMAT,
    build_model,
    read_model_file,
    recover_saves,
    staged_save,
    write_model_file,
)

if TYPE_CHECKING:
    from ._model import SENAVAE

_META_FILE = "scsena.json"


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {
        "scsena": version("scsena"),
        "scvi-tools": version("scvi-tools"),
        "torch": torch.__version__,
        "anndata": version("anndata"),
    }


def _read_meta(path: Path) -> dict:
    """The versions file written by ``save``; a clear error naming it when invalid."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        meta = err
    if not isinstance(meta, dict):
        reason = (
            f"{type(meta).__name__}: {meta}" if isinstance(meta, Exception) else "not a JSON object"
        )
        raise ValueError(
            f"{str(path)!r} is not a valid scsena model file ({reason}). Save the model "
            "again with model.save(), or point to the directory that model.save() wrote."
        )
    return meta


class SaveLoadMixin:
    """Safe save and load of :class:`~scsena.SENAVAE` (no code runs on load)."""

    def save(
        self,
        dir_path: str | Path,
        overwrite: bool = False,
        save_anndata: bool = False,
        prefix: str | None = None,
        legacy_mudata_format: bool = False,
        **anndata_write_kwargs,
    ) -> None:
        """Save the model so that loading it cannot run code and a killed save loses nothing.

        ``model.pt`` holds tensors and plain containers only, so :meth:`load` reads it
        with ``torch.load(..., weights_only=True)``. The files are written into a
        uniquely named staging directory inside ``dir_path`` and moved into place once
        all are written; files in ``dir_path`` that scsena did not write are kept.
        What a killed save left behind is completed or removed by the next save or
        :meth:`load`, with a warning.

        Parameters
        ----------
        dir_path
            Target directory.
        overwrite
            Replace the model in an existing, non-empty directory; otherwise that is an
            error. Other files in the directory are kept.
        save_anndata
            Also write the AnnData (``adata.h5ad``).
        prefix
            Prefix of the file names.
        legacy_mudata_format
            Accepted for scvi-tools compatibility; the model file always lists the
            model's genes (those of the RNA modality for a MuData).
        **anndata_write_kwargs
            Passed to :meth:`anndata.AnnData.write`.
        """
        prefix = prefix or ""
        with staged_save(Path(dir_path), prefix, overwrite) as staging:
            if save_anndata:
                name = ADATA_FILE if isinstance(self.adata, ad.AnnData) else MDATA_FILE
                self.adata.write(staging / f"{prefix}{name}", **anndata_write_kwargs)
            attributes = {k: v for k, v in self._get_user_attributes() if k.endswith("_")}
            write_model_file(
                staging / f"{prefix}{MODEL_FILE}",
                self.module.state_dict(),
                np.asarray(self._model_var_names()),
                attributes,
            )
            meta_name = f"{prefix}{_META_FILE}"
            files = sorted([p.name for p in staging.iterdir()] + [meta_name])
            meta = {**_versions(), "model_format": MODEL_FORMAT, "files": files}
            (staging / meta_name).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(
        cls,
        dir_path: str | Path,
        adata: ad.AnnData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        trusted: bool = False,
        allowed_classes_names_list: list[str] | None = None,
    ) -> SENAVAE:
        """Load a saved model without running code, checking the package versions and the data.

        ``model.pt`` is read with ``torch.load(..., weights_only=True)``, which rebuilds
        tensors and plain containers only; a file that needs more (written by an older
        scsena, or tampered with) is refused with :class:`ValueError` unless
        ``trusted=True``. What a killed :meth:`save` left in ``dir_path`` is completed
        or removed first, with a warning.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        adata
            AnnData with the model's genes (in the same order) and the perturbation
            column named at setup; ``None`` loads the AnnData saved with the model.
        accelerator, device
            Where to put the model, as in :meth:`scvi.model.base.BaseModelClass.load`.
        prefix
            Prefix of the file names given to :meth:`save`.
        trusted
            Also load a model file of an older scsena version, whose NumPy content
            needs Python's unrestricted unpickler. That unpickler runs any code the file
            holds: only for files from a trusted source. Save the model again to convert
            it.
        allowed_classes_names_list
            Other model class names to accept.
        """
        path = Path(dir_path)
        prefix = prefix or ""
        recover_saves(path)
        model_file = path / f"{prefix}{MODEL_FILE}"
        if not model_file.exists():
            raise FileNotFoundError(
                f"No saved model in {str(path)!r} (model.pt missing); save one with model.save()."
            )
        meta_file = path / f"{prefix}{_META_FILE}"
        if meta_file.exists():
            saved = _read_meta(meta_file)
            now = _versions()
            for pkg in ("scsena", "scvi-tools"):
                if str(saved.get(pkg, "")).split(".")[:2] != now[pkg].split(".")[:2]:
                    warnings.warn(
                        f"Model saved with {pkg} {saved.get(pkg)}; this is {now[pkg]}.",
                        UserWarning,
                        stacklevel=2,
                    )
        else:
            warnings.warn(
                f"{str(path)!r} has no {_META_FILE}: not saved by scsena's save().",
                UserWarning,
                stacklevel=2,
            )
        saved_files = read_model_file(model_file, trusted=trusted)
        if adata is not None and adata is not False:
            setup_args = saved_files[0].get("registry_", {}).get("setup_args", {})
            rna = rna_modality(adata, setup_args.get("rna_mod"))
            var_names = np.asarray(saved_files[1]).astype(str)
            if len(var_names) != rna.n_vars or not np.array_equal(
                var_names, np.asarray(rna.var_names).astype(str)
            ):
                shared = len(set(var_names) & set(rna.var_names))
                raise ValueError(
                    f"The data's genes differ from the model's: the model has {len(var_names)} "
                    f"genes, the data {rna.n_vars} ({shared} shared). Subset and order the "
                    "data as the model: `adata = adata[:, model_var_names].copy()` with "
                    f"`model_var_names` read by `SENAVAE.load_registry` / saved with the model."
                )
        return build_model(
            cls,
            path,
            adata,
            saved_files,
            prefix=prefix,
            accelerator=accelerator,
            device=device,
            allowed_classes_names_list=allowed_classes_names_list,
        )

    @staticmethod
    def load_registry(
        dir_path: str | Path, prefix: str | None = None, trusted: bool = False
    ) -> dict:
        """The registry saved with a model (its setup and gene-set mask), read safely.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        prefix
            Prefix of the file names given to :meth:`save`.
        trusted
            As in :meth:`load`.

        Returns
        -------
        dict
            The registry.
        """
        path = Path(dir_path)
        recover_saves(path)
        model_file = path / f"{prefix or ''}{MODEL_FILE}"
        if not model_file.exists():
            raise FileNotFoundError(
                f"No saved model in {str(path)!r} ({model_file.name} missing); save one with "
                "model.save()."
            )
        return read_model_file(model_file, trusted=trusted)[0]["registry_"]

    @staticmethod
    def view_setup_args(dir_path: str | Path, prefix: str | None = None) -> None:
        """Print the arguments a saved model was set up with (read without running code).

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        prefix
            Prefix of the file names given to :meth:`save`.
        """
        AnnDataManager.view_setup_method_args(SaveLoadMixin.load_registry(dir_path, prefix))

    @classmethod
    def convert_legacy_save(cls, *args, **kwargs) -> None:
        """Refused: scsena has no scvi-tools < 0.15 files; see :meth:`load` ``trusted``.

        scvi-tools' converter would unpickle the file without restriction.
        """
        raise ValueError(
            "SENAVAE has no scvi-tools < 0.15 model files to convert. Load a model of an "
            "older scsena with SENAVAE.load(dir_path, trusted=True) and save it again."
        )
