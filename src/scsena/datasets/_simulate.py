"""Perturb-seq simulator with a known causal structure over GO biological-process programs.

Generative model (one latent factor per program, ``K`` factors, ``G`` genes):

- factor ``k`` is tied to a GO BP term of SENA's list; its program loads on the
  term's member genes among the simulated genes (loadings ``L``, ``K x G``);
- a random DAG ``A`` among factors, strictly upper triangular in a random
  topological order; for a cell, ``z ~ N(0, I)``, ``z_int = z + sum_t s_t (+ v_AB)``
  and ``u = z_int (I - A)^-1`` (as in the SENA causal layer);
- targeting gene ``t`` (CRISPRa-like) shifts the factors of the program terms that
  contain ``t`` by ``effect_size * strength_t`` and up-regulates ``t`` itself;
  a double ``A,B`` adds both shifts plus a random interaction vector ``v_AB``;
- gene log-rates ``baseline + u L`` (plus, with several batches, the gene-wise
  log-effect of the cell's batch) are turned into per-cell proportions, scaled
  by a log-normal library size and sampled as negative-binomial (gamma-Poisson)
  counts.
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from scsena._constants import ADATA_KEYS
from scsena.gene_sets import gene_id_table, go_bp, go_term_names

from ._sampling import Workspace, assemble_csr, csr_parts, nb_counts, single_threaded_blas
from ._traps import (
    Traps,
    dominant_genes,
    make_dominant,
    null_targets,
    resolve_traps,
    shape_programs,
    twin_terms,
)

#: Key of the ground truth in ``adata.uns``.
SIMULATION_UNS_KEY = "scsena_simulation"

_SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]*$")
_TARGET_SUM = 1e4
_MIN_PROGRAM_GENES = 8  # a program term needs this many annotated genes overall
_COVER_GENES = 6  # genes drawn from each additional (non-program) term
_PROGRAM_FRACTION = 0.5  # share of genes given to program terms
_COVER_FRACTION = 0.85  # share of genes drawn term by term (programs + cover terms)
_MAX_OVERLAP = 0.5  # max overlap coefficient between two program terms
_PARENT_VARIANCE = 0.5  # variance of a factor explained by its parents in the DAG
_CHUNK_ELEMENTS = 4_000_000  # cells x genes per generation chunk


@lru_cache(maxsize=1)
def _universe() -> tuple[np.ndarray, np.ndarray, list[str], sparse.csr_matrix]:
    """Genes annotated in SENA's GO terms with a one-to-one symbol, and the term matrix.

    Returns
    -------
    Ensembl ids (sorted), their symbols, term ids (sorted) and a terms x genes CSR
    membership matrix (terms with at least 5 such genes).
    """
    sets = go_bp(terms="sena", id_type="ensembl")
    table = gene_id_table()[["symbol", "ensembl_id"]].dropna().astype(str)
    table = table[(table["symbol"] != "") & (table["ensembl_id"] != "")].drop_duplicates()
    one_sym = table.groupby("ensembl_id")["symbol"].transform("nunique") == 1
    one_ens = table.groupby("symbol")["ensembl_id"].transform("nunique") == 1
    table = table[one_sym & one_ens & table["symbol"].str.match(_SYMBOL_RE)]
    ens2sym = dict(zip(table["ensembl_id"], table["symbol"]))
    annotated = sorted({g for genes in sets.values() for g in genes if g in ens2sym})
    genes = np.asarray(annotated, dtype=object)
    symbols = np.asarray([ens2sym[g] for g in annotated], dtype=object)
    index = pd.Index(genes)
    term_ids: list[str] = []
    rows: list[np.ndarray] = []
    for term in sorted(sets):
        pos = index.get_indexer(sets[term])
        pos = np.unique(pos[pos >= 0])
        if pos.size >= 5:
            term_ids.append(term)
            rows.append(pos)
    indptr = np.concatenate([[0], np.cumsum([r.size for r in rows])])
    mat = sparse.csr_matrix(
        (np.ones(int(indptr[-1]), dtype=np.int8), np.concatenate(rows), indptr),
        shape=(len(term_ids), genes.size),
    )
    return genes, symbols, term_ids, mat


def _members(mat: sparse.csr_matrix, row: int) -> np.ndarray:
    return mat.indices[mat.indptr[row] : mat.indptr[row + 1]]


def _choose_programs(rng: np.random.Generator, mat: sparse.csr_matrix, n_programs: int) -> list:
    """Pick program terms with enough genes and little overlap with each other."""
    sizes = np.diff(mat.indptr)
    candidates = np.flatnonzero(sizes >= _MIN_PROGRAM_GENES)
    chosen: list[int] = []
    chosen_sets: list[set] = []
    rejected: list[int] = []
    for row in rng.permutation(candidates):
        members = set(_members(mat, row).tolist())
        if any(
            len(members & other) > _MAX_OVERLAP * min(len(members), len(other))
            for other in chosen_sets
        ):
            rejected.append(int(row))
            continue
        chosen.append(int(row))
        chosen_sets.append(members)
        if len(chosen) == n_programs:
            return chosen
    # Too few disjoint-enough terms: allow overlapping ones.
    chosen += rejected[: n_programs - len(chosen)]
    if len(chosen) < n_programs:
        raise ValueError(
            f"n_programs={n_programs} exceeds the {len(chosen)} GO terms that can serve as "
            "programs."
        )
    return chosen


def _choose_genes(
    rng: np.random.Generator,
    mat: sparse.csr_matrix,
    programs: list[int],
    n_genes: int,
    excluded: np.ndarray | None = None,
) -> np.ndarray:
    """Universe indices of the simulated genes (sorted), never any of ``excluded``."""
    n_universe = mat.shape[1]
    per_program = int(np.clip(_PROGRAM_FRACTION * n_genes / len(programs), 5, 30))
    chosen: set[int] = set()
    banned = set() if excluded is None else set(excluded.tolist())
    for row in programs:
        members = _members(mat, row)
        if banned:
            members = members[~np.isin(members, excluded)]
        take = min(per_program, members.size)
        chosen.update(rng.choice(members, size=take, replace=False).tolist())
    cover_budget = int(_COVER_FRACTION * n_genes)
    program_set = set(programs)
    for row in rng.permutation(mat.shape[0]):
        if len(chosen) >= cover_budget:
            break
        if row in program_set:
            continue
        members = _members(mat, row)
        picked = rng.choice(members, size=min(_COVER_GENES, members.size), replace=False)
        new = [g for g in picked.tolist() if g not in chosen and g not in banned]
        if len(chosen) + len(new) <= cover_budget:
            chosen.update(new)
    rest = np.setdiff1d(np.arange(n_universe), np.fromiter(chosen, dtype=np.int64))
    if banned:
        rest = np.setdiff1d(rest, excluded)
    n_fill = n_genes - len(chosen)
    if n_fill > 0:
        chosen.update(rng.choice(rest, size=n_fill, replace=False).tolist())
    return np.sort(np.fromiter(chosen, dtype=np.int64))


def _random_dag(rng: np.random.Generator, k: int, density: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted DAG strictly upper triangular in a random order; returns (A, order).

    Edges get random signs and magnitudes; the incoming weights of each node are then
    scaled so that, for ``z ~ N(0, I)``, its parents explain a variance of
    ``_PARENT_VARIANCE`` (``u_j = z_j + sum_i A_ij u_i``). This keeps every factor on
    the same scale whatever the number of factors and the density.
    """
    order = rng.permutation(k)
    upper = np.triu(rng.random((k, k)) < density, 1)
    raw = rng.uniform(0.5, 1.5, size=(k, k)) * rng.choice([-1.0, 1.0], size=(k, k))
    a = np.where(upper, raw, 0.0)  # in topological order
    m = np.eye(k)  # u = z m, m = (I - a)^-1, built column by column
    for j in range(k):
        col = a[:j, j]
        if np.any(col):
            # u_j = z_j + sum_i a_ij u_i = z (e_j + m[:, :j] col)
            contrib = m[:, :j] @ col
            a[:j, j] = col * np.sqrt(_PARENT_VARIANCE / float(contrib @ contrib))
            m[:, j] += m[:, :j] @ a[:j, j]
    dag = np.zeros((k, k))
    dag[np.ix_(order, order)] = a
    return dag, order


def simulate_perturbseq(
    n_cells: int = 2000,
    n_genes: int = 1000,
    n_targets: int = 20,
    n_doubles: int = 10,
    *,
    n_programs: int | None = None,
    control_fraction: float = 0.15,
    effect_size: float = 1.5,
    interaction_strength: float = 0.5,
    dag_density: float = 0.2,
    direct_effect: float = 2.0,
    library_size: tuple[float, float] = (8.5, 0.35),
    dispersion: float = 0.1,
    baseline_sd: float = 1.0,
    loading_noise: float = 0.0,
    saturation: float | None = None,
    n_batches: int = 1,
    batch_effect: float = 0.0,
    perturbation_type: Literal["activation", "knockout"] = "activation",
    null_fraction: float | None = None,
    program_fraction: float | None = None,
    negative_fraction: float | None = None,
    redundant_programs: int | None = None,
    n_dominant_genes: int | None = None,
    seed: int = 0,
    n_jobs: int | None = None,
) -> ad.AnnData:
    """Simulate a CRISPRa Perturb-seq screen with known causal ground truth.

    Genes are real human genes (Ensembl ids) annotated in SENA's GO BP terms, chosen
    so that a SENA gene-set mask built from them keeps many terms. Each latent factor
    is tied to one GO BP term (its *program*); perturbation targets are program
    genes, and targeting gene ``t`` shifts the factors whose term contains ``t``.
    Factors interact through a random DAG (``u = z_int (I - A)^-1``, the SENA causal
    layer), and double perturbations add both single shifts plus a non-additive
    interaction. Counts are negative binomial with realistic library sizes.

    Parameters
    ----------
    n_cells
        Number of cells.
    n_genes
        Number of genes.
    n_targets
        Number of single perturbation targets (gene symbols).
    n_doubles
        Number of double perturbations (unique pairs of single targets).
    n_programs
        Number of latent factors / GO programs; default ``n_targets`` (the method's
        ``Z = P``), capped at ``n_genes // 10``.
    control_fraction
        Fraction of control cells; the other cells are split evenly over the single
        and double perturbations.
    effect_size
        Latent shift of a targeted program, times a per-target strength drawn
        uniformly in [0.6, 1.4].
    interaction_strength
        Scale of the random latent interaction vector of a double, relative to
        ``effect_size`` (``0`` makes doubles additive in latent space).
    dag_density
        Probability of an edge between two factors (in topological order). Edges
        have random signs; the incoming weights of each factor are scaled so that its
        parents explain a variance of 0.5 (its own noise has variance 1).
    direct_effect
        Log-fold up-regulation of the targeted gene itself, times the target's
        strength.
    library_size
        Mean and standard deviation of the log total counts per cell (the default
        gives a median of about 4,900 UMIs).
    dispersion
        Typical negative-binomial overdispersion ``phi`` (variance
        ``mu + phi mu^2``); gene-wise values vary log-normally around it.
    baseline_sd
        Standard deviation of the gene baseline log-expression.
    loading_noise
        Standard deviation of Gaussian noise added to all program loadings (``0``:
        programs load on their term's genes only).
    saturation
        ``None`` (default): gene log-rates respond linearly to the programs,
        ``baseline + u L``. A number ``c > 0``: they saturate, ``baseline + c tanh(u L /
        c)``, so two perturbations that push the same genes add up to less than the
        sum of their effects, a non-additivity that single perturbations reveal (a
        model that learns the response curve from singles can predict it for doubles;
        the additive baseline cannot).
    n_batches
        Number of batches (lanes, donors, replicates). With ``n_batches > 1``, cells
        are assigned to batches at random, independently of their perturbation, in
        sizes that differ by at most one, and ``obs["batch"]`` holds ``"batch0"``,
        ``"batch1"``, ...; with ``1`` (the default) there is no ``batch`` column.
    batch_effect
        Standard deviation of the gene-wise log-scale effect of each batch: batch
        ``b`` multiplies the negative-binomial mean of gene ``g`` by
        ``exp(e_bg)`` with ``e_bg ~ N(0, batch_effect^2)`` (before the per-cell
        library-size scaling), so one perturbation looks different across batches.
        Needs ``n_batches > 1``. Batches are drawn from their own random stream: with
        ``batch_effect=0`` the counts are those of the same call with one batch.
    perturbation_type
        ``"activation"`` (default; CRISPRa-like): a target's gene and its programs go
        up, and none of the traps below is on. ``"knockout"`` (CRISPR-KO or CRISPRi):
        the targeted gene's own log-rate falls by ``direct_effect`` times the target's
        strength (it is given a baseline of expressed genes, so the loss shows), its
        programs are shifted down, and the traps below take their knock-out defaults,
        the way real screens fail a kind simulator.
    null_fraction
        Share of the targets with no downstream effect (only their own gene
        changes); default 0, with ``"knockout"`` 0.5 (in real screens most targets
        barely move expression). At least one target keeps an effect.
    program_fraction
        Share of a program term's simulated members its factor loads on (the others
        are members that do not move); default 1, with ``"knockout"`` 0.6.
    negative_fraction
        Share of a program's loaded members whose loading is negative (they move
        against the program); default 0, with ``"knockout"`` 0.25.
    redundant_programs
        Number of program terms given a *twin*: another GO term whose simulated
        members are exactly the program term's (the genes that tell them apart are
        left out of the panel), as nested GO terms often are on a gene panel;
        default 0, with ``"knockout"`` half of the programs (fewer when no twin fits).
    n_dominant_genes
        Number of member genes of the programs (never targets, never loaded on a
        program when avoidable) that are highly expressed (baseline raised by 3) and
        driven by a nuisance factor of their own, so that they dominate the control
        cells' variance of their terms; default 0, with ``"knockout"``
        ``max(3, n_genes // 50)``.
    seed
        Random seed; the same seed gives an identical AnnData.
    n_jobs
        Threads used to sample counts (default: up to 4); the result does not
        depend on it.

    Returns
    -------
    AnnData
        ``X``: log-normalised expression (``normalize_total`` to 1e4, ``log1p``), CSR
        float32; ``layers["counts"]``: counts, CSR float32; ``var_names``: Ensembl
        ids, ``var["gene_symbols"]``; ``obs["guide_ids"]`` (``""``, ``"A"``,
        ``"A,B"``) and ``obs["perturbation_type"]`` (control/single/double);
        ``uns["scsena_simulation"]``: the ground truth (``factor_terms``,
        ``factor_term_names``, ``dag``, ``dag_order``, ``loadings``, ``baseline``,
        ``dispersion``, ``targets``, ``target_ensembl``, ``target_strength``,
        ``target_shift``, ``target_factors``, ``target_terms``, ``doubles``,
        ``interaction``, ``params``, ``perturbation_type``, ``target_effect`` (which
        targets act downstream), ``target_gene_effect`` (targets x genes: the
        noise-free change of every gene's log-rate, programs through the DAG plus the
        target's own gene; with ``saturation``, at a cell whose programs sit at 0),
        ``twin_terms`` (program term -> its twin terms), ``dominant_genes``; with
        several batches also ``batches``, the batch names, and ``batch_effects``, the
        true log-effects, batches x genes);
        ``uns["scsena_dataset"]``: name and held-out single perturbations.

    Examples
    --------
    >>> from scsena.datasets import simulate_perturbseq
    >>> adata = simulate_perturbseq(n_cells=500, n_genes=300, n_targets=8, n_doubles=4)
    >>> int(adata.obs["perturbation_type"].value_counts()["control"])
    75
    >>> batched = simulate_perturbseq(
    ...     n_cells=500, n_genes=300, n_targets=8, n_doubles=4, n_batches=2, batch_effect=0.3
    ... )
    >>> batched.obs["batch"].value_counts().tolist()
    [250, 250]
    >>> ko = simulate_perturbseq(
    ...     n_cells=500, n_genes=300, n_targets=8, n_doubles=4, perturbation_type="knockout"
    ... )
    >>> int(ko.uns["scsena_simulation"]["target_effect"].sum())  # half of the targets act
    4
    """
    params = {
        "n_cells": int(n_cells),
        "n_genes": int(n_genes),
        "n_targets": int(n_targets),
        "n_doubles": int(n_doubles),
        "control_fraction": float(control_fraction),
        "effect_size": float(effect_size),
        "interaction_strength": float(interaction_strength),
        "dag_density": float(dag_density),
        "direct_effect": float(direct_effect),
        "library_size": [float(library_size[0]), float(library_size[1])],
        "dispersion": float(dispersion),
        "baseline_sd": float(baseline_sd),
        "loading_noise": float(loading_noise),
        "seed": int(seed),
    }
    if n_programs is None:
        n_programs = max(1, min(n_targets, n_genes // 10))
    params["n_programs"] = int(n_programs)
    if saturation is not None:  # recorded only when set: the default's params are unchanged
        if not saturation > 0:
            raise ValueError(
                f"saturation must be > 0 (or None for a linear response), got {saturation}."
            )
        params["saturation"] = float(saturation)
    _check_batch_args(int(n_batches), float(batch_effect), params["n_cells"])
    if n_batches > 1:  # recorded only with batches: one-batch output is unchanged
        params["n_batches"] = int(n_batches)
        params["batch_effect"] = float(batch_effect)
    _check_args(params)
    traps = resolve_traps(
        perturbation_type,
        null_fraction,
        program_fraction,
        negative_fraction,
        redundant_programs,
        n_dominant_genes,
        params["n_programs"],
        params["n_genes"],
    )
    plain = resolve_traps("activation", None, None, None, None, None, 1, params["n_genes"])
    if traps != plain:  # recorded only off the default: activation's params are unchanged
        params.update(traps.as_params())

    return _simulate(params, traps, int(n_batches), float(batch_effect), n_jobs)


def _simulate(
    p: dict, traps: Traps, n_batches: int, batch_effect: float, n_jobs: int | None
) -> ad.AnnData:
    """The simulated screen of checked parameters ``p`` (see :func:`simulate_perturbseq`)."""
    root = np.random.SeedSequence(p["seed"])
    # A fourth child for batches and a fifth for the traps: children are numbered, so
    # the first three streams stay those of one batch without traps.
    ss_struct, ss_design, ss_cells, ss_batch, ss_traps = root.spawn(5)
    rng = np.random.default_rng(ss_struct)
    structure = _draw_structure(
        rng,
        p["n_genes"],
        p["n_programs"],
        p["dag_density"],
        p["baseline_sd"],
        p["dispersion"],
        p["loading_noise"],
        traps.redundant_programs,
    )
    effect_size = p["effect_size"]
    targets = _draw_targets(
        rng, structure, p["n_targets"], effect_size, p["baseline_sd"], traps.sign
    )
    targets, nuisance = _set_traps(np.random.default_rng(ss_traps), structure, targets, traps)

    drng = np.random.default_rng(ss_design)
    interaction = p["interaction_strength"] * effect_size
    conditions = _draw_conditions(drng, targets, p["n_doubles"], interaction)
    n_cells = p["n_cells"]
    cond = _assign_cells(drng, n_cells, p["control_fraction"], len(conditions.labels))
    heldout = _heldout(drng, list(targets.symbols))
    batch, batch_effects = _draw_batches(ss_batch, n_cells, p["n_genes"], n_batches, batch_effect)

    model = _CellModel.build(
        structure,
        targets,
        conditions,
        traps.sign * p["direct_effect"],
        tuple(p["library_size"]),
        batch_effects,
        nuisance,
        p.get("saturation"),
    )
    counts, X = _generate_counts(model, ss_cells, cond, batch, n_jobs)

    obs = _cell_table(conditions, cond, batch, n_batches)
    var = pd.DataFrame({"gene_symbols": structure.symbols}, index=pd.Index(structure.var_names))
    adata = ad.AnnData(X=X, obs=obs, var=var, layers={"counts": counts})
    truth = _ground_truth(structure, targets, conditions, p)
    truth.update(_trap_truth(structure, targets, model, traps, nuisance))
    if batch is not None:
        truth["batches"] = np.asarray(obs["batch"].cat.categories)
        truth["batch_effects"] = batch_effects.astype(np.float32)
    adata.uns[SIMULATION_UNS_KEY] = truth
    adata.uns[ADATA_KEYS.DATASET] = {
        "name": "simulated",
        "heldout": np.asarray(heldout, dtype=object),
    }
    return adata


@dataclass(frozen=True)
class _Structure:
    """Genes, programs and causal model, drawn from the structure stream."""

    var_names: np.ndarray  # Ensembl ids of the simulated genes
    symbols: np.ndarray
    factor_terms: list[str]  # GO term of each factor
    program_genes: list[np.ndarray]  # simulated genes of each factor's term
    loadings: np.ndarray  # factors x genes
    dag: np.ndarray
    order: np.ndarray
    baseline: np.ndarray  # gene log-expression (targets set by _draw_targets)
    dispersion: np.ndarray  # gene-wise NB overdispersion
    twins: dict[str, list[str]]  # program term -> terms with the same simulated members


@dataclass(frozen=True)
class _Targets:
    """Single perturbation targets, sorted by symbol."""

    genes: list[int]  # positions among the simulated genes
    symbols: np.ndarray
    strength: np.ndarray
    factors: list[np.ndarray]  # factors whose term contains each target
    shift: np.ndarray  # targets x factors latent shifts


@dataclass(frozen=True)
class _Conditions:
    """Perturbation conditions: control, singles, doubles (in this order)."""

    labels: list[str]
    kinds: np.ndarray  # "control" / "single" / "double"
    double_pairs: np.ndarray  # doubles x 2 target positions
    interaction: np.ndarray  # doubles x factors
    shifts: np.ndarray  # conditions x factors


def _draw_structure(
    rng: np.random.Generator,
    n_genes: int,
    n_programs: int,
    dag_density: float,
    baseline_sd: float,
    dispersion: float,
    loading_noise: float,
    redundant_programs: int = 0,
) -> _Structure:
    """Simulated genes, program loadings, DAG, baselines and dispersions."""
    genes_u, symbols_u, term_ids, mat = _universe()
    if n_genes > genes_u.size:
        raise ValueError(
            f"n_genes={n_genes} exceeds the {genes_u.size} genes annotated in SENA's GO "
            "terms (with a one-to-one gene symbol) that the simulator draws from."
        )
    programs = _choose_programs(rng, mat, n_programs)
    twins, excluded = twin_terms(mat, programs, redundant_programs)
    if genes_u.size - excluded.size < n_genes:
        twins, excluded = {}, None
    gene_idx = _choose_genes(rng, mat, programs, n_genes, excluded if twins else None)
    to_local = np.full(mat.shape[1], -1, dtype=np.int64)
    to_local[gene_idx] = np.arange(n_genes)
    program_genes = [to_local[_members(mat, row)] for row in programs]
    program_genes = [g[g >= 0] for g in program_genes]
    loadings = np.zeros((n_programs, n_genes))
    for k, g in enumerate(program_genes):
        loadings[k, g] = rng.uniform(0.4, 1.0, size=g.size)
    if loading_noise > 0:
        loadings += rng.normal(0.0, loading_noise, size=loadings.shape)
    dag, order = _random_dag(rng, n_programs, dag_density)
    baseline = rng.normal(0.0, baseline_sd, size=n_genes)
    gene_dispersion = dispersion * np.exp(rng.normal(0.0, 0.5, size=n_genes))
    return _Structure(
        var_names=genes_u[gene_idx],
        symbols=symbols_u[gene_idx],
        factor_terms=[term_ids[row] for row in programs],
        program_genes=program_genes,
        loadings=loadings,
        dag=dag,
        order=order,
        baseline=baseline,
        dispersion=gene_dispersion,
        twins={term_ids[p]: [term_ids[q]] for p, q in twins.items()},
    )


def _pick_target_genes(
    rng: np.random.Generator, program_genes: list[np.ndarray], n_genes: int, n_targets: int
) -> list[int]:
    """Program genes as targets, spread over the programs round-robin."""
    is_target = np.zeros(n_genes, dtype=bool)
    targets: list[int] = []
    prog_order = rng.permutation(len(program_genes))
    while len(targets) < n_targets:
        added = False
        for k in prog_order:
            free = program_genes[k][~is_target[program_genes[k]]]
            if free.size == 0:
                continue
            g = int(rng.choice(free))
            is_target[g] = True
            targets.append(g)
            added = True
            if len(targets) == n_targets:
                break
        if not added:
            raise ValueError(
                f"n_targets={n_targets} exceeds the {len(targets)} genes of the "
                "programs; lower n_targets or raise n_genes."
            )
    return targets


def _draw_targets(
    rng: np.random.Generator,
    structure: _Structure,
    n_targets: int,
    effect_size: float,
    baseline_sd: float,
    sign: float = 1.0,
) -> _Targets:
    """Targets, their strengths and latent shifts; sets the targets' baselines.

    ``sign`` is the direction of a target's effect (1: activation, -1: knock-out).
    """
    n_programs, n_genes = structure.loadings.shape
    genes = _pick_target_genes(rng, structure.program_genes, n_genes, n_targets)
    strength = rng.uniform(0.6, 1.4, size=n_targets)
    # CRISPRa targets are mostly lowly expressed genes (e.g. transcription factors):
    # their activation must not take over the library of the cell. A knock-out shows
    # only on a gene that is expressed: its targets sit as far above the average.
    structure.baseline[genes] = rng.normal(-sign, 0.5, size=n_targets) * baseline_sd
    membership = np.zeros((n_programs, n_genes), dtype=bool)
    for k, g in enumerate(structure.program_genes):
        membership[k, g] = True
    symbols = structure.symbols[genes]
    by_symbol = np.argsort(symbols, kind="stable")
    genes = [genes[i] for i in by_symbol]
    strength = strength[by_symbol]
    factors = [np.flatnonzero(membership[:, g]) for g in genes]
    shift = np.zeros((n_targets, n_programs))
    for i, ks in enumerate(factors):
        shift[i, ks] = sign * effect_size * strength[i]
    return _Targets(genes, symbols[by_symbol], strength, factors, shift)


def _draw_conditions(
    rng: np.random.Generator, targets: _Targets, n_doubles: int, interaction_scale: float
) -> _Conditions:
    """Double perturbations (random pairs of targets), their interactions and shifts."""
    n_targets, n_programs = targets.shift.shape
    pairs = np.array([(i, j) for i in range(n_targets) for j in range(i + 1, n_targets)])
    pick = np.sort(rng.choice(len(pairs), size=n_doubles, replace=False)) if n_doubles else []
    double_pairs = pairs[pick] if n_doubles else np.zeros((0, 2), dtype=np.int64)
    interaction = interaction_scale * rng.standard_normal((n_doubles, n_programs))
    sym = targets.symbols
    labels = [""] + list(sym) + [f"{sym[a]},{sym[b]}" for a, b in double_pairs]
    shifts = np.zeros((len(labels), n_programs))
    shifts[1 : n_targets + 1] = targets.shift
    for d, (a, b) in enumerate(double_pairs):
        shifts[1 + n_targets + d] = targets.shift[a] + targets.shift[b] + interaction[d]
    kinds = np.asarray(["control"] + ["single"] * n_targets + ["double"] * n_doubles, dtype=object)
    return _Conditions(labels, kinds, double_pairs, interaction, shifts)


def _assign_cells(
    rng: np.random.Generator, n_cells: int, control_fraction: float, n_cond: int
) -> np.ndarray:
    """Condition of each cell: the controls, the rest split evenly, in random order."""
    n_control = int(round(control_fraction * n_cells))
    per_cond = np.full(n_cond - 1, (n_cells - n_control) // (n_cond - 1))
    extra = (n_cells - n_control) - per_cond.sum()
    per_cond[rng.choice(n_cond - 1, size=extra, replace=False)] += 1
    cond = np.repeat(np.arange(n_cond), np.concatenate([[n_control], per_cond]))
    return cond[rng.permutation(n_cells)]


@dataclass(frozen=True)
class _CellModel:
    """What maps a cell's condition (and batch) to its negative-binomial means."""

    shifts: np.ndarray  # conditions x factors latent shifts
    propagate: np.ndarray  # (I - A)^-1
    loadings: np.ndarray  # float32, factors x genes
    baseline: np.ndarray  # float32
    direct_gene: np.ndarray  # conditions x 2 targeted genes (-1: none)
    direct_value: np.ndarray  # float32 log-fold up-regulation of those genes
    shape: np.ndarray  # gene-wise NB shape, 1 / dispersion
    library_size: tuple[float, float]
    batch_effects: np.ndarray | None = None  # float32, batches x genes (log scale)
    nuisance: np.ndarray | None = None  # float32 loadings of a per-cell nuisance factor
    saturation: float | None = None  # c of the saturating response c tanh(u L / c)

    def response(self, program_effect: np.ndarray) -> np.ndarray:
        """Gene log-rate change caused by the programs' ``u L`` (linear or saturating)."""
        if self.saturation is None:
            return program_effect
        c = np.float32(self.saturation)
        return c * np.tanh(program_effect / c)

    @classmethod
    def build(
        cls,
        structure: _Structure,
        targets: _Targets,
        conditions: _Conditions,
        direct_effect: float,
        library_size: tuple[float, float],
        batch_effects: np.ndarray | None = None,
        nuisance: np.ndarray | None = None,
        saturation: float | None = None,
    ) -> _CellModel:
        """The cell model of a drawn structure, targets and conditions.

        ``direct_effect`` is the signed log-fold change of a targeted gene itself
        (negative for a knock-out), before the target's strength.
        """
        n_cond, n_programs = conditions.shifts.shape
        n_targets = len(targets.genes)
        direct_gene = np.full((n_cond, 2), -1, dtype=np.int64)
        direct_value = np.zeros((n_cond, 2))
        for i in range(n_targets):
            direct_gene[1 + i, 0] = targets.genes[i]
            direct_value[1 + i, 0] = direct_effect * targets.strength[i]
        for d, (a, b) in enumerate(conditions.double_pairs):
            c = 1 + n_targets + d
            direct_gene[c] = [targets.genes[a], targets.genes[b]]
            direct_value[c] = direct_effect * targets.strength[[a, b]]
        return cls(
            shifts=conditions.shifts,
            propagate=np.linalg.inv(np.eye(n_programs) - structure.dag),
            loadings=structure.loadings.astype(np.float32),
            baseline=structure.baseline.astype(np.float32),
            direct_gene=direct_gene,
            direct_value=direct_value.astype(np.float32),
            shape=1.0 / structure.dispersion,
            library_size=tuple(library_size),
            batch_effects=None if batch_effects is None else batch_effects.astype(np.float32),
            nuisance=None if nuisance is None else nuisance.astype(np.float32),
            saturation=saturation,
        )

    def means(
        self, rng: np.random.Generator, cond: np.ndarray, batch: np.ndarray | None, out: np.ndarray
    ) -> np.ndarray:
        """NB means of cells of conditions ``cond`` (written into ``out``, float32)."""
        n = cond.size
        z = rng.standard_normal((n, self.shifts.shape[1]))
        z += self.shifts[cond]
        u = (z @ self.propagate).astype(np.float32)
        eta = np.matmul(u, self.loadings, out=out)
        if self.saturation is not None:
            eta[...] = self.response(eta)
        eta += self.baseline
        if self.batch_effects is not None:
            eta += self.batch_effects[batch]
        rows = np.arange(n)
        for slot in range(self.direct_gene.shape[1]):
            genes = self.direct_gene[cond, slot]
            has = genes >= 0
            eta[rows[has], genes[has]] += self.direct_value[cond[has], slot]
        if self.nuisance is not None:
            eta += rng.standard_normal(n).astype(np.float32)[:, None] * self.nuisance
        eta -= eta.max(axis=1, keepdims=True)
        np.exp(eta, out=eta)
        log_mean, log_spread = self.library_size
        library = np.exp(rng.normal(log_mean, log_spread, size=n))
        eta *= (library / eta.sum(axis=1, dtype=np.float64)).astype(np.float32)[:, None]
        return eta

    def sample_chunk(
        self,
        ws: Workspace,
        seed: np.random.SeedSequence,
        cond: np.ndarray,
        batch: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Counts of one chunk of cells as CSR parts (data, indices, row nnz, X data)."""
        rng = np.random.default_rng(seed)
        mu = self.means(rng, cond, batch, ws.eta[: cond.size])
        idx, data = nb_counts(rng, mu, self.shape, ws)
        return csr_parts(idx, data, cond.size, mu.shape[1], _TARGET_SUM)


def _generate_counts(
    model: _CellModel,
    seed: np.random.SeedSequence,
    cond: np.ndarray,
    batch: np.ndarray | None,
    n_jobs: int | None,
) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Counts and log-normalised CSR matrices, generated in chunks of cells."""
    n_cells, n_genes = cond.size, model.loadings.shape[1]
    chunk = int(np.clip(_CHUNK_ELEMENTS // n_genes, 64, 8192))
    starts = list(range(0, n_cells, chunk))
    seeds = seed.spawn(len(starts))
    local = threading.local()

    def run(i: int):
        ws = getattr(local, "ws", None)
        if ws is None:
            ws = local.ws = Workspace(min(chunk, n_cells), n_genes)
        cells = slice(starts[i], starts[i] + chunk)
        batch_of_cells = None if batch is None else batch[cells]
        return model.sample_chunk(ws, seeds[i], cond[cells], batch_of_cells)

    if n_jobs is None:
        n_jobs = min(4, os.cpu_count() or 1)
    with single_threaded_blas():  # threads go to chunks; idle BLAS threads spin
        if n_jobs > 1 and len(starts) > 1:
            with ThreadPoolExecutor(max_workers=n_jobs) as pool:
                return assemble_csr(pool.map(run, range(len(starts))), n_cells, n_genes)
        return assemble_csr(map(run, range(len(starts))), n_cells, n_genes)


def _cell_table(
    conditions: _Conditions, cond: np.ndarray, batch: np.ndarray | None, n_batches: int
) -> pd.DataFrame:
    """``obs``: guide labels, perturbation type and, with several batches, the batch."""
    obs = pd.DataFrame(
        {
            "guide_ids": pd.Categorical(np.asarray(conditions.labels, dtype=object)[cond]),
            "perturbation_type": pd.Categorical(
                conditions.kinds[cond], categories=["control", "single", "double"]
            ),
        },
        index=pd.Index([f"cell{i}" for i in range(cond.size)]),
    )
    if batch is not None:
        names = np.asarray([f"batch{b}" for b in range(n_batches)], dtype=object)
        obs["batch"] = pd.Categorical(names[batch], categories=names)
    return obs


def _ground_truth(
    structure: _Structure, targets: _Targets, conditions: _Conditions, params: dict
) -> dict:
    """The ``uns`` ground truth (without batches)."""
    factor_terms = structure.factor_terms
    term_names = go_term_names(factor_terms).fillna("").to_numpy(dtype=object)
    loadings = structure.loadings.astype(np.float32)
    if not (params["loading_noise"] > 0 or loadings.size <= 2_000_000):
        loadings = sparse.csr_matrix(loadings)
    n_targets = len(targets.genes)
    doubles = conditions.labels[1 + n_targets :]
    return {
        "factor_terms": np.asarray(factor_terms, dtype=object),
        "factor_term_names": np.asarray(term_names, dtype=object),
        "dag": structure.dag.astype(np.float32),
        "dag_order": structure.order.astype(np.int64),
        "loadings": loadings,
        "baseline": structure.baseline.astype(np.float32),
        "dispersion": structure.dispersion.astype(np.float32),
        "targets": np.asarray(targets.symbols, dtype=object),
        "target_ensembl": np.asarray(structure.var_names[targets.genes], dtype=object),
        "target_strength": targets.strength.astype(np.float32),
        "target_shift": targets.shift.astype(np.float32),
        "target_factors": {
            str(t): ks.astype(np.int64) for t, ks in zip(targets.symbols, targets.factors)
        },
        "target_terms": {
            str(t): np.asarray([factor_terms[k] for k in ks], dtype=object)
            for t, ks in zip(targets.symbols, targets.factors)
        },
        "doubles": np.asarray(doubles, dtype=object),
        "interaction": {
            label: conditions.interaction[d].astype(np.float32) for d, label in enumerate(doubles)
        },
        "params": params,
    }


def _set_traps(
    rng: np.random.Generator, structure: _Structure, targets: _Targets, traps: Traps
) -> tuple[_Targets, np.ndarray | None]:
    """Dominant genes, programs on part of their members, null targets (see ``_traps``).

    Changes ``structure``'s loadings and baselines in place; returns the targets (null
    ones without shift or factors) and the nuisance loadings (``None`` without
    dominant genes).
    """
    dominant = dominant_genes(rng, structure.program_genes, targets.genes, traps.n_dominant_genes)
    shape_programs(rng, structure.loadings, traps, dominant)
    nuisance = make_dominant(structure.baseline, dominant) if dominant.size else None
    null = null_targets(rng, len(targets.genes), traps.null_fraction)
    if not null.any():
        return targets, nuisance
    shift = targets.shift.copy()
    shift[null] = 0.0
    factors = [np.zeros(0, np.int64) if n else ks for n, ks in zip(null, targets.factors)]
    return replace(targets, shift=shift, factors=factors), nuisance


def _trap_truth(
    structure: _Structure,
    targets: _Targets,
    model: _CellModel,
    traps: Traps,
    nuisance: np.ndarray | None,
) -> dict:
    """Ground truth of the perturbation type and the traps (``uns`` entries)."""
    n_targets, n_genes = len(targets.genes), structure.loadings.shape[1]
    gene_effect = model.response((targets.shift @ model.propagate) @ structure.loadings)
    gene_effect[np.arange(n_targets), targets.genes] += model.direct_value[1 : n_targets + 1, 0]
    dominant = np.zeros(0, np.int64) if nuisance is None else np.flatnonzero(nuisance)
    return {
        "perturbation_type": traps.perturbation_type,
        "target_effect": np.asarray([ks.size > 0 for ks in targets.factors], dtype=bool),
        "target_gene_effect": gene_effect.astype(np.float32).reshape(n_targets, n_genes),
        "twin_terms": {p: np.asarray(q, dtype=object) for p, q in structure.twins.items()},
        "dominant_genes": np.asarray(structure.var_names[dominant], dtype=object),
    }


def _check_args(p: dict) -> None:
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ValueError(msg)

    need(p["n_targets"] >= 1, f"n_targets must be >= 1, got {p['n_targets']}")
    need(p["n_programs"] >= 1, f"n_programs must be >= 1, got {p['n_programs']}")
    need(p["n_doubles"] >= 0, f"n_doubles must be >= 0, got {p['n_doubles']}")
    max_pairs = p["n_targets"] * (p["n_targets"] - 1) // 2
    need(
        p["n_doubles"] <= max_pairs,
        f"n_doubles={p['n_doubles']} exceeds the {max_pairs} pairs of {p['n_targets']} targets",
    )
    need(
        p["n_genes"] >= 8 * p["n_programs"] and p["n_genes"] >= 20,
        f"n_genes={p['n_genes']} is too small: need at least 20 and 8 genes per program "
        f"(n_programs={p['n_programs']}).",
    )
    need(0.0 <= p["control_fraction"] < 1.0, "control_fraction must be in [0, 1)")
    n_control = round(p["control_fraction"] * p["n_cells"])
    n_cond = p["n_targets"] + p["n_doubles"]
    need(
        n_control >= 1 and p["n_cells"] - n_control >= n_cond,
        f"n_cells={p['n_cells']} is too small for {n_cond} perturbations plus controls "
        f"(control_fraction={p['control_fraction']}).",
    )
    need(0.0 <= p["dag_density"] <= 1.0, "dag_density must be in [0, 1]")
    need(p["dispersion"] > 0, "dispersion must be > 0")
    need(p["library_size"][1] >= 0, "library_size standard deviation must be >= 0")


def _check_batch_args(n_batches: int, batch_effect: float, n_cells: int) -> None:
    if not 1 <= n_batches <= n_cells:
        raise ValueError(f"n_batches must be between 1 and n_cells={n_cells}, got {n_batches}.")
    if not batch_effect >= 0:
        raise ValueError(f"batch_effect must be >= 0, got {batch_effect}.")
    if n_batches == 1 and batch_effect > 0:
        raise ValueError(
            f"batch_effect={batch_effect} needs several batches: pass n_batches >= 2 "
            "(or batch_effect=0 for a single batch)."
        )


def _draw_batches(
    seed: np.random.SeedSequence, n_cells: int, n_genes: int, n_batches: int, batch_effect: float
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Batch of each cell (balanced, random) and gene-wise log-effects (batches x genes).

    ``(None, None)`` for a single batch. Drawn from their own stream (``seed``), so the
    other random draws of the simulator do not depend on the batches.
    """
    if n_batches == 1:
        return None, None
    rng = np.random.default_rng(seed)
    batch = rng.permutation(np.arange(n_cells) % n_batches)
    effects = rng.normal(0.0, batch_effect, size=(n_batches, n_genes))
    return batch, effects


def _heldout(rng: np.random.Generator, targets: list[str]) -> list[str]:
    """About 10% of the targets (at least one from five targets on) to hold out."""
    n = len(targets) // 10 if len(targets) >= 10 else int(len(targets) >= 5)
    return sorted(rng.choice(targets, size=n, replace=False).tolist()) if n else []
