"""Running recipes: parsing and checking the YAML (``recipes``), the plan of a recipe's stages with
their fingerprints and running it (``plan``), the report (``report``)."""
