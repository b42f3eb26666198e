"""``validate``: check records against a declared schema; keep the good, reject the bad.

Options (JSON or YAML shape)::

    {"columns": {
        "id":         {"type": "int64", "required": true, "min": 1},
        "email":      {"type": "string", "required": true, "pattern": "^[^@ ]+@[^@ ]+\\\\.[^@ ]+$"},
        "amount":     {"type": "float64", "min": 0, "max": 100000},
        "status":     {"type": "string", "allowed": ["new", "active", "closed"]},
        "created_at": {"type": "timestamp"}},
     "extra_columns": "keep"}

Types: string, int64, float64, bool, timestamp (ISO 8601, or ``format``; naive times are UTC),
date. Valid records come out with the declared types. A record is rejected when any rule fails;
its reason lists every failed rule (``email: required value missing; amount: below minimum 0``).
Reasons name the rule, not the value, so that counting reasons groups like with like. Patterns
are RE2 regular expressions searched in the value: anchor them with ^ and $ for a full match.
All checks are vectorized with pyarrow.compute (timestamps are parsed by pandas).

Text is trimmed before it is converted; empty text, null and NaN count as missing. A float64
value must be finite: text that overflows (``1e400``) and infinities in typed columns (JSON's
``1e400`` is read as one) are not valid, as the text ``inf`` and ``nan`` are not. int64
accepts an optional sign and any value in the int64 range; bool accepts true/false, t/f,
yes/no, y/n, 1/0 (any case). Pattern and length rules apply to the stored text of string
columns and to the trimmed text of the others.

Modules: ``rules`` (the declared schema: ``ColumnRule``, ``ValidateOptions``), ``conversion``
(each column converted to its declared type, vectorized), ``checks`` (the rules checked on the
converted columns, and the reasons) and ``processor`` (the ``Validate`` processor).
"""

from batch_pipeline.core.processing.processors.validate.processor import Validate
from batch_pipeline.core.processing.processors.validate.rules import ColumnRule, ValidateOptions

__all__ = ["ColumnRule", "Validate", "ValidateOptions"]
