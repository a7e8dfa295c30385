"""What a language model is shown, and how its answer is tied back to the passages.

:func:`pack` fits the best hits into a token budget as numbered passages, :func:`prompt`
turns them and the question into chat messages, and :func:`cite` maps the ``[n]``
markers of the model's answer back to the chunks they name.

Packing takes hits best first and keeps a hit unless it repeats one already packed:

- the same chunk again is dropped;
- a chunk whose text, lower-cased with punctuation and runs of whitespace folded, equals
  or is contained in a packed passage's (or contains it) is dropped: the better-ranked
  one already says it;
- a chunk overlapping a packed passage of the same document (neighbouring chunks share
  a few tokens) is merged into it: one passage covering both spans, so the shared text
  is shown once and the model reads it in order. The merged passage keeps the place,
  chunk id and scores of the better-ranked chunk; its ``start``/``end`` cover both.

Each passage costs the tokens of its formatted block (marker, title/source line, text)
against the budget; a hit whose passage does not fit is skipped, and a smaller one
after it may still fit. The blank lines between blocks, the instructions and the
question are not counted: the budget is for the passages alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ragstore.answer.types import Citation
from ragstore.errors import InvalidInput
from ragstore.types import Hit

PROMPT_VERSION = "1"
"""Version of the prompt text; part of the answer cache key, so it changes with it."""

SYSTEM_PROMPT = (
    "Answer the question using only the numbered passages. After each sentence, cite the "
    "passages that support it as [n], for example [1] or [1][3]. If the passages do not "
    "contain the answer, say that the documents do not contain it. Be concise."
)


@dataclass(frozen=True, slots=True)
class Passage:
    """A hit as the model sees it: ``[marker]`` names it in the prompt and the answer."""

    marker: int
    hit: Hit


def title_of(hit: Hit) -> str | None:
    """A hit's document title: its metadata ``title``, else its source's file name."""
    title = hit.metadata.get("title")
    if isinstance(title, str) and title.strip():
        return title.strip()
    if hit.source:
        return re.split(r"[/\\]", hit.source.rstrip("/\\"))[-1] or None
    return None


def format_passage(marker: int, hit: Hit) -> str:
    """The block of one passage in the prompt: ``[n] title (source)`` then the text."""
    title = title_of(hit)
    label = title or hit.source or hit.doc_id
    if hit.source and hit.source != label:
        label = f"{label} ({hit.source})"
    return f"[{marker}] {label}\n{hit.text.strip()}"


def pack(
    hits: Sequence[Hit], *, budget_tokens: int, count_tokens: Callable[[str], int]
) -> list[Passage]:
    """The passages to show for ``hits`` (best first), within ``budget_tokens``.

    Repeats are dropped or merged as the module docstring says; markers run 1..n in the
    order the passages are packed.

    Raises:
        InvalidInput: a negative ``budget_tokens``.
    """
    if budget_tokens < 0:
        raise InvalidInput(
            f"budget_tokens must be 0 or more, got {budget_tokens}", field="budget_tokens"
        )
    packed: list[Hit] = []
    costs: list[int] = []
    for hit in hits:
        if not hit.text.strip() or _repeats(hit, packed):
            continue
        overlapping = [i for i, kept in enumerate(packed) if _overlap(kept, hit)]
        if overlapping:
            _merge_into(packed, costs, overlapping, hit, budget_tokens, count_tokens)
            continue
        cost = count_tokens(format_passage(len(packed) + 1, hit))
        if sum(costs) + cost <= budget_tokens:
            packed.append(hit)
            costs.append(cost)
    return [Passage(marker, hit) for marker, hit in enumerate(packed, start=1)]


def _merge_into(
    packed: list[Hit],
    costs: list[int],
    overlapping: list[int],
    hit: Hit,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
) -> None:
    """Merge ``hit`` and the packed passages it overlaps into the first of them, in
    place, if the merged passage fits the budget; else leave ``packed`` as it is."""
    first = overlapping[0]
    merged = merge_spans([packed[i] for i in overlapping] + [hit])
    cost = count_tokens(format_passage(first + 1, merged))
    if sum(costs) - sum(costs[i] for i in overlapping) + cost > budget_tokens:
        return
    packed[first], costs[first] = merged, cost
    for i in reversed(overlapping[1:]):
        del packed[i], costs[i]


def merge_spans(hits: Sequence[Hit]) -> Hit:
    """One hit covering the overlapping spans of ``hits`` (chunks of one document,
    together covering one stretch of it); it keeps the first hit's id and scores.

    Exact because each chunk's text is its document's ``text[start:end]``.
    """
    ordered = sorted(hits, key=lambda h: (h.start, -h.end))
    text, end = ordered[0].text, ordered[0].end
    for hit in ordered[1:]:
        if hit.end > end:
            text += hit.text[end - hit.start :]
            end = hit.end
    return replace(hits[0], text=text, start=ordered[0].start, end=end, highlight=None)


def _overlap(a: Hit, b: Hit) -> bool:
    return a.doc_id == b.doc_id and a.start < b.end and b.start < a.end


def _repeats(hit: Hit, packed: Sequence[Hit]) -> bool:
    """Whether ``hit`` is a chunk already packed or near-identical text of one."""
    text = normalize(hit.text)
    for kept in packed:
        if kept.doc_id == hit.doc_id and kept.chunk_id == hit.chunk_id:
            return True
        other = normalize(kept.text)
        if text in other or other in text:
            return True
    return False


def normalize(text: str) -> str:
    """``text`` lower-cased, with punctuation and whitespace folded to single spaces."""
    return " ".join(re.sub(r"[\W_]+", " ", text.casefold()).split())


def prompt(question: str, passages: Sequence[Passage]) -> list[dict[str, str]]:
    """Chat messages asking for an answer to ``question`` grounded in ``passages``."""
    blocks = "\n\n".join(format_passage(p.marker, p.hit) for p in passages) or "(none)"
    user = f"Passages:\n\n{blocks}\n\nQuestion: {question.strip()}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def citation(marker: int, hit: Hit, start: int | None = None, end: int | None = None) -> Citation:
    """The citation of ``hit`` under ``marker`` (of ``start``/``end`` when given, else
    the hit's whole span)."""
    return Citation(
        marker=marker,
        doc_id=hit.doc_id,
        chunk_id=hit.chunk_id,
        start=hit.start if start is None else start,
        end=hit.end if end is None else end,
        source=hit.source,
        title=title_of(hit),
    )


# Markers as models write them: [1], [^1], [1, 2], [1; 2], [1-3], [Passage 1], and runs of
# them ([1][3], [1] [3]). A run, with the blanks around it, is replaced as a whole; a
# bracketed number that is a link's text ([1](url)) is not a marker.
_NUMBERS = r"\^?\s*\d{1,3}(?:\s*(?:[,;]|[-\u2013])\s*\^?\s*\d{1,3})*"
_ONE = rf"\[\s*(?:(?:passages?|sources?)\s*)?{_NUMBERS}\s*\]"
_RUN = re.compile(
    rf"(?P<lead>[ \t]*)(?P<markers>{_ONE}(?:[ \t]*{_ONE})*)(?P<trail>[ \t]*)(?!\()", re.I
)
_PART = re.compile(r"(\d+)\s*(?:[-\u2013]\s*\^?\s*(\d+))?")
_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.DOTALL)
_MAX_RANGE = 20
"""Longest range ``[a-b]`` expanded; a longer one names just ``a`` and ``b``."""
_CLOSES_PHRASE = ".,;:!?)"


def cite(text: str, passages: Sequence[Passage]) -> tuple[str, list[Citation], int]:
    """Map the ``[n]`` markers of a model's answer to the passages they name.

    Returns the text with every marker written ``[n]`` (``[1, 2]`` becomes ``[1][2]``,
    ``[^1]`` becomes ``[1]``), the citations in order of first use (each once), and how
    many markers named no packed passage; those are removed, and the blanks around them
    tidied. Markers inside code (backticks) are left alone.
    """
    by_marker = {p.marker: p for p in passages}
    code = [m.span() for m in _CODE.finditer(text)]
    used: dict[int, Citation] = {}
    dropped = 0

    def replace_run(match: re.Match[str]) -> str:
        nonlocal dropped
        if any(start <= match.start("markers") < end for start, end in code):
            return match.group()
        numbers = _marker_numbers(match["markers"])
        known = [n for n in numbers if n in by_marker]
        dropped += len(numbers) - len(known)
        for n in known:
            used.setdefault(n, citation(n, by_marker[n].hit))
        if known:
            return match["lead"] + "".join(f"[{n}]" for n in known) + match["trail"]
        return _gap(match)

    clean = _RUN.sub(replace_run, text)
    return clean.strip(), list(used.values()), dropped


def _marker_numbers(markers: str) -> list[int]:
    """The distinct numbers a run of markers names, in order, ranges expanded."""
    numbers: list[int] = []
    for first, last in _PART.findall(markers):
        low = int(first)
        high = int(last) if last else low
        if low <= high <= low + _MAX_RANGE:
            numbers.extend(range(low, high + 1))
        else:
            numbers.extend([low, high])
    return list(dict.fromkeys(numbers))


def _gap(match: re.Match[str]) -> str:
    """What replaces a removed run of markers and its blanks: nothing at a line's start
    or end or before punctuation; else one space between the words it parted."""
    text = match.string
    before = text[match.start() - 1] if match.start() else "\n"
    after = text[match.end()] if match.end() < len(text) else "\n"
    if before == "\n" or after == "\n" or after in _CLOSES_PHRASE:
        return ""
    return " " if match["lead"] or match["trail"] else ""
