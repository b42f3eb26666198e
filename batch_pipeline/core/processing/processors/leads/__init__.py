"""The ``leads`` processor (seed 003, Easy CRM): leads standardized by rules (``rules``) or an
LLM (``llm``), de-duplicated by e-mail in the keyed stage and upserted into a lead store."""
