"""Gene-set collections and the gene x gene-set mask of SENA's pathway layer.

The bundled collection is human GO biological process (GO release 2022-07-01, annotations
of Bioconductor's ``org.Hs.eg.db`` 3.16), with SENA's 1,424-term subset. Any other
collection can come from a GMT file, a long table (decoupler layout) or a dict.

Examples
--------
>>> from scsena import gene_sets as gs
>>> sets = gs.go_bp(terms="sena")  # GO id -> Ensembl gene ids, propagated to ancestors
>>> mask = gs.build_mask(adata.var_names, sets, min_genes=5)  # doctest: +SKIP
>>> ids = gs.map_gene_ids(["MARCH8", "SEPT2"], to="symbol")  # outdated symbols
>>> ids.aliased, ids.ambiguous
({'MARCH8': 'MARCHF8'}, {'SEPT2': ['SEPTIN2', 'SEPTIN6']})
"""

from ._go import EVIDENCE_CODES, RELATIONSHIPS, go_bp, go_term_names, sena_terms
from ._idmap import (
    GeneIdMapping,
    gene_alias_table,
    gene_id_table,
    guess_id_type,
    map_gene_ids,
    map_gene_sets,
)
from ._io import from_dataframe, read_gmt, to_dataframe, write_gmt
from ._mask import GeneSetMask, build_mask, dropped_terms
from ._resolve import as_gene_sets

__all__ = [
    "EVIDENCE_CODES",
    "RELATIONSHIPS",
    "GeneIdMapping",
    "GeneSetMask",
    "as_gene_sets",
    "build_mask",
    "dropped_terms",
    "from_dataframe",
    "gene_alias_table",
    "gene_id_table",
    "go_bp",
    "go_term_names",
    "guess_id_type",
    "map_gene_ids",
    "map_gene_sets",
    "read_gmt",
    "sena_terms",
    "to_dataframe",
    "write_gmt",
]
