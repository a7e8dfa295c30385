"""Cache settings: one validated value object, with the freshness rule for TTLs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragstore.errors import InvalidConfig

DAY_S = 86_400.0
DEFAULT_THRESHOLD = 0.45
"""Cosine floor of the semantic level: below it the judge (:mod:`ragstore.cache.judge`)
is not asked. Chosen by ``benchmarks/cache.py --fit`` on the train split of the labelled
pairs: the highest floor (0.05 grid) that costs the judge no paraphrase it accepts there;
the judge, not the floor, keeps near-misses out. Cosine alone cannot be the test:
one-word near-misses such as "to"/"from" or "under 50"/"over 50" score up to 0.99 with
all-MiniLM-L6-v2, above most paraphrases."""


class TtlRule(BaseModel):
    """How long an entry lives, from the age of the youngest document it cites.

    Youngest cited source younger than a day: ``fresh_s`` * (age in days + 1); younger
    than ``week_days``: ``week_s``; younger than ``month_days``: ``month_s``; older:
    ``old_s``. An answer citing nothing lives ``empty_s``. Never longer than ``max_s``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fresh_s: float = Field(default=300.0, gt=0)
    week_days: float = Field(default=7.0, gt=1)
    week_s: float = Field(default=3_600.0, gt=0)
    month_days: float = Field(default=30.0, gt=1)
    month_s: float = Field(default=43_200.0, gt=0)
    old_s: float = Field(default=86_400.0, gt=0)
    empty_s: float = Field(default=300.0, gt=0)
    max_s: float = Field(default=86_400.0, gt=0)

    def seconds(self, youngest_age_s: float | None) -> float:
        """TTL of an entry whose youngest cited source is ``youngest_age_s`` old."""
        return min(self._by_age(youngest_age_s), self.max_s)

    def _by_age(self, age_s: float | None) -> float:
        if age_s is None:
            return self.empty_s
        days = max(age_s, 0.0) / DAY_S
        if days < 1:
            return self.fresh_s * (days + 1)
        if days < self.week_days:
            return self.week_s
        if days < self.month_days:
            return self.month_s
        return self.old_s


class CacheSettings(BaseModel):
    """How the query cache behaves.

    ``semantic`` turns the second level on (dense and hybrid searches only): a query
    reuses the answer of the earlier query under the same key whose embedding is
    nearest, when their cosine is ``>= threshold`` and, with ``judge`` (the default),
    :func:`ragstore.cache.judge.default_judge` accepts the pair: it refuses questions
    that differ in a negation, a number, an opposite word or the order of their words,
    and weighs the content words they do not share. ``judge=False`` leaves cosine alone
    to decide; then only a threshold near 1 is safe (see ``docs/cache.md``).
    ``max_entries`` and ``max_bytes`` bound the cache, least recently used first out.
    With ``strict``, any document write to a collection (an insert too) retires every
    entry computed before it; otherwise only the entries citing an updated or deleted
    document are retired and new documents reach cached queries when their TTL ends.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    semantic: bool = True
    threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0, le=1)
    judge: bool = True
    max_entries: int = Field(default=10_000, ge=1)
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    ttl: TtlRule = TtlRule()
    strict: bool = False

    @classmethod
    def parse(cls, data: object) -> CacheSettings:
        """Validate a plain dict, raising :class:`InvalidConfig` naming the bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or None
            message = f"invalid cache settings: {field}: {first['msg']}"
            raise InvalidConfig(message, field=field) from None
