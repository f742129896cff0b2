"""Model files that load without running code, and saves that survive a kill.

A saved model is a directory holding ``model.pt`` (parameters and setup, written
with :func:`torch.save`), ``scsena.json`` (package versions and the files the save
wrote) and, when asked for, the data (``adata.h5ad``). ``model.pt`` holds only
tensors and plain Python containers: NumPy arrays and pandas objects of the model's
attributes are stored as tagged dictionaries of tensors and lists. It is therefore
read with ``torch.load(..., weights_only=True)``, whose unpickler rebuilds tensors and
containers and refuses anything else, so a tampered file cannot run code. Model
files of older scsena versions (pickled NumPy arrays) load only with an explicit
``trusted=True``.

A save writes its files into a uniquely named staging directory inside the target
directory, marks the staging directory complete, then moves each file into place.
Files in the target directory that scsena did not write are left alone. A save
killed before the mark leaves the previous model untouched, and its staging
directory is removed by the next save or load; a save killed after the mark is
completed by the next save or load.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import socket
import stat
import tempfile
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd
import torch

from scsena.data import rna_modality

MODEL_FILE = "model.pt"
META_FILE = "scsena.json"
ADATA_FILE = "adata.h5ad"
MDATA_FILE = "mdata.h5mu"
#: Version of the ``model.pt`` layout; 2 = loadable with ``weights_only=True``.
MODEL_FORMAT = 2
STAGING_PREFIX = ".scsena-save-"
_COMPLETE = "complete.json"
#: Written first into every staging directory: only directories holding it are recovered.
_MARKER = "scsena-staging.json"
_TAG = "__scsena_type__"
_UNSAFE_MESSAGE = "Weights only load failed"


class UnsafeModelFileError(ValueError):
    """A model file that only an unrestricted unpickler can read (which can run code)."""


# ----------------------------------------------------------------- plain encoding
def _array_to_plain(arr: np.ndarray, where: str) -> dict:
    out = {_TAG: "ndarray", "dtype": arr.dtype.str, "shape": list(arr.shape)}
    kind = arr.dtype.kind
    if kind in "biufc" and arr.dtype.isnative:
        try:
            out["data"] = torch.from_numpy(np.ascontiguousarray(arr).reshape(-1).copy())
            return out
        except TypeError:  # a dtype torch has no tensor for
            pass
    if kind in "mM":
        out["data"] = torch.from_numpy(arr.astype(np.int64).reshape(-1).copy())
        return out
    if kind in "biufcUS":
        out["data"] = arr.reshape(-1).tolist()
        return out
    if kind == "O":
        out["data"] = [to_plain(x, f"{where}[{i}]") for i, x in enumerate(arr.reshape(-1))]
        return out
    raise TypeError(f"Cannot store {where} (NumPy dtype {arr.dtype}) in a model file.")


class MalformedError(ValueError):
    """Part of a model file that is not what scsena writes (the message says what)."""


#: Widest stored string (characters) accepted beyond the widest value actually stored.
_MAX_STRING_WIDTH = 256


def _stored_dtype(d: Mapping) -> np.dtype:
    try:
        dtype = np.dtype(d["dtype"])
    except (TypeError, ValueError, KeyError) as err:
        raise MalformedError(f"unknown array dtype {d.get('dtype')!r}") from err
    if dtype.kind not in "biufcmMUSO" or dtype.hasobject and dtype.kind != "O":
        raise MalformedError(f"array dtype {dtype} is not one scsena writes")
    return dtype


def _stored_shape(d: Mapping, n: int) -> tuple[int, ...]:
    shape = d.get("shape")
    ok = isinstance(shape, (list, tuple)) and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    )
    if not ok or int(np.prod(shape, dtype=object)) != n:
        raise MalformedError(f"array shape {shape!r} does not match its {n} stored values")
    return tuple(shape)


def _array_from_plain(d: Mapping) -> np.ndarray:
    dtype = _stored_dtype(d)
    data = d.get("data")
    if isinstance(data, torch.Tensor):
        shape = _stored_shape(d, data.numel())
        if dtype.kind not in "biufcmM" or dtype.itemsize > 16:
            raise MalformedError(f"array dtype {dtype} stored as a tensor")
        arr = data.cpu().numpy()
        arr = arr.view(dtype) if dtype.kind in "mM" else arr.astype(dtype, copy=False)
        return arr.reshape(shape)
    if not isinstance(data, list):
        raise MalformedError("array values are neither a tensor nor a list")
    shape = _stored_shape(d, len(data))
    if dtype.kind == "O":
        arr = np.empty(len(data), dtype=object)
        for i, x in enumerate(data):
            arr[i] = from_plain(x)
        return arr.reshape(shape)
    if dtype.kind in "US":
        arr = np.array(data, dtype=dtype.kind)  # as wide as the widest value, no wider
        width = dtype.itemsize // (4 if dtype.kind == "U" else 1)
        if width > max(arr.dtype.itemsize // (4 if dtype.kind == "U" else 1), _MAX_STRING_WIDTH):
            raise MalformedError(f"string dtype {dtype} far wider than its values")
        return arr.astype(dtype).reshape(shape)
    try:
        return np.array(data, dtype=dtype).reshape(shape)
    except (TypeError, ValueError, OverflowError) as err:
        raise MalformedError(f"array values do not fit dtype {dtype}") from err


def _values_to_plain(values: Any, where: str) -> dict:
    """A pandas column / index: its values and its dtype (categoricals kept)."""
    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, pd.CategoricalDtype):
        cat = pd.Categorical(values)
        return {
            _TAG: "categorical",
            "codes": _array_to_plain(np.asarray(cat.codes), where),
            "categories": _values_to_plain(cat.categories, where),
            "ordered": bool(cat.ordered),
        }
    return {
        _TAG: "values",
        "dtype": str(dtype),
        "data": _array_to_plain(np.asarray(values), where),
    }


def _values_from_plain(d: Mapping) -> Any:
    if d[_TAG] == "categorical":
        return pd.Categorical.from_codes(
            _array_from_plain(d["codes"]),
            categories=_values_from_plain(d["categories"]),
            ordered=d["ordered"],
        )
    arr = _array_from_plain(d["data"])
    if str(arr.dtype) != d["dtype"]:
        return pd.array(arr, dtype=d["dtype"])
    return arr


def _index_to_plain(index: pd.Index, where: str) -> dict:
    if isinstance(index, pd.MultiIndex):
        raise TypeError(f"Cannot store {where} (a pandas MultiIndex) in a model file.")
    return {
        _TAG: "index",
        "name": to_plain(index.name, where),
        "values": _values_to_plain(index, where),
    }


def _index_from_plain(d: Mapping) -> pd.Index:
    return pd.Index(_values_from_plain(d["values"]), name=from_plain(d["name"]))


def to_plain(obj: Any, where: str = "value") -> Any:
    """``obj`` as tensors and plain containers that ``torch.load(weights_only=True)`` reads.

    Parameters
    ----------
    obj
        Numbers, strings, bytes, ``None``, tensors, NumPy arrays and scalars, pandas
        DataFrames / Series / Index / Categorical, paths, and dicts, lists, tuples and
        sets of these.
    where
        Name of the value, for the error message.

    Returns
    -------
    Any
        The encoded value; :func:`from_plain` restores ``obj`` exactly.
    """
    if isinstance(obj, np.generic):  # before str / float: np.str_ and np.float64 subclass them
        return {_TAG: "scalar", "value": _array_to_plain(np.asarray(obj), where)}
    if obj is None or isinstance(obj, (str, bytes, torch.Tensor, torch.dtype, torch.device)):
        return obj
    if isinstance(obj, (bool, int, float, complex)):
        return obj
    if isinstance(obj, np.ndarray):
        return _array_to_plain(obj, where)
    if isinstance(obj, pd.DataFrame):
        return {
            _TAG: "dataframe",
            "index": _index_to_plain(obj.index, where),
            "columns": _index_to_plain(obj.columns, where),
            "data": [
                _values_to_plain(obj.iloc[:, i], f"{where}[{c!r}]")
                for i, c in enumerate(obj.columns)
            ],
        }
    if isinstance(obj, pd.Series):
        return {
            _TAG: "series",
            "index": _index_to_plain(obj.index, where),
            "name": to_plain(obj.name, where),
            "data": _values_to_plain(obj, where),
        }
    if isinstance(obj, pd.Index):
        return _index_to_plain(obj, where)
    if isinstance(obj, pd.Categorical):
        return _values_to_plain(pd.Series(obj), where)
    if isinstance(obj, PurePath):
        return {_TAG: "path", "value": str(obj)}
    if isinstance(obj, Mapping):
        return _mapping_to_plain(obj, where)
    if isinstance(obj, list):
        return [to_plain(x, f"{where}[{i}]") for i, x in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(to_plain(x, f"{where}[{i}]") for i, x in enumerate(obj))
    if isinstance(obj, (set, frozenset)):
        items = [to_plain(x, where) for x in obj]
        return {_TAG: "frozenset" if isinstance(obj, frozenset) else "set", "items": items}
    raise TypeError(
        f"Cannot store {where} of type {type(obj).__name__} in a model file: only numbers, "
        "strings, tensors, NumPy arrays, pandas tables and dicts / lists of these are kept."
    )


def _mapping_to_plain(obj: Mapping, where: str) -> Any:
    for key in obj:
        if not isinstance(key, (str, int, float, bool, type(None))) or key == _TAG:
            raise TypeError(f"Cannot store {where}: key {key!r} is not a plain string or number.")
    items = {k: to_plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, defaultdict):
        if obj.default_factory not in (None, dict, list):
            raise TypeError(f"Cannot store {where}: a defaultdict of {obj.default_factory}.")
        factory = obj.default_factory.__name__ if obj.default_factory else None
        return {_TAG: "defaultdict", "factory": factory, "items": items}
    if isinstance(obj, OrderedDict):
        return OrderedDict(items)
    return items


_FACTORIES = {None: None, "dict": dict, "list": list}


def from_plain(obj: Any) -> Any:
    """Inverse of :func:`to_plain`."""
    if isinstance(obj, Mapping) and _TAG in obj:
        tag = obj[_TAG]
        if tag == "ndarray":
            return _array_from_plain(obj)
        if tag == "scalar":
            return _array_from_plain(obj["value"])[()]
        if tag in ("values", "categorical"):
            return _values_from_plain(obj)
        if tag == "index":
            return _index_from_plain(obj)
        if tag == "series":
            return pd.Series(
                _values_from_plain(obj["data"]),
                index=_index_from_plain(obj["index"]),
                name=from_plain(obj["name"]),
            )
        if tag == "dataframe":
            columns = _index_from_plain(obj["columns"])
            data = {i: _values_from_plain(v) for i, v in enumerate(obj["data"])}
            df = pd.DataFrame(data, index=_index_from_plain(obj["index"]))
            df.columns = columns
            return df
        if tag == "path":
            return Path(obj["value"])
        if tag in ("set", "frozenset"):
            items = [from_plain(x) for x in obj["items"]]
            return frozenset(items) if tag == "frozenset" else set(items)
        if tag == "defaultdict":
            out = defaultdict(_FACTORIES[obj["factory"]])
            out.update({k: from_plain(v) for k, v in obj["items"].items()})
            return out
        raise ValueError(f"Unknown stored type {tag!r}: written by a newer scsena?")
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, from_plain(v)) for k, v in obj.items())
    if isinstance(obj, Mapping):
        return {k: from_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_plain(x) for x in obj]
    if isinstance(obj, tuple):
        return tuple(from_plain(x) for x in obj)
    return obj


# ------------------------------------------------------------------- model.pt
def write_model_file(
    path: Path, state_dict: Mapping[str, torch.Tensor], var_names: Any, attr_dict: Mapping
) -> None:
    """Write ``model.pt`` so that ``torch.load(path, weights_only=True)`` reads it."""
    state = OrderedDict()
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"Cannot store module state {key!r}: not a tensor.")
        state[key] = value.detach().cpu()
    payload = {
        "scsena_format": MODEL_FORMAT,
        "model_state_dict": state,
        "var_names": to_plain(var_names, "var_names"),
        "attr_dict": {k: to_plain(v, k) for k, v in attr_dict.items()},
    }
    torch.save(payload, path)


def _default_legacy_preset(attr_dict: dict) -> None:
    """Settings of models saved before they existed: what those models were.

    Before presets, every model was the published one (``preset="reference"``); before
    the member weights could be non-negative, every model had free ones.
    """
    init = attr_dict.get("init_params_")
    if not isinstance(init, dict):
        return
    params = init.get("non_kwargs", init)
    if isinstance(params, dict) and "preset" not in params:
        params["preset"] = "reference"
    if isinstance(params, dict) and "member_weights" not in params:
        params["member_weights"] = "free"


def _not_a_model(path: Path, reason: str) -> ValueError:
    return ValueError(
        f"{str(path)!r} is not a valid scsena model file ({reason}). Save the model again "
        "with model.save(), or point to the directory that model.save() wrote."
    )


def _unsafe(path: Path) -> UnsafeModelFileError:
    return UnsafeModelFileError(
        f"Refusing to load {str(path)!r}: it holds Python objects that only an unrestricted "
        "unpickler can rebuild, and unpickling can run arbitrary code. It was written by an "
        "older scsena version, or someone changed it. Load it only if you trust its "
        "source, with SENAVAE.load(dir_path, trusted=True) (command line: --trusted), and "
        "save it again to convert it to the safe format."
    )


def read_model_file(
    path: Path, map_location: Any = "cpu", trusted: bool = False
) -> tuple[dict, Any, dict]:
    """Read ``model.pt`` without running code.

    Parameters
    ----------
    path
        The file.
    map_location
        Passed to :func:`torch.load`.
    trusted
        Read a file that needs the unrestricted unpickler (older scsena versions),
        with a warning. Only for files from a trusted source.

    Returns
    -------
    tuple
        ``(attr_dict, var_names, model_state_dict)``.
    """
    _check_regular_file(path)
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as err:
        if _UNSAFE_MESSAGE not in str(err):
            raise _not_a_model(path, f"{type(err).__name__}: {_first_line(err)}") from None
        if not trusted:
            raise _unsafe(path) from None
        warnings.warn(
            f"Loading {str(path)!r} with the unrestricted unpickler (trusted=True): this "
            "runs any code the file holds. Save the model again to convert it to the safe "
            "format.",
            UserWarning,
            stacklevel=3,
        )
        raw = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - truncated, empty, not a torch file
        raise _not_a_model(path, f"{type(err).__name__}: {_first_line(err)}") from None
    return _unpack(path, raw)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "empty"


def _unpack(path: Path, raw: Any) -> tuple[dict, Any, dict]:
    keys = ("model_state_dict", "var_names", "attr_dict")
    if not isinstance(raw, Mapping) or not all(k in raw for k in keys):
        raise _not_a_model(path, "no model_state_dict / var_names / attr_dict")
    version = raw.get("scsena_format", 1)
    if not isinstance(version, int) or version > MODEL_FORMAT:
        raise _not_a_model(path, f"format {version!r}, written by a newer scsena; upgrade scsena")
    try:
        attr_dict = from_plain(raw["attr_dict"])
        var_names = from_plain(raw["var_names"])
    except MalformedError as err:
        raise _not_a_model(path, str(err)) from None
    except (TypeError, KeyError, IndexError, AttributeError, OverflowError, RecursionError) as err:
        raise _not_a_model(path, f"{type(err).__name__}: {_first_line(err)}") from None
    if not isinstance(attr_dict, dict) or "registry_" not in attr_dict:
        raise _not_a_model(path, "no registry_ among the saved attributes")
    if not isinstance(raw["model_state_dict"], Mapping):
        raise _not_a_model(path, "model_state_dict is not a mapping of tensors")
    state = OrderedDict(raw["model_state_dict"])
    state.pop("pyro_param_store", None)
    _check_state(path, state)
    return attr_dict, var_names, state


#: Tensor dtypes a saved module may hold.
_STATE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.int64, torch.bool)


def _check_regular_file(path: Path) -> None:
    """Refuse anything but a regular file (a FIFO would hang, a device never ends)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise
    except OSError as err:
        raise _not_a_model(path, f"{type(err).__name__}: {err}") from None
    if not stat.S_ISREG(mode):
        raise _not_a_model(path, "not a regular file (a pipe, device or directory)")


def _check_state(path: Path, state: Mapping) -> None:
    """Every entry a tensor of a dtype a module holds, floating ones finite."""
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise _not_a_model(path, f"module state {key!r} is not a named tensor")
        if value.dtype not in _STATE_DTYPES:
            raise _not_a_model(path, f"module state {key!r} has dtype {value.dtype}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise _not_a_model(path, f"module state {key!r} holds NaN or infinite weights")


#: ``init_params_`` that size the network, and the saved weight whose first dimension
#: each must equal; checked before anything is allocated.
_SIZED_BY = {"n_latent": "fc_mean.weight", "n_hidden": "d1.weight"}


def check_sizes(path: Path, attr_dict: Mapping, state: Mapping) -> None:
    """``init_params_`` that agree with the saved weights, before the network is built."""
    init = attr_dict.get("init_params_")
    params = init.get("non_kwargs", init) if isinstance(init, Mapping) else None
    if not isinstance(params, Mapping):
        raise _not_a_model(path, "no init_params_ among the saved attributes")
    for name, key in _SIZED_BY.items():
        value = params.get(name)
        if value is None:
            continue
        if key not in state:
            raise _not_a_model(path, f"weights {key!r} missing")
        if not isinstance(value, (int, np.integer)) or int(value) != state[key].shape[0]:
            raise _not_a_model(
                path,
                f"init_params_ {name}={value!r} but the weights {key!r} have "
                f"{state[key].shape[0]} rows",
            )


def check_state_matches(path: Path, module: torch.nn.Module, state: Mapping) -> None:
    """Refuse a saved state that does not fit the built module.

    It must have the module's entries, shapes and kinds of dtype, and its integer
    buffers (gene indices of the gene sets) must equal the ones the data's mask gives.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise _not_a_model(path, f"weights missing {missing[:5]}, unexpected {extra[:5]}")
    for key, value in own.items():
        saved = state[key]
        if saved.shape != value.shape:
            raise _not_a_model(
                path,
                f"weights {key!r} of shape {tuple(saved.shape)}, the model needs "
                f"{tuple(value.shape)}",
            )
        if saved.is_floating_point() != value.is_floating_point():
            raise _not_a_model(path, f"weights {key!r} of dtype {saved.dtype}")
        if not value.is_floating_point() and not torch.equal(saved.cpu(), value.cpu()):
            raise _not_a_model(
                path, f"index buffer {key!r} differs from the one the gene-set mask gives"
            )


# ----------------------------------------------------------------- saving
def own_files(prefix: str = "") -> tuple[str, ...]:
    """Names of the files a save writes (with ``prefix``)."""
    return tuple(f"{prefix}{name}" for name in (MODEL_FILE, META_FILE, ADATA_FILE, MDATA_FILE))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a save of this process that raised: not in progress any more
    if os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _read_plan(staging: Path) -> dict | None:
    try:
        plan = json.loads((staging / _COMPLETE).read_text())
    except (OSError, ValueError):
        return None
    files, remove = plan.get("files"), plan.get("remove")
    ok = isinstance(files, list) and isinstance(remove, list)
    names = (files or []) + (remove or [])
    if not ok or not all(isinstance(n, str) and n == Path(n).name for n in names):
        return None
    return plan


def _commit(staging: Path, target: Path, plan: Mapping) -> None:
    """Move the staged files into place (the metadata last), drop stale ones. Idempotent."""
    files = sorted(plan["files"], key=lambda n: n.endswith(META_FILE))
    for name in files:
        if (staging / name).exists():
            os.replace(staging / name, target / name)
    for name in plan["remove"]:
        (target / name).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)


def _leftover(entry: Path) -> int | None:
    """PID of a staging directory that a save of this host wrote, else ``None``.

    A directory counts only when its name is a staging name and it holds the marker
    that save wrote first (the random part of its name, this host, the PID): nothing
    else is ever touched, whatever its name, and a save running on another host
    sharing the file system is left alone.
    """
    m = re.fullmatch(re.escape(STAGING_PREFIX) + r"(\d+)-(.+)", entry.name)
    if not m or not entry.is_dir() or entry.is_symlink():
        return None
    try:
        marker = json.loads((entry / _MARKER).read_text())
    except (OSError, ValueError):
        return None
    pid, token = int(m.group(1)), m.group(2)
    ok = isinstance(marker, dict) and marker.get("token") == token and marker.get("pid") == pid
    return pid if ok and marker.get("host") == socket.gethostname() else None


def recover_saves(target: Path) -> None:
    """Complete or remove what killed saves into ``target`` left behind, with a warning."""
    target = Path(target)
    if not target.is_dir():
        return
    for entry in sorted(target.iterdir()):
        pid = _leftover(entry)
        if pid is None or _pid_alive(pid):
            continue
        plan = _read_plan(entry)
        if plan is None:
            shutil.rmtree(entry, ignore_errors=True)
            _tell(
                f"Removed {entry.name!r} in {str(target)!r}, the temporary files of a save "
                "that was interrupted; the model saved there before is unchanged."
            )
        else:
            _commit(entry, target, plan)
            _tell(f"Completed a save into {str(target)!r} that was interrupted.")


def _tell(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=4)


@contextmanager
def staged_save(target: Path, prefix: str = "", overwrite: bool = False) -> Iterator[Path]:
    """Stage a save of files into ``target``; on success, move them into place.

    Parameters
    ----------
    target
        The model directory.
    prefix
        Prefix of the file names.
    overwrite
        Replace the model files in an existing directory (other files are kept).

    Yields
    ------
    Path
        The staging directory to write the files into.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{str(target)!r} exists and is not a directory.")
    recover_saves(target)
    if target.is_dir() and not overwrite and any(target.iterdir()):
        raise FileExistsError(
            f"{str(target)!r} already exists and is not empty; pass overwrite=True to "
            "replace the model in it (files that scsena did not write are kept)."
        )
    target.mkdir(parents=True, exist_ok=True)
    prefix_ = f"{STAGING_PREFIX}{os.getpid()}-"
    staging = Path(tempfile.mkdtemp(prefix=prefix_, dir=target))
    marker = {"token": staging.name[len(prefix_) :], "host": socket.gethostname()}
    (staging / _MARKER).write_text(json.dumps(marker | {"pid": os.getpid()}))
    try:
        yield staging
        files = sorted(p.name for p in staging.iterdir() if p.name != _MARKER)
        remove = sorted(set(_previous_files(target, prefix)) - set(files))
        marker = staging / (_COMPLETE + ".tmp")
        marker.write_text(json.dumps({"files": files, "remove": remove}))
        os.replace(marker, staging / _COMPLETE)
        _commit(staging, target, {"files": files, "remove": remove})
    finally:
        if staging.exists() and _read_plan(staging) is None:
            shutil.rmtree(staging, ignore_errors=True)


def _previous_files(target: Path, prefix: str) -> list[str]:
    """The files the previous save into ``target`` wrote (listed in its metadata)."""
    try:
        meta = json.loads((target / f"{prefix}{META_FILE}").read_text())
    except (OSError, ValueError):
        return []
    files = meta.get("files") if isinstance(meta, Mapping) else None
    if not isinstance(files, list):
        return []
    return [f for f in files if isinstance(f, str) and f in own_files(prefix)]


# ----------------------------------------------------------------- loading
_SETUP_METHODS = ("setup_anndata", "setup_mudata")


def read_saved_data(path: Path, prefix: str, is_mudata: bool):
    """The data saved with the model, or ``False`` (with a warning) when there is none."""
    name = f"{prefix}{MDATA_FILE if is_mudata else ADATA_FILE}"
    file = Path(path) / name
    if file.exists():
        if is_mudata:
            import mudata

            return mudata.read_h5mu(file)
        import anndata

        return anndata.read_h5ad(file)
    warnings.warn(
        f"{str(path)!r} holds no saved data ({name}) and no adata was passed: the model is "
        "loaded without data; pass adata= to use it on data.",
        UserWarning,
        stacklevel=4,
    )
    return False


def build_model(
    cls,
    path: Path,
    adata,
    saved: tuple[dict, Any, dict],
    prefix: str = "",
    accelerator: str = "auto",
    device: int | str = "auto",
    allowed_classes_names_list: list[str] | None = None,
):
    """Rebuild a model from what :func:`read_model_file` returned (as scvi-tools' ``load``)."""
    from scvi.data._constants import _MODEL_NAME_KEY, _SETUP_ARGS_KEY, _SETUP_METHOD_NAME
    from scvi.model._utils import parse_device_args
    from scvi.model.base._save_load import _initialize_model, _validate_var_names

    attr_dict, var_names, state = saved
    _, _, torch_device = parse_device_args(
        accelerator=accelerator, devices=device, return_device="torch", validate_single_device=True
    )
    registry = attr_dict.pop("registry_")
    name = registry.get(_MODEL_NAME_KEY, cls.__name__)
    if name != cls.__name__ and name not in (allowed_classes_names_list or []):
        raise ValueError(f"{str(path)!r} holds a {name} model, not a {cls.__name__}.")
    method = registry.get(_SETUP_METHOD_NAME, "setup_anndata")
    if method not in _SETUP_METHODS or _SETUP_ARGS_KEY not in registry:
        raise _not_a_model(path / f"{prefix}{MODEL_FILE}", f"setup method {method!r}")
    attr_dict = {
        k: v
        for k, v in attr_dict.items()
        if isinstance(k, str) and k.endswith("_") and not k.startswith("_")
    }
    if adata is None:
        adata = read_saved_data(path, prefix, method == "setup_mudata")
    if adata:
        rna = rna_modality(adata, registry[_SETUP_ARGS_KEY].get("rna_mod"))
        _validate_var_names(rna, np.asarray(var_names))
        getattr(cls, method)(adata, source_registry=registry, **registry[_SETUP_ARGS_KEY])
    _default_legacy_preset(attr_dict)
    file = path / f"{prefix}{MODEL_FILE}"
    check_sizes(file, attr_dict, state)
    try:
        model = _initialize_model(cls, adata, registry, attr_dict, None)
    except (TypeError, KeyError, IndexError, AttributeError) as err:
        raise _not_a_model(file, f"{type(err).__name__}: {_first_line(err)}") from None
    model.module.on_load(model)
    check_state_matches(file, model.module, state)
    model.module.load_state_dict(state)
    model.to_device(torch_device)
    model.module.eval()
    if adata:
        model._validate_anndata(adata)
    return model
