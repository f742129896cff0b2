import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

import scsena  # noqa: E402
from scsena import pl  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # tiny models train several times faster on one thread than on two busy cores
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def small():
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=700, n_genes=200, n_targets=5, n_doubles=2, seed=0
    )
    scsena.SENAVAE.setup_anndata(adata)
    model = scsena.SENAVAE(adata)
    model.train(max_epochs=3, enable_progress_bar=False, enable_model_summary=False)
    return model, adata


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _doubles(adata):
    return sorted({g for g in adata.obs["guide_ids"] if "," in g})


def test_pathway_activity_heatmap(small, tmp_path):
    model, adata = small
    n_groups = adata.obs["guide_ids"].nunique()
    out = tmp_path / "activity.png"
    ax = pl.pathway_activity(model, n_terms=7, save=out)
    image = ax.images[0].get_array()
    assert image.shape == (n_groups, 7)
    assert np.nanmin(image) >= 0 and np.nanmax(image) <= 1  # scaled per BP
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows[0] == "control" and len(rows) == n_groups
    cols = [t.get_text() for t in ax.get_xticklabels()]
    assert len(cols) == 7 and all(c for c in cols)
    assert ax.get_title() == "Mean BP activity per perturbation (each BP scaled to [0, 1])"
    assert out.exists() and out.stat().st_size > 0


def test_pathway_activity_wraps_names_never_truncates(small):
    model, _ = small
    names = dict(zip(model.term_ids_, model.term_names_))
    long = sorted(model.term_ids_, key=lambda t: -len(names[t]))[:3]
    assert len(names[long[0]]) > 20
    ax = pl.pathway_activity(model, terms=long, label_width=20, relative_to_control=True)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert [lab.replace("\n", " ") for lab in labels] == [names[t] for t in long]
    assert all(len(line) <= 20 or " " not in line for lab in labels for line in lab.split("\n"))
    assert ax.get_title() == "BP activity per perturbation, minus control"


def test_pathway_activity_selection(small):
    model, _ = small
    terms = model.term_ids_[:3]
    targets = model.targets_[:2]
    ax = pl.pathway_activity(
        model, terms=terms, perturbations=targets, relative_to_control=True, term_labels="id"
    )
    assert ax.images[0].get_array().shape == (2, 3)
    assert [t.get_text() for t in ax.get_xticklabels()] == terms
    assert [t.get_text() for t in ax.get_yticklabels()] == targets
    # names work as well as ids
    ax = pl.pathway_activity(model, terms=[model.term_names_[0]], perturbations=targets)
    assert ax.images[0].get_array().shape == (2, 1)
    with pytest.raises(ValueError, match="Unknown terms"):
        pl.pathway_activity(model, terms=["GO:nope"])


def test_pathway_activity_groupby_and_row_scaling(small):
    model, adata = small
    adata.obs["arm"] = np.where(np.arange(adata.n_obs) % 2, "odd", "even")
    try:
        ax = pl.pathway_activity(
            model, groupby="arm", n_terms=5, standard_scale="group", term_labels="both"
        )
    finally:
        del adata.obs["arm"]
    image = ax.images[0].get_array()
    assert image.shape == (2, 5)
    assert np.allclose(image.min(axis=1), 0) and np.allclose(image.max(axis=1), 1)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["even", "odd"]
    assert ax.get_ylabel() == "arm"
    assert ax.get_title() == "Mean BP activity per perturbation (each row scaled to [0, 1])"
    labels = [t.get_text().replace("\n", " ") for t in ax.get_xticklabels()]
    assert all(lab.endswith(")") and "(GO:" in lab for lab in labels)
    with pytest.raises(KeyError, match="not a column of obs"):
        pl.pathway_activity(model, groupby="nope")
    with pytest.raises(ValueError, match="standard_scale must be"):
        pl.pathway_activity(model, standard_scale="cells")


def test_top_bps_bars_and_affected_colour(small, tmp_path):
    model, adata = small
    metrics, scores = model.activation_test(return_scores=True)
    target = metrics.sort_values("n_affected").iloc[-1]["perturbation"]
    out = tmp_path / "top.pdf"
    ax = pl.top_bps(model, target, n=6, scores=scores, save=out)
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == 6
    top = scores.loc[target].sort_values(ascending=False).iloc[:6]
    # best on top: the last bar is the highest score
    widths = [b.get_width() for b in bars]
    assert np.allclose(widths, top.to_numpy()[::-1])
    names = dict(zip(model.term_ids_, model.term_names_))
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-1] == names[top.index[0]]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"contains {target}", "other"]
    assert ax.get_title() == f"BPs most changed by {target}"
    assert ax.get_xlabel() == "activation score" and ax.get_ylabel() == "biological process"
    assert out.exists()


def test_top_bps_wraps_names_never_truncates(small):
    model, _ = small
    _, scores = model.activation_test(return_scores=True)
    target = scores.index[0]
    names = dict(zip(model.term_ids_, model.term_names_))
    ax = pl.top_bps(model, target, n=len(model.term_ids_), scores=scores, label_width=20)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    shown = list(scores.loc[target].sort_values(ascending=False, kind="stable").index)[::-1]
    assert [lab.replace("\n", " ") for lab in labels] == [names[t] for t in shown]
    assert any("\n" in lab for lab in labels)
    assert all(len(line) <= 20 or " " not in line for lab in labels for line in lab.split("\n"))
    ax = pl.top_bps(model, target, n=3, scores=scores, term_labels="id", method="ttest")
    assert [t.get_text() for t in ax.get_yticklabels()] == shown[-3:]
    assert ax.get_xlabel() == "activation score (-log10 p)"


def test_top_bps_marks_affected(small):
    model, _ = small
    # with all BPs shown, exactly the affected ones are red
    metrics, scores = model.activation_test(return_scores=True)
    row = metrics.iloc[0]
    ax = pl.top_bps(model, row["perturbation"], n=len(model.term_ids_), scores=scores)
    red = matplotlib.colors.to_rgba("tab:red")
    n_red = sum(np.allclose(b.get_facecolor(), red) for b in ax.patches)
    assert n_red == row["n_affected"]


def test_top_bps_unknown_perturbation(small):
    model, adata = small
    with pytest.raises(ValueError, match="No scores"):
        pl.top_bps(model, _doubles(adata)[0])


def test_causal_graph_nodes_and_edges(small, tmp_path):
    model, _ = small
    edges = model.get_causal_graph(threshold=0.0)
    ax = pl.causal_graph(model, threshold=0.0, save=tmp_path / "dag.svg")
    nodes = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(nodes) == 1 and len(nodes[0].get_offsets()) == model.n_latent
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == len(edges) == model.n_latent * (model.n_latent - 1) // 2
    graph = ax.scsena_graph
    assert graph.number_of_edges() == len(edges)
    # targets are written next to the factor they are mapped to
    mapping = model.get_intervention_targets()
    texts = " ".join(t.get_text() for t in ax.texts)
    for target, latent in mapping["latent"].items():
        assert target in graph.nodes[latent]["targets"]
        assert target in texts
    assert (tmp_path / "dag.svg").exists()
    # layered by DAG order: a factor's column is the longest path ending at it
    pos = ax.scsena_pos
    for v in graph:
        paths = [p for u in graph for p in nx.all_simple_paths(graph, u, v)]
        assert pos[v][0] == max((len(p) - 1 for p in paths), default=0)
    assert all(pos[u][0] < pos[v][0] for u, v in graph.edges)
    assert ax.get_title() == "Latent DAG (|weight| >= 0)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["positive edge", "negative edge", "perturbed factor"]


def _arrow_points(arrow):
    """Points along a drawn arrow (its curve and head), in data coordinates."""
    t = np.linspace(0, 1, 25)
    return np.concatenate([seg.point_at_t(t) for seg, _ in arrow.get_path().iter_bezier()])


def _assert_edges_avoid_other_factors(ax, radius=0.25):
    pos = ax.scsena_pos
    names = list(pos)
    xy = np.array([pos[v] for v in names])
    for arrow in [p for p in ax.patches if isinstance(p, FancyArrowPatch)]:
        pts = _arrow_points(arrow)
        ends = {names[np.linalg.norm(xy - pts[i], axis=1).argmin()] for i in (0, -1)}
        others = np.array([pos[v] for v in names if v not in ends])
        if len(others):
            assert np.linalg.norm(pts[:, None] - others[None], axis=2).min() > radius


def _assert_factors_inside_axes(ax, room=0.4):
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for x, y in ax.scsena_pos.values():
        assert x0 + room <= x <= x1 - room and y0 + room <= y <= y1 - room


def test_causal_graph_edges_pass_no_factor_and_nothing_is_cut(small):
    model, _ = small
    ax = pl.causal_graph(model, threshold=0.0)  # complete DAG: most edges must bend
    ax.figure.canvas.draw()
    _assert_edges_avoid_other_factors(ax)
    _assert_factors_inside_axes(ax)
    for arrow in [p for p in ax.patches if isinstance(p, FancyArrowPatch)]:
        pts = _arrow_points(arrow)
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        assert (pts[:, 0] >= x0).all() and (pts[:, 0] <= x1).all()
        assert (pts[:, 1] >= y0).all() and (pts[:, 1] <= y1).all()


def test_causal_graph_isolated_row_and_all_targets(small, monkeypatch):
    model, _ = small
    edges = model.get_causal_graph(threshold=0.0)
    keep = edges[(edges["source"] == "z0") & edges["target"].isin(["z1", "z2"])]
    monkeypatch.setattr(model, "get_causal_graph", lambda threshold: keep)
    many = [f"GENE{i:02d}" for i in range(20)]
    table = pd.DataFrame({"latent": "z1"}, index=pd.Index(many, name="target"))
    monkeypatch.setattr(model, "get_intervention_targets", lambda temperature: table)
    ax = pl.causal_graph(model, targets_width=30)
    pos = ax.scsena_pos
    isolated = [f"z{i}" for i in range(3, model.n_latent)]
    # isolated factors share one row of their own, below the graph, side by side
    assert len({pos[v][1] for v in isolated}) == 1
    assert pos[isolated[0]][1] < min(pos[v][1] for v in ("z0", "z1", "z2"))
    assert len({pos[v][0] for v in isolated}) == len(isolated)
    assert pos["z0"][0] == 0 and pos["z1"][0] == pos["z2"][0] == 1
    # every target is listed, none hidden behind "+k more"
    texts = " ".join(t.get_text() for t in ax.texts)
    assert all(g in texts for g in many) and "more" not in texts
    table = [t.get_text() for t in ax.texts if t.get_text().startswith("targets acting")]
    assert len(table) == 1
    assert all(len(line) <= 30 for line in table[0].split("\n")[1:])  # wrapped, all there
    _assert_factors_inside_axes(ax)


def test_causal_graph_many_isolated_factors_wrap_into_rows(small, monkeypatch):
    model, _ = small
    n = 21
    edges = pd.DataFrame({"source": ["z0"], "target": ["z1"], "weight": [0.5]})
    monkeypatch.setattr(type(model), "n_latent", property(lambda self: n))
    monkeypatch.setattr(model, "get_causal_graph", lambda threshold: edges)
    table = pd.DataFrame({"latent": ["z0"]}, index=pd.Index(["A"], name="target"))
    monkeypatch.setattr(model, "get_intervention_targets", lambda temperature: table)
    ax = pl.causal_graph(model)
    pos = ax.scsena_pos
    isolated = [f"z{i}" for i in range(2, n)]
    rows = sorted({pos[v][1] for v in isolated}, reverse=True)
    assert len(rows) == 3  # 19 factors, 8 per row
    assert rows[0] < min(pos["z0"][1], pos["z1"][1])
    # no two factors share a position
    assert len({tuple(p) for p in pos.values()}) == n
    assert [sum(pos[v][1] == r for v in isolated) for r in rows] == [8, 8, 3]
    _assert_factors_inside_axes(ax)


def test_causal_graph_threshold_and_spring(small):
    model, _ = small
    big = float(model.get_causal_graph(threshold=0.0)["weight"].abs().max())
    ax = pl.causal_graph(model, threshold=big + 1, layout="spring", label_targets=False)
    assert not [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"z{i}" for i in range(model.n_latent))
    ax = pl.causal_graph(model, threshold=big + 1, hide_isolated=True)
    n_mapped = model.get_intervention_targets()["latent"].nunique()
    assert len(ax.collections[0].get_offsets()) == n_mapped


def test_predicted_vs_real(small, tmp_path):
    model, adata = small
    double = _doubles(adata)[0]
    a, b = double.split(",")
    out = tmp_path / "pvr.png"
    ax, pooled = pl.predicted_vs_real(
        model, perturbations=[a, f"{b},{a}"], n_cells=40, return_data=True, save=out
    )
    groups = ["control", a, f"{b},{a}"]
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters) == 5  # real: control, a, the double; predicted: a, the double
    assert sum(len(c.get_offsets()) for c in scatters) == pooled.n_obs == 5 * 40
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == groups + ["real", "predicted"]
    # the double's real cells were found although its targets are given in another order
    counts = pooled.obs.groupby(["perturbation", "source"], observed=True).size()
    assert counts[(f"{b},{a}", "real")] == 40
    assert "X_umap" in pooled.obsm and out.exists()


def test_predicted_vs_real_pca(small):
    model, _ = small
    target = model.targets_[0]
    ax = pl.predicted_vs_real(model, perturbations=target, n_cells=30, basis="pca")
    assert ax.get_xlabel() == "PC1"
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in scatters) == 3 * 30


def test_training_curves(small, tmp_path):
    model, _ = small
    out = tmp_path / "curves.png"
    fig = pl.training_curves(model, save=out)
    assert [ax.get_title() for ax in fig.axes] == [
        "Total loss (train)",
        "MMD (train)",
        "Reconstruction MSE (train)",
        "KL divergence (train)",
    ]
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "Total loss",
        "MMD",
        "Reconstruction MSE",
        "KL divergence",
    ]
    assert all(ax.get_xlabel() == "epoch (1 = first)" for ax in fig.axes)
    assert all(len(ax.lines[0].get_xdata()) == 3 for ax in fig.axes)
    fig.canvas.draw()
    ticks = fig.axes[0].get_xticks()
    assert np.allclose(ticks, np.round(ticks))  # whole epochs only
    assert model.best_epoch_ is None and all(ax.get_legend() is None for ax in fig.axes)
    assert out.exists()
    fig = pl.training_curves(model, keys=["alpha", "beta", "tau"], ncols=2)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 3
    assert fig.axes[0].get_title() == "alpha (MMD weight)"


def test_training_curves_best_epoch_in_legend(small, monkeypatch):
    model, _ = small
    monkeypatch.setattr(model, "best_epoch_", 1)
    fig = pl.training_curves(model, keys=["mmd_train"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "best epoch (2)"]
    assert list(ax.lines[1].get_xdata()) == [2, 2]  # 0-based best_epoch_, epochs drawn from 1
    with pytest.raises(ValueError, match="No history for"):
        pl.training_curves(model, keys=["nope"])


def test_training_curves_without_history(small):
    _, adata = small
    model = scsena.SENAVAE(adata)
    with pytest.raises(ValueError, match="no training history"):
        pl.training_curves(model)
    model.train(max_epochs=1, enable_progress_bar=False, logger=False)
    with pytest.raises(ValueError, match="no training history"):
        pl.training_curves(model)


def test_mudata_input(small):
    md = pytest.importorskip("mudata")
    model, adata = small
    with md.set_options(pull_on_update=False):  # mudata 0.4 behaviour, no FutureWarning
        mdata = md.MuData({"rna": adata.copy()})
    scsena.SENAVAE.setup_mudata(mdata, rna_mod="rna", perturbation_mod_or_key="guide_ids")
    mu_model = scsena.SENAVAE(mdata)
    mu_model.module.load_state_dict(model.module.state_dict())
    ax = pl.pathway_activity(mu_model, n_terms=4)
    assert ax.images[0].get_array().shape == (adata.obs["guide_ids"].nunique(), 4)
    assert ax.get_ylabel() == "perturbation" and ax.get_xlabel() == "biological process"
    _, pooled = pl.predicted_vs_real(
        mu_model, perturbations=mu_model.targets_[0], n_cells=10, basis="pca", return_data=True
    )
    assert set(pooled.obs["source"]) == {"real", "predicted"}
    assert list(pooled.var_names) == list(adata.var_names)
    # a model set up on an AnnData is given AnnData; a MuData is refused with the way out
    with pytest.raises(ValueError, match="Name the RNA modality of this MuData"):
        pl.pathway_activity(model, mdata)


def test_differential_activity_dot_plot(small, tmp_path):
    model, adata = small
    res = model.differential_activity()
    groups = list(dict.fromkeys(res["perturbation"]))
    out = tmp_path / "da.png"
    ax = pl.differential_activity(res, n_terms=2, label_width=30, save=out)
    terms = list(dict.fromkeys(res.loc[res["rank"] <= 2, "term"]))
    dots = ax.collections[0]
    assert len(dots.get_offsets()) == len(groups) * len(terms)
    assert [t.get_text() for t in ax.get_xticklabels()] == groups
    labels = [t.get_text() for t in ax.get_yticklabels()]
    names = dict(zip(res["term"], res["term_name"]))
    # full names, wrapped, never truncated
    assert {lab.replace("\n", " ") for lab in labels} == {names[t] for t in terms}
    assert all(len(line) <= 30 or " " not in line for lab in labels for line in lab.split("\n"))
    first = res[res["perturbation"] == groups[0]].set_index("term")
    np.testing.assert_allclose(
        dots.get_array()[: len(terms)], first.loc[terms, "std_effect"].to_numpy()
    )
    assert out.exists() and out.stat().st_size > 0
    assert ax.get_title() == "Top 2 pathways per perturbation vs control"
    assert ax.get_xlabel() == "perturbation" and ax.get_ylabel() == "biological process"
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "-log10 FDR\n(edged: FDR < 0.05)"
    assert [t.get_text() for t in legend.get_texts()] == ["1", "5", "20", "50+"]
    # significant dots have a black edge, the others none
    edged = np.asarray(dots.get_linewidths()) > 0
    fdrs = np.concatenate(
        [
            res[res["perturbation"] == g].set_index("term").loc[terms, "fdr"].to_numpy()
            for g in groups
        ]
    )
    assert (edged == (np.nan_to_num(fdrs, nan=1.0) < 0.05)).all()
    ax = pl.differential_activity(model, perturbations=[groups[1]], n_terms=3)
    assert len(ax.collections[0].get_offsets()) == 3
    with pytest.raises(ValueError, match="lack the columns"):
        pl.differential_activity(res.drop(columns="std_effect"))
    with pytest.raises(ValueError, match="No results for"):
        pl.differential_activity(res, perturbations=["NOT_A_TARGET"])


def test_pl_namespace_lists_only_plotting_functions():
    import inspect

    import scsena.pl as pl

    names = dir(pl)
    assert names == sorted(pl.__all__)
    assert all(inspect.isfunction(getattr(pl, n)) for n in names)
    assert "np" not in names and "plt" not in names and "nx" not in names


def test_get_affected_terms(small):
    model, _ = small
    # default: the collection given at setup (full gene sets, not only measured genes)
    collection = scsena.gene_sets.as_gene_sets(model.registry_["setup_args"]["gene_sets"])
    affected = model.get_affected_terms()
    assert list(affected) == model.targets_
    # the collection holds Ensembl ids: targets are looked up by their mapped id
    ensembl = scsena.gene_sets.map_gene_ids(model.targets_, to="ensembl").mapping
    for target, terms in affected.items():
        gene = ensembl[target]
        assert terms == [t for t in model.term_ids_ if gene in set(collection.get(t, ()))]
    target = max(affected, key=lambda t: len(affected[t]))
    assert affected[target]
    assert model.get_affected_terms(target) == {target: affected[target]}
    # an explicit collection replaces the mask
    term = model.term_ids_[0]
    assert model.get_affected_terms([target], gene_sets={term: [target]}) == {target: [term]}
    with pytest.raises(ValueError, match="Unknown target"):
        model.get_affected_terms("NOT_A_TARGET")


def test_activation_test_counts_the_affected_terms(small):
    model, _ = small
    metrics = model.activation_test().set_index("perturbation")
    affected = model.get_affected_terms(list(metrics.index))
    assert {t: len(affected[t]) for t in metrics.index} == metrics["n_affected"].to_dict()


def test_causal_graph_orders_columns_to_uncross_edges(small, monkeypatch):
    model, _ = small
    # in factor order, z0 -> z3 and z1 -> z2 would cross
    edges = pd.DataFrame({"source": ["z0", "z1"], "target": ["z3", "z2"], "weight": [0.5, -0.5]})
    monkeypatch.setattr(model, "get_causal_graph", lambda threshold: edges)
    ax = pl.causal_graph(model)
    pos = ax.scsena_pos
    assert pos["z0"][1] > pos["z1"][1]  # first column as in the graph
    assert pos["z3"][1] > pos["z2"][1]  # second column follows its parents: no crossing
    assert pos["z0"][0] == pos["z1"][0] == 0 and pos["z2"][0] == pos["z3"][0] == 1
