"""Quality evaluation: served NDCG, recall and AUC per dataset (`quality`) and the synonyms'
effect (`synonyms_quality`). The datasets, the marketplace catalog's graded queries included,
come from `builders.data`."""
