"""The ranking rule: an ordered list of keys, each a fixed SQL ordering (never user SQL).

Default: valid first (then invalid, then unscored), then aesthetic mean, highest first. Ties are
always broken by team, then name, then folder, so the order is total and repeatable.

Keys:
- valid: valid, then invalid, then unscored
- aesthetic: aesthetic mean, highest first (missing last)
- consistency: CLIP-I story consistency, highest first (missing last)
- alignment: CLIP-T prompt alignment, highest first (missing last)
- reproducible: exact, then reproducible, then anything else
- verified: rows whose numbers the judges re-scored before rows with claimed numbers
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError

_ORDER = {
    "valid": "CASE status WHEN 'valid' THEN 0 WHEN 'invalid' THEN 1 ELSE 2 END",
    "aesthetic": "aesthetic IS NULL, aesthetic DESC",
    "consistency": "consistency IS NULL, consistency DESC",
    "alignment": "alignment IS NULL, alignment DESC",
    "reproducible": "CASE reproducibility WHEN 'exact' THEN 0 WHEN 'reproducible' THEN 1 ELSE 2 END",
    "verified": "CASE source WHEN 'judges' THEN 0 ELSE 1 END",
}
KEYS = tuple(_ORDER)
DEFAULT = ("valid", "aesthetic")
_TIE_BREAK = "team, name, path"


@dataclass(frozen=True)
class Ranking:
    keys: tuple[str, ...] = DEFAULT

    def __post_init__(self):
        if not self.keys:
            raise HarnessError("ranking: give at least one key")
        bad = [k for k in self.keys if k not in _ORDER]
        if bad:
            raise HarnessError(f"ranking: unknown key {bad[0]!r}; use some of {', '.join(KEYS)}")
        if len(set(self.keys)) != len(self.keys):
            raise HarnessError("ranking: a key is given twice")

    @classmethod
    def parse(cls, spec: str | None) -> Ranking:
        """'valid,aesthetic,consistency' -> Ranking; None or '' -> the default."""
        if not spec:
            return cls()
        return cls(tuple(k.strip() for k in spec.split(",") if k.strip()))

    @property
    def sql(self) -> str:
        return ", ".join([*(_ORDER[k] for k in self.keys), _TIE_BREAK])

    def describe(self) -> str:
        return "ranked by " + ", then ".join(self.keys) + " (ties: team, name)"


DEFAULT_RANKING = Ranking()
