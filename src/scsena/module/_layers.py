"""Layers of SENA-discrepancy-VAE.

The gene-set masked layer, the intervention encoders and the causal (DAG) layer.
"""

from __future__ import annotations

import abc
import math

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn


def init_linear_reference(module: nn.Module, std: float = 0.02) -> None:
    """Initialise every :class:`torch.nn.Linear` in ``module`` as N(0, std), bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _register_member_pairs(layer: nn.Module, membership) -> sp.csr_matrix:
    """Set ``layer``'s sizes and its ``term_index`` / ``gene_index`` member-pair buffers.

    Returns the ``(n_terms, n_genes)`` membership as CSR with sorted indices.
    """
    by_term = sp.csr_matrix(membership).T.tocsr()
    by_term.eliminate_zeros()
    by_term.sort_indices()
    n_terms, n_genes = by_term.shape
    layer.in_features = n_genes
    layer.out_features = n_terms
    counts = np.diff(by_term.indptr)
    layer.register_buffer(
        "term_index", torch.as_tensor(np.repeat(np.arange(n_terms), counts), dtype=torch.long)
    )
    layer.register_buffer("gene_index", torch.as_tensor(by_term.indices, dtype=torch.long))
    return by_term


class MaskedLinear(nn.Module):
    """Gene-set masked linear layer ``a = x (W * M^T)^T + b`` (the SENA-delta layer).

    ``M[g, t] = 1`` when gene ``g`` belongs to term ``t`` and ``lambda_`` otherwise.
    Initialisation as :class:`torch.nn.Linear` (Kaiming-uniform with ``a = sqrt(5)``,
    bias uniform in ``+-1/sqrt(G)``), drawn for the full ``(T, G)`` matrix so that a
    seed gives the same effective weights whatever the storage.

    Storage follows ``lambda_``:

    - ``lambda_ = 0``: only the gene-set members are stored (``weight`` has one entry
      per member pair, in term-major order). The reference's non-member weights are
      multiplied by zero in every forward pass, so they receive zero gradient and never
      influence the output: dropping them is exact. The product is a gather of the
      member genes and a sum per term, so the cost of a step and of its optimiser
      update scales with the number of member pairs (0.3% of ``G x T`` for SENA's
      mask on 5,000 genes), not with ``G x T``.
    - ``lambda_ > 0``: every pair carries weight, so ``weight`` is the dense
      ``(T, G)`` matrix and ``W * M`` is formed in the forward pass, as no cheaper
      exact form exists.

    Parameters
    ----------
    membership
        ``(n_genes, n_terms)`` sparse or dense 0/1 gene-set membership.
    lambda_
        Value of the mask outside the gene sets, in ``[0, 1]``.
    """

    #: Largest ``batch x member pairs`` gathered at once (bounds the temporary memory).
    max_gather_elements = 2**22

    def __init__(self, membership: sp.spmatrix | np.ndarray, lambda_: float = 0.0):
        super().__init__()
        if not 0.0 <= float(lambda_) <= 1.0:
            raise ValueError(f"sena_lambda must lie in [0, 1], got {lambda_}.")
        by_term = _register_member_pairs(self, membership)
        n_terms, n_genes = by_term.shape
        self.lambda_ = float(lambda_)
        self.member_only = self.lambda_ == 0.0
        shape = (self.term_index.numel(),) if self.member_only else (n_terms, n_genes)
        self.weight = nn.Parameter(torch.empty(shape))
        if not self.member_only:
            # M^T itself, built once (derived from the indices, so not saved)
            mask = torch.full((n_terms, n_genes), self.lambda_)
            mask[self.term_index, self.gene_index] = 1.0
            self.register_buffer("mask", mask, persistent=False)
        self.bias = nn.Parameter(torch.empty(n_terms))
        self.reset_parameters()

    @property
    def n_members(self) -> int:
        """Number of (gene, term) member pairs."""
        return self.term_index.numel()

    def member_mask(self) -> torch.Tensor:
        """Dense boolean ``(T, G)`` membership."""
        mask = torch.zeros(
            self.out_features, self.in_features, dtype=torch.bool, device=self.term_index.device
        )
        mask[self.term_index, self.gene_index] = True
        return mask

    def reset_parameters(self) -> None:
        """Initialise as :class:`torch.nn.Linear` does."""
        full = torch.empty(self.out_features, self.in_features, device=self.weight.device)
        nn.init.kaiming_uniform_(full, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        nn.init.uniform_(self.bias, -bound, bound)
        with torch.no_grad():
            if self.member_only:
                self.weight.copy_(full[self.term_index, self.gene_index])
            else:
                self.weight.copy_(full)

    def effective_weight(self) -> torch.Tensor:
        """The weight actually applied, ``W * M^T``, as a dense ``(n_terms, n_genes)``."""
        if self.member_only:
            dense = self.weight.new_zeros(self.out_features, self.in_features)
            return dense.index_put((self.term_index, self.gene_index), self.weight)
        return self.weight * self.mask

    def member_weights(self) -> sp.csr_matrix:
        """The weight of each member gene in each term, ``(n_terms, n_genes)`` sparse.

        Only member pairs are listed (with ``lambda_ > 0`` the non-member weights also
        act; they are left out here).
        """
        w = self.effective_weight()[self.term_index, self.gene_index]
        return _pairs_matrix(self, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pathway activities ``(batch, n_terms)``."""
        if not self.member_only:
            return F.linear(x, self.effective_weight(), self.bias)
        sums = _gathered_sums(
            x,
            self.gene_index,
            self.term_index,
            self.weight,
            self.out_features,
            self.max_gather_elements,
        )
        return sums + self.bias

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # models saved before member-only storage hold a dense (T, G) weight and a
        # dense boolean "member" buffer: keep the member entries
        key = prefix + "weight"
        old_member = state_dict.pop(prefix + "member", None)
        if old_member is not None:
            if not torch.equal(old_member.to(torch.bool).cpu(), self.member_mask().cpu()):
                raise RuntimeError("The saved gene-set mask differs from this layer's mask.")
            if prefix + "term_index" not in state_dict:
                state_dict[prefix + "term_index"] = self.term_index
                state_dict[prefix + "gene_index"] = self.gene_index
        weight = state_dict.get(key)
        if self.member_only and weight is not None and weight.dim() == 2:
            state_dict[key] = weight[self.term_index.cpu(), self.gene_index.cpu()]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"lambda_={self.lambda_}, members={self.n_members}"
        )


def _gathered_sums(
    x: torch.Tensor,
    gene_index: torch.Tensor,
    out_index: torch.Tensor,
    weight: torch.Tensor,
    n_out: int,
    max_elements: int,
) -> torch.Tensor:
    """``(B, G) -> (B, n_out)``: ``sum_pairs weight * x[:, gene]`` added up per output.

    Member genes are gathered (pairs x B, rows contiguous), weighted and summed with
    ``index_add_``, in slices of cells so that the gathered block stays under
    ``max_elements``.
    """
    rows = max(1, max_elements // max(1, gene_index.numel()))

    def part(xb: torch.Tensor) -> torch.Tensor:
        xt = xb.T[gene_index] * weight.unsqueeze(1)
        out = xt.new_zeros(n_out, xb.shape[0])
        return out.index_add_(0, out_index, xt).T

    if x.shape[0] <= rows:
        return part(x)
    return torch.cat([part(x[i : i + rows]) for i in range(0, x.shape[0], rows)])


def _pairs_matrix(layer: nn.Module, values: torch.Tensor) -> sp.csr_matrix:
    """``(n_terms, n_genes)`` CSR of one value per member pair of ``layer``."""
    return sp.csr_matrix(
        (
            values.detach().cpu().double().numpy(),
            (layer.term_index.cpu().numpy(), layer.gene_index.cpu().numpy()),
        ),
        shape=(layer.out_features, layer.in_features),
    )


class MemberMeanLayer(nn.Module):
    """Pathway activity as a weighted mean of the term's member genes, weights >= 0.

    ``a_t = sum_{g in t} p_tg x_g + b_t`` with ``p_tg = softplus(w_tg) / sum_{h in t}
    softplus(w_th)``: non-negative weights that sum to one over the term's measured
    members. An activity is therefore in the units of the expression (log-normalised
    expression), and it rises exactly when its members, as the layer weighs them,
    rise: the difference of mean activities between two groups of cells is the
    weighted mean of its members' differences (a log-fold change), whatever the
    training found. Normalising the weights keeps large and small terms on one scale
    (a plain weighted sum grows with the term's size).

    Terms whose measured members are identical (nested GO terms on a gene panel
    often are) share one set of weights and one bias, so they get identical
    activities: the data cannot tell them apart, and neither does the layer.

    The weights start equal (the plain mean of members) and the biases at 0;
    :meth:`center` moves the biases so that a reference profile (the control cells'
    mean expression) has zero activity, which leaves every difference of activities
    unchanged. Weights and biases are then learned; no difference of activities ever
    depends on the biases.

    Parameters
    ----------
    membership
        ``(n_genes, n_terms)`` sparse or dense 0/1 gene-set membership.
    """

    #: Largest ``batch x member pairs`` gathered at once (bounds the temporary memory).
    max_gather_elements = MaskedLinear.max_gather_elements

    def __init__(self, membership: sp.spmatrix | np.ndarray):
        super().__init__()
        by_term = _register_member_pairs(self, membership)
        groups, first = _identical_rows(by_term)
        unique = by_term[first]
        self.n_groups = len(first)
        group_counts = np.diff(unique.indptr)
        self.register_buffer("term_group", torch.as_tensor(groups, dtype=torch.long))
        self.register_buffer(
            "group_index",
            torch.as_tensor(np.repeat(np.arange(self.n_groups), group_counts), dtype=torch.long),
        )
        self.register_buffer("group_gene_index", torch.as_tensor(unique.indices, dtype=torch.long))
        self.weight = nn.Parameter(torch.empty(self.group_gene_index.numel()))
        self.bias = nn.Parameter(torch.empty(self.n_groups))
        self.reset_parameters()

    @property
    def n_members(self) -> int:
        """Number of (gene, term) member pairs."""
        return self.term_index.numel()

    def reset_parameters(self) -> None:
        """Equal weights (``softplus(w) = 1``) for every member, bias 0."""
        with torch.no_grad():
            self.weight.fill_(math.log(math.e - 1.0))
            self.bias.zero_()

    @torch.no_grad()
    def center(self, x_mean: torch.Tensor) -> None:
        """Set the biases so that the profile ``x_mean`` (``(n_genes,)``) has activity 0."""
        x = x_mean.reshape(1, -1).to(self.weight.dtype)
        self.bias.copy_(-self._group_means(x)[0])

    def _pair_weights(self) -> torch.Tensor:
        """``p``: each (group, member) pair's share of its group's ``softplus`` weights."""
        raw = F.softplus(self.weight)
        total = raw.new_zeros(self.n_groups).index_add_(0, self.group_index, raw)
        return raw / total[self.group_index]

    def member_weights(self) -> sp.csr_matrix:
        """The weight of each member gene in each term, ``(n_terms, n_genes)`` sparse.

        Non-negative; each row sums to 1.
        """
        pair = self._pair_weights().detach()
        starts = torch.zeros(self.n_groups + 1, dtype=torch.long, device=pair.device)
        starts[1:] = torch.cumsum(torch.bincount(self.group_index, minlength=self.n_groups), 0)
        # each term takes its group's pairs, in the group's (sorted) gene order
        per_term = [pair[starts[g] : starts[g + 1]] for g in self.term_group.tolist()]
        values = torch.cat(per_term) if per_term else pair.new_zeros(0)
        return _pairs_matrix(self, values)

    def effective_weight(self) -> torch.Tensor:
        """The weight actually applied, as a dense ``(n_terms, n_genes)``."""
        dense = self.weight.new_zeros(self.n_groups, self.in_features)
        dense = dense.index_put((self.group_index, self.group_gene_index), self._pair_weights())
        return dense[self.term_group]

    def _group_means(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, n_groups)``: each distinct member set's weighted mean, without bias."""
        return _gathered_sums(
            x,
            self.group_gene_index,
            self.group_index,
            self._pair_weights(),
            self.n_groups,
            self.max_gather_elements,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pathway activities ``(batch, n_terms)``."""
        return (self._group_means(x) + self.bias)[:, self.term_group]

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"distinct_member_sets={self.n_groups}, members={self.n_members}"
        )


def _identical_rows(matrix: sp.csr_matrix) -> tuple[np.ndarray, list[int]]:
    """Group of each row (rows of one column pattern share one) and each group's first row."""
    seen: dict[bytes, int] = {}
    groups = np.empty(matrix.shape[0], dtype=np.int64)
    first: list[int] = []
    for row in range(matrix.shape[0]):
        key = matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]].tobytes()
        if key not in seen:
            seen[key] = len(first)
            first.append(row)
        groups[row] = seen[key]
    return groups, first


class _InterventionBase(nn.Module, abc.ABC):
    """Shared part of the intervention encoders: strengths and the slot layout.

    Subclasses define :meth:`logits`, the unnormalised assignment of each target to
    the latent factors; ``bc = softmax(tau * logits)``.
    """

    def _add_shift(self, n_targets: int) -> None:
        # registered after the subclass's own parameters (the reference's order)
        self.shift = nn.Parameter(torch.ones(n_targets))

    @abc.abstractmethod
    def logits(self, index: torch.Tensor) -> torch.Tensor:
        """Assignment logits ``(B, Z)`` of target indices ``index`` (``(B,)`` long)."""

    def assignment(self, index: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """``bc = softmax(tau * logits)`` for target indices ``index`` (``(B,)`` long, ``>= 0``)."""
        return torch.softmax(temperature * self.logits(index), dim=-1)

    def forward(
        self, codes: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Assignments and strengths for each target slot.

        Parameters
        ----------
        codes
            ``(B, K)`` target indices, ``-1`` where a slot holds no target.
        temperature
            Softmax temperature ``tau``.

        Returns
        -------
        ``bc`` of shape ``(B, K, Z)`` and ``s`` of shape ``(B, K)`` (zero for empty slots).
        """
        present = codes >= 0
        safe = codes.clamp_min(0)
        bc = self.assignment(safe.reshape(-1), temperature).reshape(*codes.shape, -1)
        s = self.shift[safe] * present.to(self.shift.dtype)
        return bc, s


class InterventionEncoder(_InterventionBase):
    """Soft assignment of perturbation targets to latent factors through an MLP (reference).

    ``h_c = LeakyReLU_0.2(Linear(P, hidden)(c))``, ``bc = softmax(tau * Linear(hidden, Z)(h_c))``,
    ``s = c . shift`` with a learnable ``shift`` initialised to ones. Each target is a
    one-hot vector; it is given as an index (``-1`` for "no target"), so the first
    linear layer reduces to a column look-up and no ``P``-wide vector is formed.

    The hidden activation and both biases are shared by all targets; in trained
    models this shared part dominates the logits, and most targets end up assigned to
    the same factor (see :class:`InterventionTable` for the remedy).

    Parameters
    ----------
    n_targets
        Number of single targets ``P``.
    n_latent
        Number of latent factors ``Z``.
    n_hidden
        Width of the hidden layer.
    """

    def __init__(self, n_targets: int, n_latent: int, n_hidden: int = 128):
        super().__init__()
        self.c1 = nn.Linear(n_targets, n_hidden)
        self.c2 = nn.Linear(n_hidden, n_latent)
        self._add_shift(n_targets)

    def logits(self, index: torch.Tensor) -> torch.Tensor:
        """``Linear(hidden, Z)(LeakyReLU(Linear(P, hidden)(onehot(index))))``."""
        h = F.embedding(index, self.c1.weight.T) + self.c1.bias
        return self.c2(F.leaky_relu(h, 0.2))


class InterventionTable(_InterventionBase):
    """Soft assignment of perturbation targets to latent factors from a free logit table.

    ``bc = softmax(tau * L[target])`` with a learnable ``P x Z`` table ``L``: nothing is
    shared between targets, so no common term can pull every target onto one factor.
    With ``one_to_one`` and ``Z >= P``, target ``i`` starts on factor ``i`` (its logit
    raised by ``margin``); otherwise the table starts as small noise and the balance
    penalty of the module spreads the targets.

    Parameters
    ----------
    n_targets
        Number of single targets ``P``.
    n_latent
        Number of latent factors ``Z``.
    one_to_one
        Start target ``i`` on factor ``i`` when ``Z >= P``.
    margin
        Initial logit advantage of a target's own factor (one-to-one start).
    init_std
        Standard deviation of the normal initialisation of the table.
    """

    def __init__(
        self,
        n_targets: int,
        n_latent: int,
        one_to_one: bool = True,
        margin: float = 1.0,
        init_std: float = 0.01,
    ):
        super().__init__()
        table = torch.randn(n_targets, n_latent) * init_std
        self.one_to_one = bool(one_to_one and n_latent >= n_targets)
        if self.one_to_one:
            idx = torch.arange(n_targets)
            table[idx, idx] += margin
        self.table = nn.Parameter(table)
        self._add_shift(n_targets)

    def logits(self, index: torch.Tensor) -> torch.Tensor:
        """Rows of the logit table."""
        return self.table[index]


class CausalLayer(nn.Module):
    """Linear structural causal model over the latent factors.

    ``u = z_int (I - A)^{-1}`` with ``A = triu(G, 1)`` (a DAG in a fixed order),
    solved with a triangular solve, which is exact because ``I - A`` is unit
    upper-triangular.

    Parameters
    ----------
    n_latent
        Number of latent factors.
    init_std
        Standard deviation of the normal initialisation of ``G``.
    """

    def __init__(self, n_latent: int, init_std: float = 0.1):
        super().__init__()
        self.G = nn.Parameter(torch.randn(n_latent, n_latent) * init_std)

    @property
    def adjacency(self) -> torch.Tensor:
        """``A = triu(G, 1)``."""
        return torch.triu(self.G, diagonal=1)

    def forward(self, z_int: torch.Tensor) -> torch.Tensor:
        """Apply ``(I - A)^{-1}`` on the right of ``z_int`` (``(B, Z)``)."""
        eye = torch.eye(self.G.shape[0], dtype=self.G.dtype, device=self.G.device)
        return torch.linalg.solve_triangular(
            eye - self.adjacency, z_int, upper=True, left=False, unitriangular=True
        )
