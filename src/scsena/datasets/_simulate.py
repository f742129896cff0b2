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

import contextlib
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

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
_INVERSION_MAX_MEAN = 30.0  # NB means above this are sampled by gamma-Poisson
_DENSE_STEPS = 3  # NB inversion steps done on whole arrays
_CHUNK_ELEMENTS = 4_000_000  # cells x genes per generation chunk


@lru_cache(maxsize=1)
def _universe() -> tuple[np.ndarray, np.ndarray, list[str], sparse.csr_matrix]:
    """Genes annotated in SENA's GO terms with a one-to-one symbol, and the term matrix.

    Returns
    -------
    Ensembl ids (sorted), their symbols, term ids (sorted) and a terms x genes CSR
    membership matrix (terms with at least 5 such genes).
    """
    from scsena.gene_sets import gene_id_table, go_bp

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
    rng: np.random.Generator, mat: sparse.csr_matrix, programs: list[int], n_genes: int
) -> np.ndarray:
    """Universe indices of the simulated genes (sorted)."""
    n_universe = mat.shape[1]
    per_program = int(np.clip(_PROGRAM_FRACTION * n_genes / len(programs), 5, 30))
    chosen: set[int] = set()
    for row in programs:
        members = _members(mat, row)
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
        new = [g for g in picked.tolist() if g not in chosen]
        if len(chosen) + len(new) <= cover_budget:
            chosen.update(new)
    rest = np.setdiff1d(np.arange(n_universe), np.fromiter(chosen, dtype=np.int64))
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


class _Workspace:
    """Buffers of one thread, reused from chunk to chunk (no page faults, no zeroing)."""

    def __init__(self, n_rows: int, n_genes: int) -> None:
        shape = (n_rows, n_genes)
        self.eta = np.empty(shape, dtype=np.float32)
        self.uniform = np.empty(shape, dtype=np.float32)
        self.q = np.empty(shape, dtype=np.float32)
        self.pk = np.empty(shape, dtype=np.float32)
        self.cdf = np.empty(shape, dtype=np.float32)
        self.counts = np.empty(shape, dtype=np.uint8)
        self.positive = np.empty(shape, dtype=bool)
        self.above = np.empty(shape, dtype=bool)
        self.large = np.empty(shape, dtype=bool)


def _nb_counts(
    rng: np.random.Generator, mu: np.ndarray, shape: np.ndarray, ws: _Workspace
) -> tuple[np.ndarray, np.ndarray]:
    """Negative-binomial counts of mean ``mu`` (cells x genes) and gene-wise ``shape``.

    Exact sampling, fast for sparse counts: entries of mean up to
    ``_INVERSION_MAX_MEAN`` are sampled by inversion of the CDF with one uniform per
    entry (the first ``_DENSE_STEPS`` steps on whole arrays, then only on the few
    entries not yet resolved); larger means by gamma-Poisson.

    Returns
    -------
    Flat (row-major) indices of the nonzero entries, sorted, and their counts
    (float32).
    """
    n, g = mu.shape
    r = shape.astype(np.float32)
    uniform = rng.random(dtype=np.float32, out=ws.uniform[:n])
    large = np.greater(mu, _INVERSION_MAX_MEAN, out=ws.large[:n])
    any_large = bool(large.any())
    if any_large:
        np.copyto(uniform, 0.0, where=large)  # never above the CDF: sampled below
    q = np.add(mu, r, out=ws.q[:n])  # q = mu / (mu + r), the NB "success" probability
    np.divide(mu, q, out=q)
    pk = np.negative(q, out=ws.pk[:n])  # P(X = 0) = (1 - q)^r
    np.log1p(pk, out=pk)
    pk *= r
    np.exp(pk, out=pk)
    cdf = ws.cdf[:n]
    np.copyto(cdf, pk)
    positive = np.greater(uniform, cdf, out=ws.positive[:n])
    counts = ws.counts[:n]
    np.copyto(counts, positive.view(np.uint8))
    above = ws.above[:n]
    for k in range(_DENSE_STEPS):
        pk *= q
        pk *= (k + r) / (k + 1)  # P(X = k + 1)
        cdf += pk
        np.greater(uniform, cdf, out=above)
        counts += above.view(np.uint8)
    if any_large:
        big = np.flatnonzero(large)
        rb = shape[big % g]
        big_values = rng.poisson(rng.standard_gamma(rb) * (mu.ravel()[big] / rb))
        nonzero = big_values > 0
        big, big_values = big[nonzero], big_values[nonzero]
        positive.ravel()[big] = True
    idx = np.flatnonzero(positive)
    values = counts.ravel()[idx].astype(np.float32)
    if any_large:
        values[np.searchsorted(idx, big)] = big_values
    rest = np.flatnonzero(above)  # X > _DENSE_STEPS: continue on these entries only
    if rest.size:
        pos = np.searchsorted(idx, rest)
        u = uniform.ravel()[rest].astype(np.float64)
        c = cdf.ravel()[rest].astype(np.float64)
        p = pk.ravel()[rest].astype(np.float64)
        qq = q.ravel()[rest].astype(np.float64)
        rr = shape[rest % g]
        k = _DENSE_STEPS
        while pos.size:
            p *= (k + rr) / (k + 1) * qq
            c += p
            k += 1
            # stop where the CDF has converged: ``c`` comes from float32 sums, so for
            # ``u`` within rounding of 1 it may never exceed ``u``; what is left beyond
            # ``k`` then weighs about ``p / (1 - q)``, below 1e-12
            keep = np.flatnonzero((u > c) & (p > 1e-12 * (1.0 - qq)))
            pos, u, c, p, qq, rr = pos[keep], u[keep], c[keep], p[keep], qq[keep], rr[keep]
            values[pos] += 1
    return idx, values


def _simulate_chunk(
    ws: _Workspace,
    seed: np.random.SeedSequence,
    cond: np.ndarray,
    shifts: np.ndarray,
    propagate: np.ndarray,
    loadings: np.ndarray,
    baseline: np.ndarray,
    direct_gene: np.ndarray,
    direct_value: np.ndarray,
    shape: np.ndarray,
    library_size: tuple[float, float],
    batch: np.ndarray | None = None,
    batch_effects: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Counts of one chunk of cells as CSR parts (data, indices, row nnz, X data).

    ``batch`` (the batch of each cell of the chunk) and ``batch_effects`` (batches x
    genes, log scale) add each cell's batch effect to its gene log-rates.
    """
    rng = np.random.default_rng(seed)
    n = cond.size
    n_genes = loadings.shape[1]
    z = rng.standard_normal((n, shifts.shape[1]))
    z += shifts[cond]
    u = (z @ propagate).astype(np.float32)
    eta = np.matmul(u, loadings, out=ws.eta[:n])
    eta += baseline
    if batch_effects is not None:
        eta += batch_effects[batch]
    rows = np.arange(n)
    for slot in range(direct_gene.shape[1]):
        genes = direct_gene[cond, slot]
        has = genes >= 0
        eta[rows[has], genes[has]] += direct_value[cond[has], slot]
    eta -= eta.max(axis=1, keepdims=True)
    np.exp(eta, out=eta)
    library = np.exp(rng.normal(library_size[0], library_size[1], size=n))
    eta *= (library / eta.sum(axis=1, dtype=np.float64)).astype(np.float32)[:, None]
    idx, data = _nb_counts(rng, eta, shape, ws)
    indptr = np.searchsorted(idx, np.arange(n + 1) * n_genes)
    row_nnz = np.diff(indptr)
    cols = np.remainder(idx, n_genes, out=np.empty(idx.size, dtype=np.int32), casting="unsafe")
    del idx
    total = np.zeros(n)
    filled = row_nnz > 0
    if filled.any():
        total[filled] = np.add.reduceat(data, indptr[:-1][filled], dtype=np.float64)
    with np.errstate(divide="ignore"):
        scale = (_TARGET_SUM / total).astype(np.float32)
    xdata = np.repeat(scale, row_nnz)
    xdata *= data
    np.log1p(xdata, out=xdata)
    return data, cols, row_nnz, xdata


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
    n_batches: int = 1,
    batch_effect: float = 0.0,
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
        ``interaction``, ``params``; with several batches also ``batches``, the
        batch names, and ``batch_effects``, the true log-effects, batches x genes);
        ``uns["scsena_dataset"]``: name and held-out single perturbations.

    Examples
    --------
    >>> from scsena.datasets import simulate_perturbseq
    >>> adata = simulate_perturbseq(n_cells=500, n_genes=300, n_targets=8, n_doubles=4)
    >>> adata.obs["perturbation_type"].value_counts()["control"]
    75
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
    _check_batch_args(int(n_batches), float(batch_effect), params["n_cells"])
    if n_batches > 1:  # recorded only with batches: one-batch output is unchanged
        params["n_batches"] = int(n_batches)
        params["batch_effect"] = float(batch_effect)
    _check_args(params)

    root = np.random.SeedSequence(seed)
    # A fourth child for batches: the first three streams stay those of one batch.
    ss_struct, ss_design, ss_cells, ss_batch = root.spawn(4)
    rng = np.random.default_rng(ss_struct)

    # --- genes and programs
    genes_u, symbols_u, term_ids, mat = _universe()
    if n_genes > genes_u.size:
        raise ValueError(
            f"n_genes={n_genes} exceeds the {genes_u.size} genes annotated in SENA's GO "
            "terms (with a one-to-one gene symbol) that the simulator draws from."
        )
    programs = _choose_programs(rng, mat, n_programs)
    gene_idx = _choose_genes(rng, mat, programs, n_genes)
    var_names = genes_u[gene_idx]
    symbols = symbols_u[gene_idx]
    to_local = np.full(mat.shape[1], -1, dtype=np.int64)
    to_local[gene_idx] = np.arange(n_genes)
    program_genes = [to_local[_members(mat, row)] for row in programs]
    program_genes = [g[g >= 0] for g in program_genes]
    factor_terms = [term_ids[row] for row in programs]

    loadings = np.zeros((n_programs, n_genes))
    for k, g in enumerate(program_genes):
        loadings[k, g] = rng.uniform(0.4, 1.0, size=g.size)
    if loading_noise > 0:
        loadings += rng.normal(0.0, loading_noise, size=loadings.shape)
    dag, order = _random_dag(rng, n_programs, dag_density)
    propagate = np.linalg.inv(np.eye(n_programs) - dag)
    baseline = rng.normal(0.0, baseline_sd, size=n_genes)
    gene_dispersion = dispersion * np.exp(rng.normal(0.0, 0.5, size=n_genes))

    # --- targets: program genes, spread over programs round-robin
    is_target = np.zeros(n_genes, dtype=bool)
    targets_local: list[int] = []
    prog_order = rng.permutation(n_programs)
    while len(targets_local) < n_targets:
        added = False
        for k in prog_order:
            free = program_genes[k][~is_target[program_genes[k]]]
            if free.size == 0:
                continue
            g = int(rng.choice(free))
            is_target[g] = True
            targets_local.append(g)
            added = True
            if len(targets_local) == n_targets:
                break
        if not added:
            raise ValueError(
                f"n_targets={n_targets} exceeds the {len(targets_local)} genes of the "
                "programs; lower n_targets or raise n_genes."
            )
    strength = rng.uniform(0.6, 1.4, size=n_targets)
    # CRISPRa targets are mostly lowly expressed genes (e.g. transcription factors):
    # their activation must not take over the library of the cell.
    baseline[targets_local] = rng.normal(-1.0, 0.5, size=n_targets) * baseline_sd
    membership = np.zeros((n_programs, n_genes), dtype=bool)
    for k, g in enumerate(program_genes):
        membership[k, g] = True
    target_sym = symbols[targets_local]
    by_symbol = np.argsort(target_sym, kind="stable")
    targets_local = [targets_local[i] for i in by_symbol]
    strength = strength[by_symbol]
    target_sym = target_sym[by_symbol]
    target_factors = [np.flatnonzero(membership[:, g]) for g in targets_local]
    target_shift = np.zeros((n_targets, n_programs))
    for i, ks in enumerate(target_factors):
        target_shift[i, ks] = effect_size * strength[i]

    # --- design: doubles, interactions, cells
    drng = np.random.default_rng(ss_design)
    pairs = np.array([(i, j) for i in range(n_targets) for j in range(i + 1, n_targets)])
    pick = np.sort(drng.choice(len(pairs), size=n_doubles, replace=False)) if n_doubles else []
    double_pairs = pairs[pick] if n_doubles else np.zeros((0, 2), dtype=np.int64)
    interaction = interaction_strength * effect_size * drng.standard_normal((n_doubles, n_programs))
    labels = [""] + list(target_sym) + [f"{target_sym[a]},{target_sym[b]}" for a, b in double_pairs]
    n_cond = len(labels)
    shifts = np.zeros((n_cond, n_programs))
    shifts[1 : n_targets + 1] = target_shift
    direct_gene = np.full((n_cond, 2), -1, dtype=np.int64)
    direct_value = np.zeros((n_cond, 2))
    for i in range(n_targets):
        direct_gene[1 + i, 0] = targets_local[i]
        direct_value[1 + i, 0] = direct_effect * strength[i]
    for d, (a, b) in enumerate(double_pairs):
        c = 1 + n_targets + d
        shifts[c] = target_shift[a] + target_shift[b] + interaction[d]
        direct_gene[c] = [targets_local[a], targets_local[b]]
        direct_value[c] = [direct_effect * strength[a], direct_effect * strength[b]]

    n_control = int(round(control_fraction * n_cells))
    per_cond = np.full(n_cond - 1, (n_cells - n_control) // (n_cond - 1))
    extra = (n_cells - n_control) - per_cond.sum()
    per_cond[drng.choice(n_cond - 1, size=extra, replace=False)] += 1
    cond = np.repeat(np.arange(n_cond), np.concatenate([[n_control], per_cond]))
    cond = cond[drng.permutation(n_cells)]
    heldout = _heldout(drng, list(target_sym))
    batch, batch_effects = _draw_batches(ss_batch, n_cells, n_genes, int(n_batches), batch_effect)

    # --- counts, in chunks of cells
    chunk = int(np.clip(_CHUNK_ELEMENTS // n_genes, 64, 8192))
    starts = list(range(0, n_cells, chunk))
    seeds = ss_cells.spawn(len(starts))
    shape = 1.0 / gene_dispersion
    args = (
        shifts,
        propagate,
        loadings.astype(np.float32),
        baseline.astype(np.float32),
        direct_gene,
        direct_value.astype(np.float32),
        shape,
    )

    local = threading.local()

    def run(i: int):
        ws = getattr(local, "ws", None)
        if ws is None:
            ws = local.ws = _Workspace(min(chunk, n_cells), n_genes)
        cells = slice(starts[i], starts[i] + chunk)
        return _simulate_chunk(
            ws,
            seeds[i],
            cond[cells],
            *args,
            tuple(library_size),
            None if batch is None else batch[cells],
            None if batch_effects is None else batch_effects.astype(np.float32),
        )

    if n_jobs is None:
        n_jobs = min(4, os.cpu_count() or 1)
    with _single_threaded_blas():  # threads go to chunks; idle BLAS threads spin
        if n_jobs > 1 and len(starts) > 1:
            with ThreadPoolExecutor(max_workers=n_jobs) as pool:
                counts, X = _assemble(pool.map(run, range(len(starts))), n_cells, n_genes)
        else:
            counts, X = _assemble(map(run, range(len(starts))), n_cells, n_genes)

    obs = pd.DataFrame(
        {
            "guide_ids": pd.Categorical(np.asarray(labels, dtype=object)[cond]),
            "perturbation_type": pd.Categorical(
                np.asarray(
                    ["control"] + ["single"] * n_targets + ["double"] * n_doubles, dtype=object
                )[cond],
                categories=["control", "single", "double"],
            ),
        },
        index=pd.Index([f"cell{i}" for i in range(n_cells)]),
    )
    if batch is not None:
        names = np.asarray([f"batch{b}" for b in range(n_batches)], dtype=object)
        obs["batch"] = pd.Categorical(names[batch], categories=names)
    var = pd.DataFrame({"gene_symbols": symbols}, index=pd.Index(var_names))
    adata = ad.AnnData(X=X, obs=obs, var=var, layers={"counts": counts})

    from scsena.gene_sets import go_term_names

    term_names = go_term_names(factor_terms).fillna("").to_numpy(dtype=object)
    dense_loadings = loading_noise > 0 or loadings.size <= 2_000_000
    adata.uns[SIMULATION_UNS_KEY] = {
        "factor_terms": np.asarray(factor_terms, dtype=object),
        "factor_term_names": np.asarray(term_names, dtype=object),
        "dag": dag.astype(np.float32),
        "dag_order": order.astype(np.int64),
        "loadings": loadings.astype(np.float32)
        if dense_loadings
        else sparse.csr_matrix(loadings.astype(np.float32)),
        "baseline": baseline.astype(np.float32),
        "dispersion": gene_dispersion.astype(np.float32),
        "targets": np.asarray(target_sym, dtype=object),
        "target_ensembl": np.asarray(var_names[targets_local], dtype=object),
        "target_strength": strength.astype(np.float32),
        "target_shift": target_shift.astype(np.float32),
        "target_factors": {
            str(t): ks.astype(np.int64) for t, ks in zip(target_sym, target_factors)
        },
        "target_terms": {
            str(t): np.asarray([factor_terms[k] for k in ks], dtype=object)
            for t, ks in zip(target_sym, target_factors)
        },
        "doubles": np.asarray(labels[1 + n_targets :], dtype=object),
        "interaction": {
            labels[1 + n_targets + d]: interaction[d].astype(np.float32) for d in range(n_doubles)
        },
        "params": params,
    }
    if batch is not None:
        adata.uns[SIMULATION_UNS_KEY]["batches"] = np.asarray(obs["batch"].cat.categories)
        adata.uns[SIMULATION_UNS_KEY]["batch_effects"] = batch_effects.astype(np.float32)
    adata.uns["scsena_dataset"] = {
        "name": "simulated",
        "heldout": np.asarray(heldout, dtype=object),
    }
    return adata


def _single_threaded_blas():
    """Context limiting BLAS to one thread (a no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


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


class _Growable:
    """A 1-d buffer filled from the front, grown geometrically when full."""

    def __init__(self, dtype, capacity: int) -> None:
        self.array = np.empty(max(capacity, 1), dtype=dtype)
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        end = self.size + values.size
        if end > self.array.size:
            grown = np.empty(max(end, int(self.array.size * 1.25)), dtype=self.array.dtype)
            grown[: self.size] = self.array[: self.size]
            self.array = grown
        self.array[self.size : end] = values
        self.size = end

    def finish(self, dtype=None) -> np.ndarray:
        out = self.array
        if out.size != self.size:
            try:  # shrink in place (realloc), no copy of the data
                out.resize(self.size, refcheck=False)
            except ValueError:
                out = out[: self.size].copy()
        return out if dtype is None else out.astype(dtype, copy=False)


def _assemble(parts, n_cells: int, n_genes: int) -> tuple[sparse.csr_matrix, ...]:
    """Gather chunk parts, in order, into count and log-normalised CSR matrices.

    Parts are copied into the result as they arrive and then released, so memory
    stays close to the size of the result.
    """
    buffers = None
    row_nnz = []
    for data, cols, nnz, xdata in parts:
        if buffers is None:
            # Cells are in random order: the first chunk predicts the total well.
            capacity = int(data.size / max(nnz.size, 1) * n_cells * 1.05) + 1024
            buffers = [_Growable(a.dtype, capacity) for a in (data, cols, xdata)]
        for buf, values in zip(buffers, (data, cols, xdata)):
            buf.extend(values)
        row_nnz.append(nnz)
        del data, cols, xdata
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(np.concatenate(row_nnz), out=indptr[1:])
    idx_dtype = np.int32 if indptr[-1] < np.iinfo(np.int32).max else np.int64
    data, cols, xdata = (buf.finish() for buf in buffers)
    cols = cols.astype(idx_dtype, copy=False)
    indptr = indptr.astype(idx_dtype)
    shape = (n_cells, n_genes)
    # Both matrices have the same sparsity pattern: they share the (read-only in
    # practice) index arrays, which saves a copy of the largest array.
    counts = sparse.csr_matrix((data, cols, indptr), shape=shape)
    X = sparse.csr_matrix((xdata, cols, indptr), shape=shape)
    counts.has_sorted_indices = X.has_sorted_indices = True
    return counts, X
