"""Quality evaluation: served NDCG, recall and AUC per dataset (`quality`), the graded
queries of the marketplace catalog (`graded_queries`, `data/`) and the synonyms' effect
(`synonyms_quality`)."""
