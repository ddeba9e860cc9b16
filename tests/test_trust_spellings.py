"""Every spelling of every ask (issue 28, item 17): the trust rule asks for a download whenever the builder would do one.

`record.trust` reads a spec's options to decide what it asks for; `models.specs` reads the same options to build the
model. If the two read a spelling differently (`pretrained=TRUE`, `weights=Default`), a recipe could download without
`--allow download`. So each spec kind's builder is run up to the call that would download (that call is replaced by one
that records its arguments and stops), on case and whitespace variants of every value of every option, and whenever
it would download, the rule must have asked.

`KINDS` is the one table: a row per spec kind that can ask for something, naming the option, its values, where the
builder's downloading call is, and how its arguments show a download. A new spec kind (e.g. `hf:`, `open_clip:`) adds
a row; `test_every_spec_kind_with_an_option_has_a_row` reads the spec table of `models.specs`'s docstring and fails
until every `kind:...:option=value` it shows has one.
"""
from __future__ import annotations

import dataclasses as dc
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from lucent_dsl.models import specs
from lucent_dsl.record import trust


@dc.dataclass(frozen=True)
class KindAsks:
    """How one spec kind asks for a download: `spec(value)` is a spec with `option=value`; `patch` is (module path,
    attribute) of the builder's call that downloads; `downloads(args, kwargs)` tells from that call whether it would."""

    option: str
    spec: Callable[[str], str]
    values: tuple[str, ...]
    patch: tuple[str, str]
    downloads: Callable[[tuple, dict], bool]


KINDS: dict[str, KindAsks] = {
    "torchvision": KindAsks(
        option="weights",
        spec=lambda v: f"torchvision:resnet18:weights={v}",
        values=("DEFAULT", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1", "none", "None"),
        patch=("torchvision.models", "get_model"),
        downloads=lambda args, kwargs: kwargs.get("weights") is not None,
    ),
    "timm": KindAsks(
        option="pretrained",
        spec=lambda v: f"timm:resnet18:pretrained={v}",
        values=("true", "1", "yes", "false", "0", "no"),
        patch=("timm", "create_model"),
        downloads=lambda args, kwargs: bool(kwargs.get("pretrained")),
    ),
    "open_clip": KindAsks(
        option="pretrained",
        spec=lambda v: f"open_clip:RN50:pretrained={v}",
        values=("openai", "OpenAI", "yfcc15m", "cc12m", "none", "None"),
        patch=("open_clip", "create_model"),
        downloads=lambda args, kwargs: kwargs.get("pretrained") not in (None, "", "none"),
    ),
}
"""Spec kinds that can ask for a download, each with every value its option takes (see the module docstring)."""


class _Stop(Exception):
    """Raised by the replaced downloading call: the builder got that far (not a RuntimeError, which it catches)."""


def _spellings(value: str) -> st.SearchStrategy[str]:
    cases = st.lists(st.booleans(), min_size=len(value), max_size=len(value)).map(
        lambda upper: "".join(c.upper() if u else c.lower() for c, u in zip(value, upper, strict=True)))
    pad = st.sampled_from(["", " ", "\t", "  "])
    return st.tuples(pad, cases, pad).map("".join).filter(bool)


def _would_download(kind: str, spec: str, monkeypatch) -> bool:
    row = KINDS[kind]
    module, attribute = row.patch
    seen: list[bool] = []

    def call(*args: Any, **kwargs: Any) -> Any:
        seen.append(row.downloads(args, kwargs))
        raise _Stop

    monkeypatch.setattr(f"{module}.{attribute}", call)
    try:
        specs.build_model(spec)
    except _Stop:
        pass
    except Exception:  # noqa: BLE001 - the builder refused this spelling before any download: nothing to ask
        return False
    return bool(seen and seen[0])


def _asks_download(spec: str) -> bool:
    return any(a.kind == "download" for a in trust.model_asks([spec]))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_plain_spellings_ask_exactly_when_the_builder_downloads(kind, monkeypatch):
    row = KINDS[kind]
    found = {v: (_would_download(kind, row.spec(v), monkeypatch), _asks_download(row.spec(v))) for v in row.values}
    assert any(d for d, _ in found.values()) and not all(d for d, _ in found.values()), found  # the table can tell
    assert all(asked == downloads for downloads, asked in found.values()), found


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_spelling_of_every_value_asks_when_the_builder_would_download(kind):
    row = KINDS[kind]

    @settings(max_examples=40)
    @given(st.sampled_from(row.values).flatmap(_spellings))
    def check(spelling: str) -> None:
        with pytest.MonkeyPatch.context() as mp:
            spec = row.spec(spelling)
            try:
                specs.parse_spec(spec)
            except specs.InvalidArgumentError:
                return  # not a spec: neither built nor asked
            if _would_download(kind, spec, mp):
                assert _asks_download(spec), f"{spec!r} downloads, but the trust rule asks nothing"

    check()


def test_upper_case_true_asks_for_a_download():  # the mutant the audit found: a case-sensitive pretrained=True
    for spelling in ("TRUE", "True", "YES", " true"):
        spec = f"timm:resnet18:pretrained={spelling.strip()}"
        assert _asks_download(spec), spec


def documented_options() -> set[tuple[str, str]]:
    """(kind, option) of every `kind:NAME:option=value` (or `[:option=value]`) in the spec table of `models.specs`."""
    return set(re.findall(r"`(\w+):[^`:]+\[?:(\w+)=[^`]*`", specs.__doc__ or ""))


def test_every_spec_kind_with_an_option_has_a_row():
    found = documented_options()
    assert {("torchvision", "weights"), ("timm", "pretrained")} <= found, found  # the reader reads the table
    missing = sorted(f"{kind}:...:{option}=" for kind, option in found if kind not in KINDS or KINDS[kind].option != option)
    assert not missing, f"add a row to KINDS for {missing}"
    for kind, row in KINDS.items():  # and each row's spec is one of that kind, with that option
        assert specs.parse_spec(row.spec(row.values[0])).kind == kind
        assert dict(specs.parse_spec(row.spec(row.values[0])).options).keys() == {row.option}
