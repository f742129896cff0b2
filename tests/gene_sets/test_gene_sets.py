import gzip
import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from scsena import gene_sets as gs

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "go_propagated_sample.tsv.gz"
# The full Bioconductor table is not shipped; it is used when a checkout of the shared data
# sits next to the repository.
FULL_TABLE = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "go"
    / "hs_go_bp_propagated_ensembl.tsv.gz"
)

TP53_ENSEMBL = "ENSG00000141510"


def _pairs(gene_sets):
    return {(t, g) for t, genes in gene_sets.items() for g in genes}


@pytest.fixture(scope="module")
def sample_table():
    return pd.read_csv(SAMPLE, sep="\t", dtype=str)


@pytest.fixture(scope="module")
def go_full():
    return gs.go_bp()


# --------------------------------------------------------------------------- mask: hand example

VAR = ["g1", "g2", "g3", "g4", "g5", "g6"]
SETS = {
    "T3": ["g1", "g2", "g3"],
    "T1": ["g2", "g4", "g9"],  # g9 is not a var_name -> 2 members
    "T2": ["g5"],  # 1 member
    "T0": ["g6", "g6", "g1", "x"],  # duplicate g6 counts once -> 2 members
}


def test_build_mask_hand_example():
    mask = gs.build_mask(VAR, SETS, min_genes=2)
    expected = np.array(
        [
            [1, 0, 1],  # g1
            [0, 1, 1],  # g2
            [0, 0, 1],  # g3
            [0, 1, 0],  # g4
            [0, 0, 0],  # g5
            [1, 0, 0],  # g6
        ],
        dtype=np.float32,
    )
    assert mask.terms == ["T0", "T1", "T3"]
    assert mask.term_names == ["T0", "T1", "T3"]
    assert mask.var_names == VAR
    assert isinstance(mask.membership, sp.csr_matrix)
    assert mask.membership.dtype == np.float32
    np.testing.assert_array_equal(mask.membership.toarray(), expected)
    np.testing.assert_array_equal(mask.sizes, [2, 2, 3])
    assert (mask.n_genes, mask.n_terms) == (6, 3)
    np.testing.assert_array_equal(mask.to_dense(), expected)
    assert mask.to_dense().dtype == np.float32


def test_build_mask_min_genes_and_lambda():
    mask = gs.build_mask(VAR, SETS, min_genes=3, lambda_=0.25)
    assert mask.terms == ["T3"]
    np.testing.assert_array_equal(mask.sizes, [3])
    dense = mask.to_dense(dtype=np.float64)
    assert dense.dtype == np.float64
    np.testing.assert_array_equal(dense[:, 0], [1, 1, 1, 0.25, 0.25, 0.25])
    # min_genes=1 keeps T2 (1 member) too; min_genes=0 also keeps empty sets
    assert gs.build_mask(VAR, SETS, min_genes=1).terms == ["T0", "T1", "T2", "T3"]
    mask0 = gs.build_mask(VAR, {**SETS, "T9": ["nope"]}, min_genes=0)
    assert mask0.terms == ["T0", "T1", "T2", "T3", "T9"]
    np.testing.assert_array_equal(mask0.sizes, [2, 2, 1, 3, 0])


def test_build_mask_go_names_and_presets():
    mask = gs.build_mask(["A", "B", "C"], {"GO:0008150": ["A", "B"], "mine": ["C"]}, min_genes=1)
    assert mask.term_names == ["biological_process", "mine"]
    # a preset string: the id type of the GO sets follows var_names
    genes = gs.go_bp(["GO:0006915"], id_type="symbol")["GO:0006915"][:50]
    mask = gs.build_mask(genes, "go_bp_sena", min_genes=1)
    assert mask.n_terms > 0
    assert set(mask.terms) <= set(gs.sena_terms())


def test_build_mask_errors():
    with pytest.raises(ValueError, match=r"look like symbol.*use ensembl.*map_gene_sets"):
        gs.build_mask(["TP53", "MDM2"], {"t": [TP53_ENSEMBL]})
    with pytest.raises(ValueError, match=r'map_gene_ids.*id_type="symbol"'):
        gs.build_mask(["TP53", "MDM2"], {"t": [TP53_ENSEMBL]})
    with pytest.raises(ValueError, match="versioned Ensembl IDs.*Strip the version"):
        gs.build_mask([TP53_ENSEMBL + ".17"], {"t": [TP53_ENSEMBL]})
    with pytest.raises(ValueError, match=r"largest with 3 gene.*lower min_genes"):
        gs.build_mask(VAR, SETS, min_genes=4)
    with pytest.raises(ValueError, match=r"duplicated.*var_names_make_unique"):
        gs.build_mask(["g1", "g2", "g1"], SETS)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"lambda_ must be a number in \[0, 1\]"):
            gs.build_mask(VAR, SETS, lambda_=bad)
    with pytest.raises(ValueError, match="min_genes"):
        gs.build_mask(VAR, SETS, min_genes=-1)
    with pytest.raises(ValueError, match="var_names is empty"):
        gs.build_mask([], SETS)
    with pytest.raises(TypeError, match="iterable of gene ids"):
        gs.build_mask(VAR, {"t": "g1"})


def test_mask_uns_roundtrip_h5ad(tmp_path):
    mask = gs.build_mask(VAR, {**SETS, "GO:0008150": VAR}, min_genes=2, lambda_=0.1)
    adata = ad.AnnData(np.zeros((3, len(VAR)), dtype=np.float32))
    adata.var_names = VAR
    adata.uns["gene_set_mask"] = mask.to_uns()
    path = tmp_path / "m.h5ad"
    adata.write_h5ad(path)
    back = gs.GeneSetMask.from_uns(ad.read_h5ad(path).uns["gene_set_mask"])
    assert back == mask
    assert back.terms == mask.terms and back.term_names == mask.term_names
    assert back.var_names == VAR and back.lambda_ == 0.1
    assert back.membership.dtype == np.float32
    np.testing.assert_array_equal(back.to_dense(), mask.to_dense())
    with pytest.raises(ValueError, match="not a stored GeneSetMask"):
        gs.GeneSetMask.from_uns({"terms": []})


def test_mask_all_go_terms(go_full):
    genes = gs.gene_id_table()["ensembl_id"].dropna().unique()
    var_names = np.random.default_rng(0).choice(genes, 5000, replace=False).tolist()
    mask = gs.build_mask(var_names, go_full, min_genes=5)
    # independent check from the long table
    long = gs.to_dataframe(go_full)
    long = long[long["target"].isin(var_names)]
    sizes = long["source"].value_counts()
    sizes = sizes[sizes >= 5].sort_index()
    assert mask.terms == sizes.index.tolist()
    np.testing.assert_array_equal(mask.sizes, sizes.to_numpy())
    assert mask.membership.nnz == long["source"].isin(sizes.index).sum()
    row = {g: i for i, g in enumerate(var_names)}
    col = {t: j for j, t in enumerate(mask.terms)}
    kept = long[long["source"].isin(sizes.index)]
    dense_hits = mask.membership[kept["target"].map(row), kept["source"].map(col)]
    assert (np.asarray(dense_hits) == 1).all()


# --------------------------------------------------------------------------- mask: property


@st.composite
def _mask_inputs(draw):
    pool = [f"g{i}" for i in range(15)]
    var_names = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=12, unique=True))
    members = st.lists(st.sampled_from(pool + ["x1", "x2"]), max_size=10)
    names = st.text(alphabet="abcT0123:", min_size=1, max_size=4)
    gene_sets = draw(st.dictionaries(names, members, min_size=1, max_size=8))
    min_genes = draw(st.integers(0, 4))
    return var_names, gene_sets, min_genes


@settings(max_examples=150, deadline=None)
@given(_mask_inputs())
def test_build_mask_matches_naive_reference(inputs):
    var_names, gene_sets, min_genes = inputs
    counts = {t: len(set(g) & set(var_names)) for t, g in gene_sets.items()}
    kept = sorted(t for t, n in counts.items() if n >= min_genes)
    if not any(counts.values()) and sum(len(g) for g in gene_sets.values()) > 0:
        with pytest.raises(ValueError, match="no gene of the gene sets"):
            gs.build_mask(var_names, gene_sets, min_genes=min_genes)
        return
    if not kept or sum(len(g) for g in gene_sets.values()) == 0:
        with pytest.raises(ValueError):
            gs.build_mask(var_names, gene_sets, min_genes=min_genes)
        return
    mask = gs.build_mask(var_names, gene_sets, min_genes=min_genes)
    assert mask.terms == kept
    naive = np.zeros((len(var_names), len(kept)), dtype=np.float32)
    for i, gene in enumerate(var_names):
        for j, term in enumerate(kept):
            if gene in gene_sets[term]:
                naive[i, j] = 1.0
    np.testing.assert_array_equal(mask.membership.toarray(), naive)
    np.testing.assert_array_equal(mask.sizes, naive.sum(axis=0).astype(int))
    assert (mask.sizes >= min_genes).all()


# --------------------------------------------------------------------------- GO propagation


def test_propagation_matches_bioconductor_sample(sample_table):
    terms = sorted(sample_table["go_id"].unique())
    assert len(terms) >= 40
    ours = gs.go_bp(terms)
    expected = {t: sorted(g) for t, g in sample_table.groupby("go_id")["ensembl_id"]}
    assert ours == expected


def test_sample_needs_every_relationship_type(sample_table):
    # each relationship type is needed to reproduce some term of the sample: the default
    # (all five) is the only set that matches, so the test above really checks each type
    terms = sorted(sample_table["go_id"].unique())
    full = gs.go_bp(terms)
    for rel in gs.RELATIONSHIPS:
        others = [r for r in gs.RELATIONSHIPS if r != rel]
        without = gs.go_bp(terms, relationships=others)
        assert _pairs(without) < _pairs(full), rel


@pytest.mark.skipif(not FULL_TABLE.exists(), reason="full propagated GO table not available")
def test_propagation_matches_bioconductor_all_terms(go_full):
    ref = pd.read_csv(FULL_TABLE, sep="\t", dtype=str)
    ours = gs.to_dataframe(go_full)
    ours = ours.sort_values(["source", "target"], ignore_index=True)
    ref = ref.rename(columns={"go_id": "source", "ensembl_id": "target"})
    ref = ref.sort_values(["source", "target"], ignore_index=True)
    assert len(ours) == len(ref) == 1_634_261
    pd.testing.assert_frame_equal(ours, ref)


def test_propagation_options(sample_table):
    terms = sorted(sample_table["go_id"].unique())
    full = gs.go_bp(terms, min_size=0)
    isa = gs.go_bp(terms, relationships="is_a", min_size=0)
    direct = gs.go_bp(terms, propagate=False, min_size=0)
    assert _pairs(direct) < _pairs(isa) < _pairs(full)
    # direct annotations equal the bundled direct table
    table = gs.gene_id_table().dropna()
    direct_entrez = gs.go_bp(terms, propagate=False, id_type="entrez")
    e2e = table.groupby("entrez_id")["ensembl_id"].apply(set).to_dict()
    for term, genes in direct_entrez.items():
        assert set(direct[term]) == set().union(*(e2e.get(g, set()) for g in genes))
    # a parent holds the genes of its children (true-path rule)
    assert set(full["GO:0008150"]) >= set().union(*full.values())
    with pytest.raises(ValueError, match="unknown GO relationship"):
        gs.go_bp(terms, relationships=["has part"])


def test_symbol_sets_agree_with_entrez_sets():
    terms = ["GO:0006915", "GO:0000002", "GO:0008150"]
    by_entrez = gs.go_bp(terms, id_type="entrez")
    by_symbol = gs.go_bp(terms, id_type="symbol")
    e2s = gs.gene_id_table().drop_duplicates("entrez_id").set_index("entrez_id")["symbol"]
    for term in terms:
        assert by_symbol[term] == sorted(set(e2s[by_entrez[term]]))
    assert "TP53" in by_symbol["GO:0006915"]
    assert TP53_ENSEMBL in gs.go_bp(["GO:0006915"])["GO:0006915"]


def test_evidence_filters():
    full = gs.go_bp(propagate=False, min_size=0)
    no_iea = gs.go_bp(propagate=False, exclude_evidence="IEA", min_size=0)
    only_iea = gs.go_bp(propagate=False, evidence=["iea"], min_size=0)
    p_full, p_no, p_only = _pairs(full), _pairs(no_iea), _pairs(only_iea)
    assert p_no < p_full and p_only < p_full
    assert p_no | p_only == p_full  # every direct pair has some evidence code
    # propagated: excluding IEA shrinks sets, never grows them
    prop_full = gs.go_bp(["GO:0008150", "GO:0006915"])
    prop_no = gs.go_bp(["GO:0008150", "GO:0006915"], exclude_evidence=["IEA"])
    for term in prop_full:
        assert set(prop_no[term]) < set(prop_full[term])
    # experimental evidence only: a subset of everything
    exp = gs.go_bp(["GO:0006915"], evidence=["EXP", "IDA", "IMP", "IPI", "IGI", "IEP"])
    assert set(exp["GO:0006915"]) < set(prop_full["GO:0006915"])
    with pytest.raises(ValueError, match="unknown GO evidence code"):
        gs.go_bp(evidence=["XYZ"])


def test_go_bp_term_selection_and_sizes(go_full):
    assert len(gs.go_bp(min_size=0)) == len(gs.go_term_names()) == 28_140
    assert all(len(g) >= 1 for g in go_full.values())
    assert list(go_full) == sorted(go_full)
    assert all(g == sorted(set(g)) for g in list(go_full.values())[:500])
    small = gs.go_bp(min_size=10, max_size=20)
    assert small and all(10 <= len(g) <= 20 for g in small.values())
    assert small == {t: g for t, g in go_full.items() if 10 <= len(g) <= 20}
    assert list(gs.go_bp("GO:0000002")) == ["GO:0000002"]
    with pytest.raises(ValueError, match="not GO biological-process terms"):
        gs.go_bp(["GO:0008150", "GO:9999999"])
    with pytest.raises(ValueError, match="terms must be"):
        gs.go_bp("all")
    with pytest.raises(ValueError, match="id_type"):
        gs.go_bp(id_type="uniprot")


def test_sena_terms():
    terms = gs.sena_terms()
    assert len(terms) == 1424 and terms == sorted(set(terms))
    sets = gs.go_bp(terms="sena", min_size=0)
    assert list(sets) == terms
    assert set(gs.go_bp(terms="sena")) <= set(terms)
    assert gs.as_gene_sets("go_bp_sena") == gs.go_bp(terms="sena")


def test_go_term_names():
    names = gs.go_term_names()
    assert names.index.name == "go_id" and names["GO:0008150"] == "biological_process"
    sub = gs.go_term_names(["GO:0000002", "GO:0000000"])
    assert sub.iloc[0] == "mitochondrial genome maintenance" and pd.isna(sub.iloc[1])


# --------------------------------------------------------------------------- readers and writers


def test_gmt_roundtrip(tmp_path):
    sets = {"GO:0000002": ["A", "B"], "custom set": ["C"], "empty": []}
    path = tmp_path / "sets.gmt"
    gs.write_gmt(sets, path, descriptions={"custom set": "my set"})
    assert gs.read_gmt(path) == sets
    lines = path.read_text().splitlines()
    assert lines[0] == "GO:0000002\tmitochondrial genome maintenance\tA\tB"
    assert lines[1] == "custom set\tmy set\tC"
    assert lines[2] == "empty\tNA"
    gz = tmp_path / "sets.gmt.gz"
    gs.write_gmt(sets, gz)
    assert gs.read_gmt(gz) == sets
    with gzip.open(gz, "rt") as fh:
        assert fh.readline().startswith("GO:0000002\t")
    go = gs.go_bp(["GO:0000002", "GO:0006915"])
    gs.write_gmt(go, path)
    assert gs.read_gmt(path) == go


def test_gmt_errors(tmp_path):
    bad = tmp_path / "bad.gmt"
    bad.write_text("lonely_name\n")
    with pytest.raises(ValueError, match="line 1"):
        gs.read_gmt(bad)
    bad.write_text("a\td\tX\na\td\tY\n")
    with pytest.raises(ValueError, match="occurs twice"):
        gs.read_gmt(bad)
    with pytest.raises(ValueError, match="tab or newline"):
        gs.write_gmt({"a": ["X\tY"]}, tmp_path / "x.gmt")


def test_dataframe_readers():
    df = pd.DataFrame(
        {
            "source": ["b", "a", "a", "a", "b", None],
            "target": ["X", "Z", "Y", "Z", "W", "Q"],
            "weight": 1.0,
        }
    )
    sets = gs.from_dataframe(df)
    assert sets == {"a": ["Y", "Z"], "b": ["W", "X"]}
    back = gs.to_dataframe(sets)
    assert list(back.columns) == ["source", "target"]
    assert back.values.tolist() == [["a", "Y"], ["a", "Z"], ["b", "W"], ["b", "X"]]
    assert gs.from_dataframe(back) == sets
    renamed = df.rename(columns={"source": "pathway", "target": "gene"})
    assert gs.from_dataframe(renamed, source="pathway", target="gene") == sets
    with pytest.raises(ValueError, match=r"column\(s\) \['source', 'target'\] not in the table"):
        gs.from_dataframe(renamed)
    assert gs.to_dataframe({}).shape == (0, 2)


def test_as_gene_sets_dispatch(tmp_path):
    sets = {"s1": ["B", "A", "A"], "s2": {"C"}}
    norm = {"s1": ["A", "B"], "s2": ["C"]}
    assert gs.as_gene_sets(sets) == norm
    path = tmp_path / "x.gmt"
    gs.write_gmt(norm, path)
    assert gs.as_gene_sets(path) == norm
    assert gs.as_gene_sets(str(path)) == norm
    assert gs.as_gene_sets(gs.to_dataframe(norm)) == norm
    assert gs.as_gene_sets("go_bp_sena", id_type="symbol") == gs.go_bp(
        terms="sena", id_type="symbol"
    )
    assert len(gs.as_gene_sets("go_bp")) == len(gs.go_bp())
    with pytest.raises(ValueError, match="preset"):
        gs.as_gene_sets("go_bp_everything")
    with pytest.raises(FileNotFoundError):
        gs.as_gene_sets(tmp_path / "missing.gmt")
    with pytest.raises(TypeError, match="cannot interpret an object of type int"):
        gs.as_gene_sets(42)
    with pytest.raises(TypeError, match=r"wrap a single gene in a list"):
        gs.as_gene_sets({"s": "TP53"})


# --------------------------------------------------------------------------- id mapping


def test_gene_id_table():
    table = gs.gene_id_table()
    assert list(table.columns) == ["entrez_id", "symbol", "ensembl_id"]
    row = table[table["symbol"] == "TP53"]
    assert row["entrez_id"].tolist() == ["7157"] and row["ensembl_id"].tolist() == [TP53_ENSEMBL]
    table.loc[:, "symbol"] = "changed"  # a copy: the cached table is unchanged
    assert (gs.gene_id_table()["symbol"] == "TP53").sum() == 1


def test_guess_id_type():
    assert gs.guess_id_type([TP53_ENSEMBL, "ENSG00000135679.3"]) == "ensembl"
    assert gs.guess_id_type(pd.Index(["TP53", "MDM2", "ENSG00000135679"])) == "symbol"
    assert gs.guess_id_type(["ENSMUSG00000059552"]) == "ensembl"
    with pytest.raises(ValueError, match="empty"):
        gs.guess_id_type([])


def test_map_gene_ids(caplog):
    with caplog.at_level(logging.INFO, logger="scsena"):
        res = gs.map_gene_ids(["TP53", "MDM2", "NOT_A_GENE"], to="ensembl")
    assert "mapped 2 of 3 genes (66.7%)" in caplog.text
    assert (res.n_mapped, res.n_total, res.unmapped) == (2, 3, ["NOT_A_GENE"])
    assert res.mapping["TP53"] == TP53_ENSEMBL and res.mapping["MDM2"] == "ENSG00000135679"
    assert pd.isna(res.mapping["NOT_A_GENE"])
    assert list(res.mapping.index) == ["TP53", "MDM2", "NOT_A_GENE"]
    assert "mapped 2 of 3 genes (66.7%)" in repr(res) and res.summary() in repr(res)
    back = gs.map_gene_ids([TP53_ENSEMBL, "ENSG00000135679.12", "ENSG00000000000"], to="symbol")
    assert back.mapping.tolist()[:2] == ["TP53", "MDM2"] and back.n_mapped == 2
    # ids already of the target type pass through (Ensembl versions stripped)
    same = gs.map_gene_ids(["ENSG00000141510.17"], to="ensembl")
    assert same.mapping.tolist() == [TP53_ENSEMBL]
    with pytest.raises(ValueError, match="to must be one of"):
        gs.map_gene_ids(["TP53"], to="entrez")


def test_map_gene_ids_one_to_many_is_deterministic():
    table = gs.gene_id_table().dropna()
    multi = table[table.duplicated("entrez_id", keep=False)]
    symbols = multi["symbol"].unique()[:20].tolist()
    first = gs.map_gene_ids(symbols, to="ensembl").mapping
    assert first.notna().all()
    assert first.equals(gs.map_gene_ids(symbols[::-1], to="ensembl").mapping[symbols])
    for sym, ens in first.items():
        assert ens in set(table.loc[table["symbol"] == sym, "ensembl_id"])


def test_map_gene_sets_roundtrip(caplog):
    sets = gs.go_bp(["GO:0000002", "GO:0006915"], id_type="symbol")
    with caplog.at_level(logging.INFO, logger="scsena"):
        ens = gs.map_gene_sets({**sets, "extra": ["NOT_A_GENE"]}, to="ensembl")
    assert "distinct member genes" in caplog.text
    assert ens["extra"] == []
    assert TP53_ENSEMBL in ens["GO:0006915"]
    # mapped sets work with Ensembl var_names
    direct = gs.go_bp(["GO:0000002"])["GO:0000002"]
    assert set(ens["GO:0000002"]) <= set(direct)
    mask = gs.build_mask(direct, ens, min_genes=1)
    assert "GO:0000002" in mask.terms


# --------------------------------------------------------------------------- aliases

OUTDATED = ["MARCH8", "DARS", "SEPT2", "TP53", "NOT_A_GENE"]


def test_map_gene_ids_aliases_and_report(caplog):
    with caplog.at_level(logging.INFO, logger="scsena"):
        res = gs.map_gene_ids(OUTDATED, to="symbol")
    report = res.report()
    assert report["status"].tolist() == ["alias", "alias", "ambiguous", "direct", "unmapped"]
    assert res.aliased == {"MARCH8": "MARCHF8", "DARS": "DARS1"}
    # an alias of several genes is never mapped, and it is named with its candidates
    assert pd.isna(res.mapping["SEPT2"]) and res.ambiguous == {"SEPT2": ["SEPTIN2", "SEPTIN6"]}
    assert report.loc["SEPT2", "candidates"] == "SEPTIN2, SEPTIN6"
    assert res.counts() == {"direct": 1, "alias": 2, "ambiguous": 1, "unmapped": 1}
    assert "2 through an alias (MARCH8 -> MARCHF8" in caplog.text
    assert "1 ambiguous, not mapped (SEPT2: SEPTIN2 or SEPTIN6)" in caplog.text
    ens = gs.map_gene_ids(OUTDATED, to="ensembl")
    assert ens.mapping["MARCH8"] == gs.map_gene_ids(["MARCHF8"]).mapping["MARCHF8"]
    assert pd.isna(ens.mapping["SEPT2"]) and ens.n_mapped == 3
    assert gs.map_gene_ids(OUTDATED, to="symbol", aliases=False).n_mapped == 1
    table = gs.gene_alias_table()
    assert set(table.loc[table["alias"] == "SEPT2", "symbol"]) == {"SEPTIN2", "SEPTIN6"}


def test_gene_id_mapping_attributes_and_report():
    genes = ["TP53", "MARCH8", "SEPT2", "NOT_A_GENE"]  # direct, alias, ambiguous, unknown
    res = gs.map_gene_ids(genes, to="ensembl")
    assert isinstance(res, gs.GeneIdMapping)
    march8 = gs.map_gene_ids(["MARCHF8"]).mapping["MARCHF8"]
    assert (res.n_mapped, res.n_total, res.fraction_mapped, res.to) == (2, 4, 0.5, "ensembl")
    assert res.unmapped == ["SEPT2", "NOT_A_GENE"]  # the ambiguous alias is not mapped
    assert res.status.tolist() == ["direct", "alias", "ambiguous", "unmapped"]
    assert res.counts() == {"direct": 1, "alias": 1, "ambiguous": 1, "unmapped": 1}
    assert res.aliased == {"MARCH8": march8}
    assert res.ambiguous == res.candidates == {"SEPT2": ["SEPTIN2", "SEPTIN6"]}
    assert res.to_dict() == {"TP53": TP53_ENSEMBL, "MARCH8": march8}
    report = res.report()
    assert list(report.columns) == ["status", "mapped", "candidates"]
    assert report.index.tolist() == genes and report.index.name == "input"
    assert report["status"].tolist() == res.status.tolist()
    assert report["mapped"].tolist()[:2] == [TP53_ENSEMBL, march8]
    assert report["mapped"].isna().tolist() == [False, False, True, True]
    assert report["candidates"].tolist() == ["", "", "SEPTIN2, SEPTIN6", ""]
    assert res.summary() == (
        f"mapped 2 of 4 genes (50.0%) to ensembl: 1 directly, 1 through an alias "
        f"(MARCH8 -> {march8}); 1 ambiguous, not mapped (SEPT2: SEPTIN2 or SEPTIN6); 1 unknown"
    )
    assert repr(res) == f"GeneIdMapping({res.summary()})"


def test_gene_id_mapping_without_status_derives_it_from_the_mapping():
    mapping = pd.Series(["ENSG1", np.nan], index=["a", "b"], dtype=object)
    res = gs.GeneIdMapping(mapping=mapping, n_mapped=1, n_total=2, unmapped=["b"])
    assert res.status.tolist() == ["direct", "unmapped"] and res.to == "ensembl"
    assert res.counts() == {"direct": 1, "alias": 0, "ambiguous": 0, "unmapped": 1}
    assert res.report()["candidates"].tolist() == ["", ""] and res.ambiguous == {}
    empty = gs.GeneIdMapping(mapping=pd.Series([], dtype=object), n_mapped=0, n_total=0)
    assert empty.fraction_mapped == 0.0 and empty.report().empty


def test_mask_on_symbol_var_names_uses_aliases():
    var = ["MARCH8", "DARS", "SEPT2", "SEPTIN6", "TP53", "NOT_A_GENE"]
    sets = gs.go_bp(id_type="symbol")
    told = r"2 var_name\(s\) are previous.*MARCH8 -> MARCHF8.*1 ambiguous.*SEPT2"
    with pytest.warns(UserWarning, match=told):
        mask = gs.build_mask(var, "go_bp", min_genes=1)
    rows = dict(zip(var, np.asarray(mask.membership.sum(axis=1)).ravel()))
    march = {t for t, g in sets.items() if "MARCHF8" in g}
    assert rows["MARCH8"] == len(march) > 0
    assert rows["DARS"] == sum("DARS1" in g for g in sets.values()) > 0
    assert rows["SEPT2"] == 0 and rows["SEPTIN6"] > 0  # ambiguous alias: in no term
    assert mask.gene_ids.status["SEPT2"] == "ambiguous"
    assert mask.gene_ids.aliased == {"MARCH8": "MARCHF8", "DARS": "DARS1"}
    # aliases=False: the old symbols match nothing
    plain = gs.build_mask(var, "go_bp", min_genes=1, aliases=False)
    assert np.asarray(plain.membership.sum(axis=1)).ravel()[:2].tolist() == [0, 0]


def test_alias_whose_gene_is_already_a_var_name_is_not_mapped():
    sets = {"t": ["DARS1", "TP53"], "u": ["MARCH8", "TP53"]}  # a set listing the old name
    with pytest.warns(UserWarning, match=r"ambiguous.*DARS: DARS1"):
        mask = gs.build_mask(["DARS", "DARS1", "TP53", "MARCH8"], sets, min_genes=1)
    assert mask.membership.toarray()[:, 0].tolist() == [0, 1, 1, 0]  # DARS1 counted once
    assert mask.membership.toarray()[:, 1].tolist() == [0, 0, 1, 1]  # MARCH8 as listed
    assert mask.gene_ids.status.tolist() == ["ambiguous", "direct", "direct", "direct"]


# --------------------------------------------------------------------------- small panels

PANEL = ["IFNGR1", "IFNGR2", "JAK1", "JAK2", "STAT1", "IRF1", "TP53", "MDM2"]


def test_small_panel_error_names_go_bp():
    n_full = gs.build_mask(PANEL, "go_bp", min_genes=5).n_terms
    first = rf'full GO BP collection keeps {n_full} terms here: pass gene_sets="go_bp".*min_genes'
    with pytest.raises(ValueError, match=first):
        gs.build_mask(PANEL, "go_bp_sena", min_genes=5)
    with pytest.raises(ValueError, match=r"largest with 3 gene.*go_bp.*lower min_genes"):
        gs.build_mask(VAR, SETS, min_genes=4)


def test_dropped_terms_table_and_keep_terms(caplog):
    ifng = "GO:0060333"  # interferon-gamma-mediated signaling pathway
    table = gs.dropped_terms(PANEL, "go_bp", min_genes=8)
    assert list(table.columns) == ["term", "name", "size"]
    assert ifng in set(table["term"])
    assert (table["size"].between(1, 7)).all() and table["size"].is_monotonic_decreasing
    row = table.set_index("term").loc[ifng]
    assert row["name"] == "interferon-gamma-mediated signaling pathway"
    with caplog.at_level(logging.INFO, logger="scsena"):
        mask = gs.build_mask(PANEL, "go_bp", min_genes=8, keep_terms=[ifng])
    assert f"{len(table) - 1:,} more have 1 to 7 member" in caplog.text
    assert "dropped_terms" in caplog.text and "keep_terms" in caplog.text
    assert gs.GeneSetMask.from_uns(mask.to_uns()).n_dropped == len(table) - 1
    assert ifng in mask.terms and ifng not in set(mask.dropped_terms["term"])
    assert int(mask.sizes[mask.terms.index(ifng)]) == row["size"]
    assert len(mask.dropped_terms) == len(table) - 1 and "n_dropped" in repr(mask)
    with pytest.raises(ValueError, match="not in the gene sets"):
        gs.build_mask(PANEL, "go_bp", min_genes=8, keep_terms=["GO:none"])
    with pytest.raises(ValueError, match="without any member gene"):
        gs.build_mask(PANEL, {"a": PANEL, "b": ["x"]}, min_genes=8, keep_terms=["b"])
