"""Interpretation of a trained SENAVAE: pathway activities, DAG, targets, activation test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from scsena import gene_sets as gs
from scsena._constants import ADATA_KEYS, REGISTRY_KEYS
from scsena.data import KIND_CONTROL, display_labels, mask_from_state, normalise_labels
from scsena.metrics import (
    activation_scores,
    affected_terms,
    consistent_sign,
    differential_test,
    interpretability_metrics,
    member_evidence,
    rank_genes_groups_uns,
)
from scsena.metrics import gene_set_scores as metrics_gene_set_scores
from scsena.module import MemberMeanLayer

from ._prediction import inference_batch_size

#: Control cells used to orient pathway activities (a seeded sample beyond).
_ORIENT_MAX_CELLS = 20_000
#: Name of the control group in ``pathway_activity_anndata``.


def _check_key(mapping, key: str, where: str, ours, overwrite: bool) -> None:
    """Refuse to replace a user's entry that scsena did not write."""
    if overwrite or key not in mapping or ours(mapping[key]):
        return
    raise ValueError(
        f"{where}[{key!r}] already exists and was not written by scsena; pass another "
        "`key_added`, or `overwrite=True` to replace it."
    )


def _written_by_scsena(value) -> bool:
    return isinstance(value, Mapping) and value.get("written_by") == "scsena"



class InterpretationMixin:
    """Interpretation methods of :class:`~scsena.SENAVAE`.

    Pathway activities (oriented), differential activity, the DAG, intervention
    targets, BP weights, affected terms and the activation test.
    """

    @property
    def gene_set_mask(self) -> gs.GeneSetMask:
        """The gene-set mask registered at setup (genes x terms membership)."""
        return mask_from_state(
            self.registry_["field_registries"][REGISTRY_KEYS.MASK_KEY]["state_registry"]
        )

    def _term_sizes(self) -> np.ndarray:
        """Measured member genes of every term (the mask's column sums)."""
        member = self.gene_set_mask.membership
        return np.asarray((member != 0).sum(axis=0)).ravel().astype(np.int64)

    @torch.inference_mode()
    def _raw_activity(self, splitter, idx: np.ndarray, batch_size: int | None) -> np.ndarray:
        batch_size = inference_batch_size(batch_size)
        self.module.eval()
        out = [
            self.module.pathway_activity(x).cpu().numpy()
            for x in splitter.iter_rows(idx, batch_size, self.device)
        ]
        if not out:
            return np.zeros((0, len(self.term_ids_)), np.float32)
        return np.concatenate(out, axis=0).astype(np.float32)

    @torch.inference_mode()
    def _orient(self, batch_size: int | None = None) -> pd.DataFrame:
        """Correlate each term's raw activity with its members' mean on control cells."""
        splitter = self.data_splitter()
        control = np.flatnonzero(splitter.perturbations.kind == KIND_CONTROL)
        if len(control) < 3:
            raise ValueError(
                f"Orienting pathway activities needs control cells in the model's data "
                f"(found {len(control)}): each term's sign is set on them. Pass "
                "orientation='raw' to use the activities as learned."
            )
        if len(control) > _ORIENT_MAX_CELLS:
            rng = np.random.default_rng(self.seed_)
            control = np.sort(rng.choice(control, _ORIENT_MAX_CELLS, replace=False))
        member = self.gene_set_mask.membership.tocsc().astype(np.float64)
        sizes = np.asarray((member != 0).sum(axis=0)).ravel()
        scale = member.multiply(1.0 / np.maximum(sizes, 1)).tocsr()
        self.module.eval()
        acts, means = [], []
        for x in splitter.iter_rows(control, inference_batch_size(batch_size), self.device):
            acts.append(self.module.pathway_activity(x).cpu().numpy().astype(np.float64))
            means.append(np.asarray(scale.T @ x.cpu().numpy().astype(np.float64).T).T)
        a, m = np.concatenate(acts), np.concatenate(means)
        a, m = a - a.mean(axis=0), m - m.mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (a * m).sum(axis=0) / np.sqrt((a * a).sum(axis=0) * (m * m).sum(axis=0))
        r = np.where(np.isfinite(r), r, 0.0)
        # a non-negative weighted mean of the members already points their way
        sign = np.ones(len(r)) if self._members_weighed_up() else np.where(r < 0, -1, 1)
        return pd.DataFrame(
            {
                "term_name": list(self.term_names_),
                "n_genes": sizes.astype(np.int64),
                "sign": sign.astype(np.int64),
                "r_members": r,
            },
            index=pd.Index(list(self.term_ids_), name="term"),
        )

    def _members_weighed_up(self) -> bool:
        """Whether every member weight is non-negative (``member_weights="nonnegative"``)."""
        return isinstance(self.module.fc1, MemberMeanLayer)

    def get_term_orientation(self) -> pd.DataFrame:
        """How each term's activity is oriented so that positive means "members up".

        With ``member_weights="nonnegative"`` (the default preset) every activity is a
        non-negative weighted mean of its member genes: it rises exactly when its
        members, as weighed, rise, so every ``sign`` is ``+1`` by construction
        (``r_members`` is reported all the same).

        With free weights (``preset="reference"``) the sign of a learned activity is
        arbitrary: the encoder can represent a
        pathway going up as an activity going down. Each term's sign is fixed by the
        Pearson correlation, over the control cells of the model's data (at most
        20,000, a seeded sample beyond), between its raw activity and the mean
        expression of its member genes (the model's input, as registered): ``sign``
        is ``-1`` where that correlation is negative, else ``+1``. The oriented
        activity is ``sign * raw``.

        The table is computed once for a trained model, from the data it was set up
        with, stored in ``term_orientation_`` and saved with the model, so loading the
        model with other data keeps the signs; training again recomputes it. A term
        whose ``|r_members|`` is small (say below 0.1) is barely tied to its members'
        mean on control cells: read its direction with care.

        Returns
        -------
        DataFrame indexed by term ID with ``term_name``, ``n_genes`` (measured member
        genes), ``sign`` (``+1`` / ``-1``) and ``r_members`` (the correlation).
        """
        if self.term_orientation_ is not None:
            return self.term_orientation_.copy()
        table = self._orient()
        if self.is_trained_:
            self.term_orientation_ = table
        return table.copy()

    def _activity(
        self, splitter, idx: np.ndarray, batch_size: int | None, orientation: str
    ) -> np.ndarray:
        if orientation not in ("members", "raw"):
            raise ValueError(f"orientation must be 'members' or 'raw', got {orientation!r}.")
        act = self._raw_activity(splitter, idx, batch_size)
        if orientation == "members":
            act *= self.get_term_orientation()["sign"].to_numpy(dtype=np.float32)
        return act

    def get_pathway_activity(
        self,
        adata: ad.AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        key_added: str | None = ADATA_KEYS.ACTIVITY,
        overwrite: bool = False,
        orientation: Literal["members", "raw"] = "members",
        inplace: bool = True,
        return_numpy: bool = False,
    ) -> pd.DataFrame | np.ndarray:
        """Per-cell biological-process activities (the first layer's output).

        Parameters
        ----------
        adata
            Registered AnnData (default: the model's).
        indices
            Cells to use (default: all).
        batch_size
            Cells per forward pass (``None``: ``scvi.settings.batch_size``).
        key_added
            Write the ``cells x terms`` matrix to ``adata.obsm[key_added]`` and the term
            IDs and names, the orientation and the per-term signs to
            ``adata.uns[key_added]`` without a leading ``"X_"`` (by default
            ``adata.uns["scsena_activity"]``), only when all cells are used; ``None``
            writes nothing.
        overwrite
            Replace entries under ``key_added`` that scsena did not write (by default
            that is an error, so user data is never replaced silently).
        orientation
            ``"members"`` (default): each term's activity multiplied by its sign from
            :meth:`get_term_orientation`, so that a positive change means its member
            genes go up; ``"raw"``: the first layer's output as learned, whose sign per
            term is arbitrary.
        inplace
            Write the activities into the data under ``key_added`` (see there);
            ``False`` only returns them (as :meth:`predict_perturbation`'s ``inplace``).
        return_numpy
            Return a bare ``(n_cells, n_terms)`` array instead of a DataFrame.

        Returns
        -------
        ``cells x terms`` DataFrame (index: the cells' ``obs_names``; columns: the term
        IDs, :attr:`term_ids_`, as scvi-tools' ``get_normalized_expression`` names
        genes; ``term_names_`` gives their names), or the array with
        ``return_numpy=True``.
        """
        splitter = self.data_splitter(adata)
        adata = splitter.adata
        key_added = key_added if inplace else None
        info_key = None if key_added is None else key_added.removeprefix("X_")
        if key_added is not None and indices is None:
            uns = adata.uns
            _check_key(uns, info_key, "adata.uns", _written_by_scsena, overwrite)
            ours = _written_by_scsena(uns.get(info_key))
            _check_key(adata.obsm, key_added, "adata.obsm", lambda _: ours, overwrite)
        idx = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        act = self._activity(splitter, idx, batch_size, orientation)
        if key_added is not None and indices is None:
            signs = (
                self.get_term_orientation()["sign"].to_numpy()
                if orientation == "members"
                else np.ones(len(self.term_ids_), dtype=np.int64)
            )
            adata.obsm[key_added] = act
            adata.uns[info_key] = {
                "term_ids": np.asarray(self.term_ids_),
                "term_names": np.asarray(self.term_names_),
                "orientation": orientation,
                "term_signs": signs,
                "written_by": "scsena",
            }
        if return_numpy:
            return act
        return pd.DataFrame(act, index=adata.obs_names[idx], columns=pd.Index(self.term_ids_))

    def _groups(self, parsed, perturbations: Sequence[str] | str | None) -> list[str]:
        """Canonical labels to test: the given ones, else every non-control label."""
        labels = parsed.labels.to_numpy(dtype=object)
        present = set(labels[parsed.kind != KIND_CONTROL].tolist())
        if perturbations is None:
            return sorted(present, key=lambda p: (p.count(","), p))
        if isinstance(perturbations, str):
            perturbations = [perturbations]
        asked = normalise_labels(list(perturbations), self.control_value_, self.delimiter_)
        groups = [str(p) for p in asked.tolist()]
        if "" in groups:
            raise ValueError(
                "The control label is the reference of differential activity, not a "
                "perturbation to test: leave it out of `perturbations`."
            )
        missing = [p for p, g in zip(perturbations, groups) if g not in present]
        if missing:
            shown = sorted(present, key=lambda p: (p.count(","), p))[:10]
            raise ValueError(
                f"No cells for {missing} in the data; perturbations present: {shown}"
                f"{' ...' if len(present) > 10 else ''}."
            )
        return list(dict.fromkeys(groups))

    def differential_activity(
        self,
        adata: ad.AnnData | None = None,
        perturbations: Sequence[str] | str | None = None,
        orientation: Literal["members", "raw"] = "members",
        batch_size: int | None = None,
        gene_symbols: str | None = None,
        n_drivers: int = 3,
        min_lfc: float = 0.1,
    ) -> pd.DataFrame:
        """Which pathways each perturbation changes: every term, against control cells.

        For each perturbation and each term (see
        :func:`scsena.metrics.differential_test`): ``effect`` (difference of mean
        activities, perturbed minus control), ``std_effect`` (that difference in
        units of the control cells' standard deviation), Welch's t-test
        (``statistic``, ``pvalue``) and Benjamini-Hochberg ``fdr`` over the terms of
        the perturbation, with ``term_name`` and ``n_genes`` (measured member genes).
        Rows are ordered within each perturbation from the strongest change to the
        weakest by ``|std_effect|`` (``rank`` 1 is the strongest). Standardising puts
        small and huge terms on one scale: a generic term whose activity varies a lot
        among control cells does not lead the list by its raw spread.

        With ``orientation="members"`` a positive effect means the term's member genes
        go up (:meth:`get_term_orientation`). scanpy-style results on the same numbers:
        ``pathway_activity_anndata(differential=True)``.

        Every row carries the gene-level evidence behind it (see
        :func:`scsena.metrics.member_evidence`): ``members_lfc``, the mean log-fold
        change of the term's measured member genes (perturbed minus control mean log
        expression) weighted as the model weighs them (with the orientation's sign);
        ``members_up`` and ``members_down``, how many of them moved up / down by at
        least ``min_lfc``; ``driver_genes``, the
        members that contribute most, each with its own log-fold change; and
        ``consistent``, whether the effect's sign agrees with ``members_lfc``. With
        ``member_weights="nonnegative"`` (the default preset) the effect is that
        weighted mean times the term's mean weight, so ``consistent`` holds by
        construction; with free weights (``preset="reference"``) it need not. A row
        with ``consistent=False`` says the activity moved against its members: read
        its direction from the genes.

        Terms with identical measured members have identical activities under the
        default preset (their weights are tied), hence identical rows.

        Parameters
        ----------
        adata
            Registered AnnData (default: the model's); it needs control cells.
        perturbations
            Labels to test, in the data's convention (default: every non-control
            label in the data; singles, then combinations).
        orientation
            ``"members"`` (default) or ``"raw"``, as in :meth:`get_pathway_activity`.
        batch_size
            Cells per forward pass (``None``: ``scvi.settings.batch_size``).
        gene_symbols
            Column of ``adata.var`` with the gene names shown in ``driver_genes``
            (default: ``var_names``), as in scanpy.
        n_drivers
            Number of driver genes listed per row.
        min_lfc
            A member counts in ``members_up`` / ``members_down`` when its log-fold
            change is at least this in size (smaller changes are noise, not a
            direction).

        Returns
        -------
        Tidy DataFrame, one row per perturbation and term: ``perturbation`` (the label
        in the data's own convention, ``"A+B"`` with ``delimiter="+"``; targets of a
        combination sorted), ``rank``, ``term``,
        ``term_name``, ``n_genes``, ``effect``, ``std_effect``, ``statistic``,
        ``pvalue``, ``fdr``, ``mean_control``, ``mean_perturbed``, ``n_cells``,
        ``n_control``, ``members_lfc``, ``members_up``, ``members_down``,
        ``driver_genes``, ``consistent``; ``attrs["orientation"]`` records the orientation.

        Examples
        --------
        >>> da = model.differential_activity()
        >>> da[da["perturbation"] == "CBL"].head(10)  # its 10 most changed BPs
        >>> da.groupby("perturbation").head(3)  # the top 3 of every perturbation
        """
        splitter = self.data_splitter(adata)
        parsed = splitter.perturbations
        groups = self._groups(parsed, perturbations)
        labels = parsed.labels.to_numpy(dtype=object)
        keep = np.flatnonzero((parsed.kind == KIND_CONTROL) | np.isin(labels, groups))
        act = self._activity(splitter, keep, batch_size, orientation)
        out = differential_test(
            act,
            labels[keep],
            self.term_ids_,
            control_value="",
            perturbations=groups,
            term_names=self.term_names_,
            n_genes=self._term_sizes(),
        )
        evidence = self._member_evidence(
            splitter, keep, labels[keep], groups, orientation, gene_symbols, (n_drivers, min_lfc)
        )
        out = out.merge(evidence, on=["perturbation", "term"], how="left", sort=False)
        out["consistent"] = consistent_sign(out["effect"], out["members_lfc"])
        out["perturbation"] = self._shown(out["perturbation"])
        out.attrs["orientation"] = orientation
        return out

    def _shown(self, canonical) -> np.ndarray:
        """Canonical labels in the data's own convention (delimiter, control value)."""
        return display_labels(canonical, self.control_value_, self.delimiter_)

    def _member_weights(self, orientation: str) -> sp.csr_matrix | None:
        """``(terms, genes)`` member weights as oriented (``None`` without gene sets)."""
        layer = self.module.fc1
        if not hasattr(layer, "member_weights"):
            return None  # the dense "original" encoder has no members
        weights = layer.member_weights()
        if orientation == "members":
            signs = self.get_term_orientation()["sign"].to_numpy(dtype=np.float64)
            weights = sp.diags(signs) @ weights
        return sp.csr_matrix(weights)

    def _member_evidence(
        self, splitter, idx, labels, groups, orientation, gene_symbols, options
    ) -> pd.DataFrame:
        """:func:`~scsena.metrics.member_evidence` of ``groups`` on the cells ``idx``."""
        weights = self._member_weights(orientation)
        var = splitter.adata.var
        if gene_symbols is not None and gene_symbols not in var:
            raise ValueError(
                f"gene_symbols={gene_symbols!r} is not a column of adata.var; columns: "
                f"{list(var.columns)[:10]}."
            )
        if weights is None:
            return pd.DataFrame(
                {"perturbation": pd.Series(dtype=object), "term": pd.Series(dtype=object)}
            ).assign(members_lfc=np.nan, members_up=0, members_down=0, driver_genes="")
        names = var.index if gene_symbols is None else var[gene_symbols].astype(str)
        means = splitter.group_means(idx, labels, ["", *groups])
        diff = means[1:] - means[0]
        return member_evidence(diff, groups, self.term_ids_, weights, names, *options)

    def pathway_activity_anndata(
        self,
        adata: ad.AnnData | None = None,
        batch_size: int | None = None,
        orientation: Literal["members", "raw"] = "members",
        differential: bool = False,
    ) -> ad.AnnData:
        """Pathway activities as an AnnData with biological processes as variables.

        ``obs`` is copied from ``adata`` plus ``obs["scsena_perturbation"]`` (the label
        in the data's own convention, targets of a combination sorted; the data's
        control value for control cells, ``"control"`` when that is ``""``); ``var`` holds
        ``term_name``, ``n_genes`` and the orientation ``sign``; ``uns["scsena_activity"]``
        records the orientation. scanpy's tools work on BPs directly: e.g.
        ``sc.pl.matrixplot(bp, bp.var_names[:10], groupby="scsena_perturbation",
        gene_symbols="term_name", colorbar_title="mean BP activity")`` labels the BPs by
        name and the colour bar by what it shows, and ``sc.tl.rank_genes_groups(bp,
        groupby="scsena_perturbation")`` tests them.

        Parameters
        ----------
        adata
            Registered AnnData (default: the model's).
        batch_size
            Cells per forward pass (``None``: ``scvi.settings.batch_size``).
        orientation
            ``"members"`` (default) or ``"raw"``, as in :meth:`get_pathway_activity`.
        differential
            Also store :meth:`differential_activity` (every perturbation against
            control) in ``uns["rank_genes_groups"]`` in scanpy's layout, so that
            ``sc.get.rank_genes_groups_df(act, group="A")`` and
            ``sc.pl.rank_genes_groups(act)`` read it: groups are the perturbations
            (``groupby="scsena_perturbation"``, ``reference="control"``), ``names``
            the term IDs ordered as in :meth:`differential_activity`, ``scores`` the
            standardised effect, ``logfoldchanges`` the difference of mean activities
            (not a fold change), ``pvals`` Welch's and ``pvals_adj`` their
            Benjamini-Hochberg adjustment. The DataFrame itself is in
            ``uns["scsena_differential_activity"]``.
        """
        splitter = self.data_splitter(adata)
        adata, parsed = splitter.adata, splitter.perturbations
        idx = np.arange(adata.n_obs)
        act = self._activity(splitter, idx, batch_size, orientation)
        table = self.get_term_orientation() if orientation == "members" else None
        var = pd.DataFrame(
            {
                "term_name": self.term_names_,
                "n_genes": self._term_sizes(),
                "sign": table["sign"].to_numpy()
                if table is not None
                else np.ones(len(self.term_ids_), dtype=np.int64),
            },
            index=pd.Index(self.term_ids_),
        )
        obs = adata.obs.copy()
        labels = self._shown(parsed.labels.to_numpy(dtype=object))
        control = self._shown([""])[0]
        obs[ADATA_KEYS.PERTURBATION] = pd.Categorical(labels)
        out = ad.AnnData(X=act, obs=obs, var=var)
        out.uns[ADATA_KEYS.ACTIVITY_UNS] = {"orientation": orientation, "written_by": "scsena"}
        if differential:
            res = differential_test(
                act,
                labels,
                self.term_ids_,
                control_value=control,
                perturbations=list(self._shown(self._groups(parsed, None))),
                term_names=self.term_names_,
                n_genes=var["n_genes"].to_numpy(),
            )
            out.uns["rank_genes_groups"] = rank_genes_groups_uns(
                res, ADATA_KEYS.PERTURBATION, control, "scsena differential_activity"
            )
            out.uns["scsena_differential_activity"] = res
        return out

    # ------------------------------------------------------- interpretation
    def get_causal_graph(self, threshold: float = 0.1, as_matrix: bool = False) -> pd.DataFrame:
        """The learned latent DAG ``A = triu(G, 1)``.

        Parameters
        ----------
        threshold
            Keep edges with ``|weight| >= threshold``.
        as_matrix
            Return the full ``Z x Z`` adjacency instead of the edge list.

        Returns
        -------
        Edge list (``source``, ``target``, ``weight``), sorted by ``|weight|``, or the
        adjacency matrix (rows: source factor, columns: target factor).
        """
        adj = self.module.causal.adjacency.detach().cpu().numpy()
        names = [f"z{i}" for i in range(adj.shape[0])]
        if as_matrix:
            return pd.DataFrame(adj, index=names, columns=names)
        src, dst = np.triu_indices(adj.shape[0], k=1)
        keep = np.abs(adj[src, dst]) >= threshold
        src, dst = src[keep], dst[keep]
        edges = pd.DataFrame(
            {
                "source": [names[i] for i in src],
                "target": [names[j] for j in dst],
                "weight": adj[src, dst],
            }
        )
        return edges.reindex(edges["weight"].abs().sort_values(ascending=False).index).reset_index(
            drop=True
        )

    @torch.inference_mode()
    def get_intervention_targets(
        self, temperature: float = 1000.0, soft: bool = False
    ) -> pd.DataFrame:
        """Which latent factor(s) each perturbation target acts on.

        Parameters
        ----------
        temperature
            Softmax temperature (reference reports 1, 100 and 1000).
        soft
            Return the full ``targets x factors`` soft assignment ``bc``.

        Returns
        -------
        Per target: ``latent`` (argmax factor), ``weight`` (its assignment),
        ``shift`` (learned intervention strength); or the soft matrix.
        """
        idx = torch.arange(len(self.targets_), device=self.device)
        bc = self.module.intervention.assignment(idx, temperature).cpu().numpy()
        names = [f"z{i}" for i in range(bc.shape[1])]
        if soft:
            return pd.DataFrame(bc, index=pd.Index(self.targets_, name="target"), columns=names)
        arg = bc.argmax(axis=1)
        return pd.DataFrame(
            {
                "latent": [names[i] for i in arg],
                "weight": bc[np.arange(len(arg)), arg],
                "shift": self.module.intervention.shift.detach().cpu().numpy(),
            },
            index=pd.Index(self.targets_, name="target"),
        )

    def get_latent_bp_weights(self) -> dict[str, pd.DataFrame]:
        """The delta matrices: weights from BP activities to latent factors.

        Returns
        -------
        ``{"mean": terms x factors, "var": terms x factors}`` weights of the mean and
        variance heads; each latent factor is a linear combination of BP activities.
        """
        names = [f"z{i}" for i in range(self.n_latent)]
        index = pd.Index(self.term_ids_, name="term")
        out = {}
        for key, layer in (("mean", self.module.fc_mean), ("var", self.module.fc_var)):
            w = layer.weight.detach().cpu().numpy().T
            out[key] = pd.DataFrame(w, index=index, columns=names)
        return out

    def gene_set_scores(
        self,
        adata: ad.AnnData | None = None,
        indices: Sequence[int] | None = None,
        method: Literal["mean", "ulm"] = "mean",
        batch_size: int = 4096,
    ) -> pd.DataFrame:
        """Model-free scores of the model's terms: the comparators of its activities.

        The same terms and measured member genes as the model's mask, on the
        registered expression, scored without a model by
        :func:`scsena.metrics.gene_set_scores`: ``"mean"`` (mean log expression of
        the members) or ``"ulm"`` (decoupler's univariate linear model; ``pip install
        'scsena[eval]'``). Both score each cell on its own, so cells are scored in
        batches.

        Parameters
        ----------
        adata
            Registered AnnData (default: the model's).
        indices
            Cells to score (default: all).
        method
            ``"mean"`` or ``"ulm"``.
        batch_size
            Cells scored at once.

        Returns
        -------
        ``cells x terms`` DataFrame (columns follow :attr:`term_ids_`).
        """
        splitter = self.data_splitter(adata)
        rna = splitter.adata
        idx = np.arange(rna.n_obs) if indices is None else np.asarray(indices)
        sets = self.gene_set_mask.gene_sets()
        var = pd.DataFrame(index=rna.var_names)
        parts = []
        for start, rows in zip(
            range(0, len(idx), batch_size), splitter.iter_rows(idx, batch_size)
        ):
            names = rna.obs_names[idx[start : start + batch_size]]
            chunk = ad.AnnData(X=rows.numpy(), obs=pd.DataFrame(index=names), var=var)
            parts.append(metrics_gene_set_scores(chunk, sets, method=method))
        if not parts:
            return pd.DataFrame(columns=self.term_ids_, dtype=np.float64)
        return pd.concat(parts).reindex(columns=self.term_ids_)

    # ---------------------------------------------------------- evaluation
    def _affected_collection(
        self, gene_sets: str | Path | pd.DataFrame | Mapping | None
    ) -> Mapping[str, Sequence[str]]:
        """Term -> members defining affected BPs: ``gene_sets``, else the setup's, else the mask."""
        if gene_sets is None:
            gene_sets = self.registry_["setup_args"].get("gene_sets")
        if gene_sets is not None:
            return gs.as_gene_sets(gene_sets)
        return self.gene_set_mask.gene_sets()

    @staticmethod
    def _target_ids(
        targets: Sequence[str], collection: Mapping[str, Sequence[str]]
    ) -> dict[str, str]:
        """Each target's gene id in ``collection`` (aliases mapped, ambiguous ones left out).

        A target listed in the collection under its own name keeps it; any other is
        mapped with :func:`scsena.gene_sets.map_gene_ids` (``MARCH8`` -> ``MARCHF8``).
        """
        members = {g for genes in collection.values() for g in genes}
        if not members or not targets:
            return {}
        id_type = gs.guess_id_type(sorted(members)[:500])
        mapping = gs.map_gene_ids(targets, to=id_type).mapping
        out = {}
        for t in targets:
            v = t if t in members else mapping.get(t)
            if isinstance(v, str):
                out[t] = v
        return out

    def get_affected_terms(
        self,
        targets: str | Sequence[str] | None = None,
        gene_sets: str | Path | pd.DataFrame | Mapping | None = None,
    ) -> dict[str, list[str]]:
        """The affected BPs of each perturbation target: those whose gene set contains it.

        These are the BPs the activation test (:meth:`activation_test`) expects a
        perturbation to change. Targets are looked up in the collection under their
        own name, or mapped to its gene identifiers (Ensembl ids, current symbols:
        ``MARCH8`` -> ``MARCHF8``) with :func:`scsena.gene_sets.map_gene_ids`; a
        target without an unambiguous identifier has no affected BP.

        Parameters
        ----------
        targets
            One target or several, from :attr:`targets_` (default: all of them).
        gene_sets
            Collection defining affected BPs (full sets, not only measured genes);
            default: the preset given at setup, else the model's mask (then only
            targets among the measured genes have affected BPs).

        Returns
        -------
        Target -> IDs of its affected BPs among :attr:`term_ids_`, in that order.

        Raises
        ------
        ValueError
            When a target is not one of the model's :attr:`targets_`.

        Examples
        --------
        >>> affected = model.get_affected_terms(["CBL", "PTPN12"])
        >>> {target: len(terms) for target, terms in affected.items()}  # BPs per target
        """
        if targets is None:
            targets = list(self.targets_)
        else:
            targets = [targets] if isinstance(targets, str) else [str(t) for t in targets]
        unknown = [t for t in targets if t not in set(self.targets_)]
        if unknown:
            raise ValueError(
                f"Unknown target(s) {unknown}: affected BPs are looked up for the model's "
                f"targets_ only ({len(self.targets_)} targets, e.g. {self.targets_[:5]})."
            )
        collection = self._affected_collection(gene_sets)
        ids = self._target_ids(targets, collection)
        return affected_terms(targets, collection, self.term_ids_, ids)

    def activation_test(
        self,
        adata: ad.AnnData | None = None,
        method: Literal["mean_diff", "ttest"] = "mean_diff",
        gene_sets: str | Path | pd.DataFrame | Mapping | None = None,
        ks: Sequence[int] = (25, 100),
        return_scores: bool = False,
        readout: Literal["model", "mean", "ulm"] = "model",
    ) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
        """The activation-score interpretability test on single perturbations.

        Each BP is scored per perturbation by how its activity differs between
        control and perturbed cells; a BP is affected when its gene set contains the
        perturbed gene. Reports recall@k and z-diff per perturbation. With
        ``readout="mean"`` or ``"ulm"`` the same test runs on a model-free score of the
        same BPs (:meth:`gene_set_scores`), the comparator that says whether the
        model's activities add anything.

        Parameters
        ----------
        adata
            Registered AnnData (default: the model's).
        method
            ``"mean_diff"`` (min-max normalised absolute mean difference) or
            ``"ttest"`` (Welch ``-log10 p``).
        gene_sets
            Collection defining affected BPs (full sets, not only measured genes);
            default: the preset given at setup, else the model's mask (then only
            targets among the measured genes have affected BPs).
        ks
            Cut-offs of recall@k.
        return_scores
            Also return the ``perturbations x terms`` scores.
        readout
            ``"model"`` (the pathway activities), ``"mean"`` or ``"ulm"`` (see
            :meth:`gene_set_scores`).

        Returns
        -------
        Per-perturbation metrics (see :func:`scsena.metrics.interpretability_metrics`).
        """
        splitter = self.data_splitter(adata)
        adata, parsed = splitter.adata, splitter.perturbations
        kind = parsed.kind
        keep = np.flatnonzero((kind == "control") | (kind == "single"))
        if readout == "model":
            act = self.get_pathway_activity(adata, indices=keep, key_added=None, return_numpy=True)
        else:
            act = self.gene_set_scores(adata, indices=keep, method=readout).to_numpy()
        labels = parsed.labels.to_numpy()[keep]
        present = [t for t in self.targets_ if (labels == t).any()]
        scores = activation_scores(act, labels, self.term_ids_, "", present, method)
        affected = self.get_affected_terms(present, gene_sets)
        metrics = interpretability_metrics(scores, affected, ks)
        return (metrics, scores) if return_scores else metrics
