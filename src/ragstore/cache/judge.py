"""Whether an earlier query's answer may serve a new one: a lexical judge beside cosine.

MiniLM cosine cannot tell a paraphrase from a near-miss that changes one word ("transfer
money to / from my account" scores higher than most real paraphrases), so the semantic
levels of the caches ask a :class:`Judge` after the cosine nearest lookup. It works on the
two texts alone, in microseconds:

1. **Guards** refuse outright when the questions differ in a negation ("not", "without",
   "n't", "un-" / "non-" against the bare word), a number (digits, number words,
   ordinals), an opposite ("to" / "from", "before" / "after", "increase" / "decrease",
   "upload" / "download": a word list plus opposite prefixes on a shared stem), a cause
   ("why" on one side only), or the order of the same content words ("from London to
   Paris" / "from Paris to London").
2. The same content words and question words on both sides: accepted.
3. Otherwise a **logistic model** over the cosine and the content words each side does
   not share gives the probability that the two share an answer. A one-for-one swap of content words
   with the rest in common ("symptoms of the flu" / "of a cold") is the near-miss that
   cosine misses; a rewording that shares few words yet scores a high cosine is a
   paraphrase. Its coefficients were fitted on the train split of
   ``benchmarks/data/cache_pairs.jsonl`` by ``benchmarks/cache.py --fit`` and its threshold
   chosen there; the held-out pairs measure it (``docs/cache.md``).

Texts are compared case-folded (see :func:`ragstore.cache.keys.normalize`), so proper
names are recognised as words the other side lacks, not by their capitals.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from ragstore.cache.keys import normalize

__all__ = ["MODEL", "SAME_WORDS", "Judge", "Verdict", "default_judge"]

SAME_WORDS = "same words"
MODEL = "model"

WEIGHTS = {
    "bias": -3.724,
    "cosine": 7.9563,
    "shared": -0.986,
    "unshared": 0.3478,
    "one_for_one": -2.3265,
}
"""Logistic coefficients over :meth:`Judge.features` (``benchmarks/cache.py --fit``)."""
MAX_UNSHARED = 6
"""Unshared content words counted: beyond a few, more says nothing more."""
MIN_PROBABILITY = 0.88
"""Probability from which a pair is accepted, chosen on the train split."""


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_WORD = re.compile(r"[^\W_]+(?:[.'][^\W_]+)*")
_STOP = _words(
    """a an the i me my mine you your yours we our us it its they their them he she his her
    this that these those is are was were be been being am do does did doing done have has
    had can could will would shall should may might must how what which who whom whose
    when where why there here of for in on at by with about as and or but if then so than
    too very just any some all each every please to from into onto i'm i've it's what's
    there's get getting got way ways best steps step process tips explain want need know
    tell find someone something possible allowed able much many"""
)
"""Function words and the framing of a question ("what is the process for ...")."""
_DETERMINERS = _words("a an the my your our their his her its this that some any")
"""Left out of a question's frame: "from the server" and "from my server" say the same."""
_RELATIONS = _words(
    "to from into onto out of for by with in on at over under before after than vs versus between"
)
"""Words that give the content word after them a role ("from London", "to Paris")."""
_CAUSAL = _words("why reason reasons cause causes caused")
"""Words that ask for a cause: "why is it slow?" and "how do I make it fast?" differ."""
_QUESTION_WORDS = _words("how what where when why which who whom whose")
_NEGATIONS = _words("not no never without non nor cannot none nothing neither")
_NEGATING_PREFIXES = ("un", "non", "dis")
_NUMBER_WORDS = (
    "zero _ two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    " fifteen sixteen seventeen eighteen nineteen twenty"
)
_NUMBERS: dict[str, float] = {
    word: index for index, word in enumerate(_NUMBER_WORDS.split(" ")) if word != "_"
}
"""Number words ("one" is left out: "a new one" is no number)."""
_NUMBERS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80})
_NUMBERS.update({"ninety": 90, "hundred": 100, "thousand": 1000, "million": 10**6})
_NUMBERS.update({"twice": 2, "double": 2, "dozen": 12, "half": 0.5})
_ORDINALS = "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth"
_NUMBERS.update({word: index + 1 for index, word in enumerate(_ORDINALS.split(" "))})
_OPPOSITES = """
to:from into:from to:out into:out in:out inside:outside within:outside to:outside
inbound:outbound incoming:outgoing import:export upload:download up:down on:off
over:under above:below more:less more:fewer most:least before:after early:late
earlier:later earliest:latest first:last start:end start:stop begin:end open:close
opening:closing enable:disable allow:block allow:deny accept:reject accept:decline
approve:deny approve:reject approved:denied add:remove add:delete add:drop
include:exclude increase:decrease increase:reduce raise:lower rise:fall gain:lose
win:lose buy:sell buy:rent lend:borrow deposit:withdraw credit:debit send:receive
push:pull hire:fire join:leave install:uninstall subscribe:unsubscribe connect:disconnect
lock:unlock encrypt:decrypt mount:unmount public:private max:min maximum:minimum
high:low higher:lower highest:lowest hot:cold warm:cool heat:cool fast:slow
faster:slower cheap:expensive long:short longest:shortest large:small largest:smallest
big:small biggest:smallest old:new oldest:newest young:old heavy:light light:dark
wired:wireless mandatory:optional required:optional paid:free safe:dangerous
legal:illegal valid:invalid possible:impossible correct:incorrect active:inactive
complete:incomplete secure:insecure visible:invisible regular:irregular pros:cons
advantages:disadvantages junior:senior
upgrade:downgrade merge:split freeze:thaw arrival:departure arrive:depart
arrivals:departures sunrise:sunset north:south east:west left:right day:night
morning:evening weekday:weekend internal:external domestic:international local:remote
online:offline client:server input:output read:write sender:recipient buyer:seller
landlord:tenant employer:employee parent:child profit:loss income:expense yes:no
true:false success:failure pass:fail passed:failed male:female men:women man:woman
mother:father mothers:fathers boy:girl full:empty positive:negative plus:minus wet:dry
sun:shade
"""
_OPPOSITE_PREFIXES = (
    ("in", "out"),
    ("in", "de"),
    ("in", "ex"),
    ("im", "ex"),
    ("en", "de"),
    ("en", "dis"),
    ("up", "down"),
    ("on", "off"),
    ("over", "under"),
    ("max", "min"),
    ("pre", "post"),
    ("inter", "intra"),
)
"""Prefixes that turn a shared stem into its opposite ("in-crease" / "de-crease")."""
_SYNONYMS = """
change:update:modify:edit cancel:terminate delete:erase price:cost purchase:buy
create:generate make:create begin:start big:large obtain:get receive:get
repo:repository site:website vehicle:car physician:doctor mobile:phone cellphone:phone
flat:apartment kid:child kids:children couch:sofa e-mail:email television:tv
photo:picture photos:pictures movie:film shop:store quit:resign
"""
"""Common equivalents, folded to the last word of each group before comparing."""


def _stem(word: str) -> str:
    """A light suffix stripper: enough to match "returning" with "return"."""
    word = word.replace("'s", "")
    for suffix, min_length in (("ies", 5), ("ing", 6), ("ed", 5), ("es", 5), ("s", 4)):
        if word.endswith(suffix) and len(word) >= min_length and not word.endswith("ss"):
            word = word[: -len(suffix)] + ("y" if suffix == "ies" else "")
            if suffix in ("ing", "ed") and len(word) > 3 and word[-1] == word[-2]:
                word = word[:-1]  # shipping -> ship
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def _pairs(text: str) -> dict[str, set[str]]:
    """``a:b`` pairs as a symmetric relation over stems."""
    out: dict[str, set[str]] = {}
    for pair in text.split():
        left, right = (_stem(word) for word in pair.split(":"))
        out.setdefault(left, set()).add(right)
        out.setdefault(right, set()).add(left)
    return out


def _canonical(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for group in text.split():
        stems = [_stem(word) for word in group.split(":")]
        out.update({stem: stems[-1] for stem in stems[:-1]})
    return out


_OPPOSITE = _pairs(_OPPOSITES)
_CAUSAL_STEMS = frozenset(_stem(word) for word in _CAUSAL)
_CANONICAL = _canonical(_SYNONYMS)


@dataclass(frozen=True, slots=True)
class _Text:
    """What the judge reads of one query."""

    words: frozenset[str]
    content: tuple[str, ...]
    frame: tuple[str, ...]
    roles: frozenset[tuple[str, str]]
    """(content word, the relation word last before it): ("paris", "to")."""
    asks: frozenset[str]
    """Its question words ("how", "where", ...)."""
    negations: int
    numbers: tuple[float, ...]


@functools.lru_cache(maxsize=4096)
def _read(text: str) -> _Text:
    words: list[str] = []
    content: list[str] = []
    frame: list[str] = []
    roles: list[tuple[str, str]] = []
    negations = 0
    numbers: list[float] = []
    asks: list[str] = []
    role = ""
    for raw in _WORD.findall(normalize(text).replace("-", " ")):
        if raw in _NEGATIONS or raw.endswith("n't"):
            negations += 1
            continue
        number = _number(raw)
        if number is not None:
            numbers.extend(number)
            continue
        stem = _stem(raw)
        words.append(stem)
        if raw in _RELATIONS:
            role = raw
        if raw in _QUESTION_WORDS:
            asks.append(raw)
        if raw in _STOP:
            if raw not in _DETERMINERS:
                frame.append(stem)
            continue
        word = _CANONICAL.get(stem, stem)
        content.append(word)
        roles.append((word, role))
        frame.append("*")
    return _Text(
        words=frozenset(words),
        content=tuple(content),
        frame=tuple(frame),
        roles=frozenset(roles),
        asks=frozenset(asks),
        negations=negations,
        numbers=tuple(sorted(numbers)),
    )


def _number(word: str) -> list[float] | None:
    """The numbers a word states ("14", "3.12", "5g", "twenty"), or ``None``."""
    if word in _NUMBERS:
        return [float(_NUMBERS[word])]
    digits = re.findall(r"\d+(?:\.\d+)?", word)
    return [float(d) for d in digits] if digits else None


@dataclass(frozen=True, slots=True)
class Verdict:
    """A judge's answer for one pair: ``accepted``, and why: ``reason`` is the guard that
    refused it (``"negation"``, ``"number"``, ``"cause"``, ``"opposite"``, ``"order"``),
    ``"same words"`` (the same content and question words: accepted) or ``"model"``
    (``probability`` decided; it is 0 or 1 for the other reasons)."""

    accepted: bool
    reason: str
    probability: float


class Judge:
    """Decides whether a cached query's answer may serve a new query.

    ``min_probability`` is the model's acceptance threshold; ``weights`` its logistic
    coefficients by feature name (see :meth:`features`), ``bias`` included.
    """

    def __init__(
        self,
        *,
        min_probability: float = MIN_PROBABILITY,
        weights: dict[str, float] | None = None,
    ) -> None:
        self.min_probability = min_probability
        self.weights = dict(WEIGHTS if weights is None else weights)

    def accepts(self, query: str, cached: str, cosine: float) -> bool:
        """Whether the answer to ``cached`` may serve ``query`` (their cosine given)."""
        return self.verdict(query, cached, cosine).accepted

    def verdict(self, query: str, cached: str, cosine: float) -> Verdict:
        """:meth:`accepts` with its reasons."""
        first, second = _read(query), _read(cached)
        guard = refusal(first, second)
        if guard is not None:
            return Verdict(False, guard, 0.0)
        if set(first.content) == set(second.content) and first.asks == second.asks:
            return Verdict(True, SAME_WORDS, 1.0)
        probability = self.probability(_features(first, second, cosine))
        return Verdict(probability >= self.min_probability, MODEL, probability)

    def probability(self, features: dict[str, float]) -> float:
        """The model's probability that a pair with these features shares an answer."""
        score = self.weights["bias"] + sum(
            self.weights[name] * value for name, value in features.items()
        )
        return 1.0 / (1.0 + math.exp(-score))

    @staticmethod
    def features(query: str, cached: str, cosine: float) -> dict[str, float]:
        """The model's inputs for a pair (asked only when no guard refuses it and the
        content words differ)."""
        return _features(_read(query), _read(cached), cosine)


def refusal(first: _Text, second: _Text) -> str | None:
    """``"negation"``, ``"number"``, ``"cause"``, ``"opposite"`` or ``"order"`` when that guard
    refuses the pair, else ``None``."""
    if first.negations != second.negations or _negated(first, second):
        return "negation"
    if first.numbers != second.numbers:
        return "number"
    if bool(first.words & _CAUSAL_STEMS) != bool(second.words & _CAUSAL_STEMS):
        return "cause"
    if _opposed(first.words - second.words, second.words - first.words):
        return "opposite"
    if _reordered(first, second):
        return "order"
    return None


def _negated(first: _Text, second: _Text) -> bool:
    """One side says "unpaid", "illegal", "non-..." where the other says the bare word."""
    for words, other in ((first.words, second.words), (second.words, first.words)):
        for word in words - other:
            for prefix in _NEGATING_PREFIXES:
                rest = word[len(prefix) :]
                if word.startswith(prefix) and len(rest) >= 3 and rest in other - words:
                    return True
    return False


def _opposed(only_first: frozenset[str], only_second: frozenset[str]) -> bool:
    for word in only_first:
        if _OPPOSITE.get(word, set()) & only_second:
            return True
        for a, b in _OPPOSITE_PREFIXES:
            for mine, theirs in ((a, b), (b, a)):
                rest = word[len(mine) :]
                if word.startswith(mine) and len(rest) >= 3 and theirs + rest in only_second:
                    return True
    return False


def _reordered(first: _Text, second: _Text) -> bool:
    """The same content words in another order: in the same frame ("the tenant pays the
    landlord"), or with the same relation words given to other words ("from London to
    Paris")."""
    if first.content == second.content or sorted(first.content) != sorted(second.content):
        return False
    if first.frame == second.frame:
        return True
    relations = {role for _, role in first.roles}
    return relations == {role for _, role in second.roles} and first.roles != second.roles


def _features(first: _Text, second: _Text, cosine: float) -> dict[str, float]:
    mine, theirs = set(first.content), set(second.content)
    only_first, only_second = len(mine - theirs), len(theirs - mine)
    return {
        "cosine": cosine,
        "shared": float(len(mine & theirs)),
        "unshared": float(min(only_first + only_second, MAX_UNSHARED)),
        "one_for_one": float(only_first == only_second == 1),
    }


@functools.cache
def default_judge() -> Judge:
    """The judge the caches use unless given another (one shared instance)."""
    return Judge()
