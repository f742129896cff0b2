"""What real CRISPR screens do that a kind simulator does not: the simulator's traps.

``perturbation_type="knockout"`` turns them on together (each can be set on its own):

- the targeted gene's own expression falls (on-target knock-out or CRISPRi);
- a share of the targets has no downstream effect (``null_fraction``);
- a program acts on a subset of its GO term's members, with mixed signs
  (``program_fraction``, ``negative_fraction``);
- some program terms have a *twin*: another GO term with identical measured members
  (``redundant_programs``), as GO's nested terms often have on a gene panel;
- a few highly expressed member genes of the program terms vary from cell to cell
  for a reason of their own (a nuisance factor) and dominate the control cells'
  variance of their terms (``n_dominant_genes``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

#: The two kinds of perturbation the simulator knows.
PERTURBATION_TYPES = ("activation", "knockout")
#: Log-expression added to the baseline of a dominant gene.
_DOMINANT_BOOST = 3.0
#: Loading of a dominant gene on the nuisance factor.
_DOMINANT_LOADING = 1.0
#: A twin term shares at least this many genes with its program term.
_MIN_TWIN_OVERLAP = 8


@dataclass(frozen=True)
class Traps:
    """Resolved trap settings of one simulation."""

    perturbation_type: str
    null_fraction: float
    program_fraction: float
    negative_fraction: float
    redundant_programs: int
    n_dominant_genes: int

    @property
    def knockout(self) -> bool:
        """Whether targeting a gene lowers it (and its programs)."""
        return self.perturbation_type == "knockout"

    @property
    def sign(self) -> float:
        """Direction of a target's effect on its gene and its programs."""
        return -1.0 if self.knockout else 1.0

    def as_params(self) -> dict:
        """The settings as recorded in the ground truth's ``params``."""
        return {
            "perturbation_type": self.perturbation_type,
            "null_fraction": self.null_fraction,
            "program_fraction": self.program_fraction,
            "negative_fraction": self.negative_fraction,
            "redundant_programs": self.redundant_programs,
            "n_dominant_genes": self.n_dominant_genes,
        }


def resolve_traps(
    perturbation_type: str,
    null_fraction: float | None,
    program_fraction: float | None,
    negative_fraction: float | None,
    redundant_programs: int | None,
    n_dominant_genes: int | None,
    n_programs: int,
    n_genes: int,
) -> Traps:
    """Each setting left at ``None`` takes its mode's default; every value is checked.

    Defaults: ``"activation"`` has no trap (``0, 1, 0, 0, 0``); ``"knockout"`` has
    half of the targets null, programs on 60% of their members of which a quarter
    go the other way, half of the programs with a twin term, and one gene in 50
    (at least 3) dominant.
    """
    if perturbation_type not in PERTURBATION_TYPES:
        raise ValueError(
            f"perturbation_type must be one of {list(PERTURBATION_TYPES)}, got "
            f"{perturbation_type!r}."
        )
    ko = perturbation_type == "knockout"
    defaults = {
        "null_fraction": 0.5 if ko else 0.0,
        "program_fraction": 0.6 if ko else 1.0,
        "negative_fraction": 0.25 if ko else 0.0,
        "redundant_programs": (n_programs + 1) // 2 if ko else 0,
        "n_dominant_genes": max(3, n_genes // 50) if ko else 0,
    }
    given = {
        "null_fraction": null_fraction,
        "program_fraction": program_fraction,
        "negative_fraction": negative_fraction,
        "redundant_programs": redundant_programs,
        "n_dominant_genes": n_dominant_genes,
    }
    v = {k: defaults[k] if given[k] is None else given[k] for k in defaults}
    if not 0.0 <= float(v["null_fraction"]) < 1.0:
        raise ValueError(
            f"null_fraction must be in [0, 1) (at least one target acts), got {v['null_fraction']}."
        )
    if not 0.0 < float(v["program_fraction"]) <= 1.0:
        raise ValueError(f"program_fraction must be in (0, 1], got {v['program_fraction']}.")
    if not 0.0 <= float(v["negative_fraction"]) <= 0.5:
        raise ValueError(
            f"negative_fraction must be in [0, 0.5] (most members follow their program), "
            f"got {v['negative_fraction']}."
        )
    if not 0 <= int(v["redundant_programs"]) <= n_programs:
        raise ValueError(
            f"redundant_programs must be between 0 and n_programs={n_programs}, got "
            f"{v['redundant_programs']}."
        )
    if not 0 <= int(v["n_dominant_genes"]) <= n_genes // 10:
        raise ValueError(
            f"n_dominant_genes must be between 0 and n_genes // 10 = {n_genes // 10}, got "
            f"{v['n_dominant_genes']}."
        )
    return Traps(
        perturbation_type=perturbation_type,
        null_fraction=float(v["null_fraction"]),
        program_fraction=float(v["program_fraction"]),
        negative_fraction=float(v["negative_fraction"]),
        redundant_programs=int(v["redundant_programs"]),
        n_dominant_genes=int(v["n_dominant_genes"]),
    )


def twin_terms(
    mat: sparse.csr_matrix, programs: list[int], count: int
) -> tuple[dict[int, int], np.ndarray]:
    """A twin for up to ``count`` programs, and the genes to leave out of the panel.

    The twin of program term ``P`` is the other term ``Q`` (not a program) that shares
    at least 8 genes with it and differs from it by the fewest genes; leaving the genes
    of ``P`` xor ``Q`` out of the simulated panel gives both the same measured members.
    Programs are taken in order; one whose exclusions would take genes of an earlier
    program, or whose twin was already taken, is skipped.

    Returns
    -------
    Program row -> twin row, and the sorted universe indices of the excluded genes.
    """
    if count == 0:
        return {}, np.zeros(0, dtype=np.int64)
    sizes = np.diff(mat.indptr)
    program_set = set(programs)
    twins: dict[int, int] = {}
    excluded: set[int] = set()
    kept: set[int] = set()  # genes of programs that must stay
    for row in programs:
        members = set(mat.indices[mat.indptr[row] : mat.indptr[row + 1]].tolist())
        if len(twins) == count:
            kept |= members
            continue
        overlap = np.asarray((mat @ mat[row].T).todense()).ravel()
        differ = sizes + sizes[row] - 2 * overlap
        ok = overlap >= _MIN_TWIN_OVERLAP
        ok[list(program_set | set(twins.values()))] = False
        chosen = None
        for q in np.flatnonzero(ok)[np.argsort(differ[ok], kind="stable")]:
            q_members = set(mat.indices[mat.indptr[q] : mat.indptr[q + 1]].tolist())
            drop = members ^ q_members
            if not drop & kept and len(members - drop) >= _MIN_TWIN_OVERLAP:
                chosen = (int(q), drop, members - drop)
                break
        if chosen is None:
            kept |= members
            continue
        twins[row] = chosen[0]
        excluded |= chosen[1]
        kept |= chosen[2]
    return twins, np.asarray(sorted(excluded), dtype=np.int64)


def shape_programs(
    rng: np.random.Generator, loadings: np.ndarray, traps: Traps, exclude: np.ndarray
) -> np.ndarray:
    """Programs on a subset of their members, some with the other sign (in place).

    Each program keeps ``ceil(program_fraction * n)`` of its ``n`` member genes (at
    least 3), chosen at random but never among ``exclude`` when it can (the dominant
    genes), and turns ``round(negative_fraction * kept)`` of them negative.
    """
    if traps.program_fraction == 1.0 and traps.negative_fraction == 0.0:
        return loadings
    avoid = np.zeros(loadings.shape[1], dtype=bool)
    avoid[exclude] = True
    for k in range(loadings.shape[0]):
        members = np.flatnonzero(loadings[k])
        keep_n = max(3, int(np.ceil(traps.program_fraction * members.size)))
        order = rng.permutation(members)
        order = np.concatenate([order[~avoid[order]], order[avoid[order]]])
        drop = order[keep_n:]
        loadings[k, drop] = 0.0
        kept = order[:keep_n]
        flip = rng.choice(kept, size=int(round(traps.negative_fraction * kept.size)), replace=False)
        loadings[k, flip] *= -1.0
    return loadings


def dominant_genes(
    rng: np.random.Generator, program_genes: list[np.ndarray], targets: list[int], count: int
) -> np.ndarray:
    """``count`` member genes of the programs (never targets), to be made dominant."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    pool = np.setdiff1d(np.unique(np.concatenate(program_genes)), np.asarray(targets))
    return np.sort(rng.choice(pool, size=min(count, pool.size), replace=False)).astype(np.int64)


def make_dominant(baseline: np.ndarray, genes: np.ndarray) -> np.ndarray:
    """Nuisance loadings (one per gene) for ``genes``, whose baselines are raised in place."""
    nuisance = np.zeros(baseline.size)
    baseline[genes] += _DOMINANT_BOOST
    nuisance[genes] = _DOMINANT_LOADING
    return nuisance


def null_targets(rng: np.random.Generator, n_targets: int, null_fraction: float) -> np.ndarray:
    """Boolean mask of the targets with no downstream effect."""
    n_null = int(round(null_fraction * n_targets))
    n_null = min(n_null, n_targets - 1)
    out = np.zeros(n_targets, dtype=bool)
    if n_null:
        out[rng.choice(n_targets, size=n_null, replace=False)] = True
    return out
