"""Attribution's extension points for the apps above it, which register in their ``AppConfig.ready()``.

Attribution never imports an app above it; it calls what is registered here, at fixed points of its own work:

- the fee split (``FeeSplit``, at most one: a run's fee is split once): its ``policy`` is recorded on every final
  attribution row (``reward_policy_version``) and named in the run's explanation (what the builder keeps); its
  ``run_attributed`` is called once per run with the row that was just made final (ok, or no_index), INSIDE the
  transaction that makes it final, under the row's lock, so the split commits or rolls back with the attribution.
  What it raises rolls the attribution back and fails the attempt: retried later, unless it is a ``SplitRefused``
  (the same inputs would be refused the same way, a fee already split), which fails the attribution for good. So a
  run is never credited without its split, nor split twice. Without a registered split, runs are attributed and
  nothing is paid (the row's ``reward_policy_version`` stays empty).
- panel sections: each renders a piece of a run's ancestry panel once its attribution is final (ok, no_index,
  failed), after attribution's own parts, in registration order (the run's reward split).
- attribution extras: named pieces of data the run API's ``attribution`` adds for a final attribution, each a key
  of its own after attribution's keys, in registration order (the reward split as data).

An explicit registry rather than Django signals, as in ``modelfactory.hooks`` and ``inference.hooks``: the split is
called at one point inside a transaction and what it raises must roll that transaction back (a robust signal would
swallow it), attribution needs a value back from it (its policy), and the registry is the one place that says who
listens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Protocol

from django.core.exceptions import ImproperlyConfigured

from common.registry import Registry, Slot

if TYPE_CHECKING:
    from django.http import HttpRequest

    from inference.models import InferenceRun

    from .models import RunAttribution


class SplitRefused(Exception):
    """A fee split that the same inputs would refuse again (the run's fee is split already): raised by
    ``FeeSplit.run_attributed``, it fails the attribution for good instead of scheduling a retry."""


class SplitPolicy(Protocol):
    """What attribution records and says about the split: its version and the builder's part, in basis points."""

    @property
    def version(self) -> int: ...

    @property
    def builder_bps(self) -> int: ...


class FeeSplit(Protocol):
    @property
    def policy(self) -> SplitPolicy:
        """The policy that splits the fees of the runs attributed from now on."""
        ...

    def run_attributed(
        self,
        *,
        run: InferenceRun,
        attribution: RunAttribution,
        contribution_shares: Mapping[int, Fraction],
        policy: SplitPolicy,
    ) -> None:
        """Split ``run``'s fee (``attribution.fee``; its builder is the owner of the run's version) by each
        contribution's exact share of the answer (the shares sum to at most 1; none: no contributor is paid) under
        ``policy``, the one ``policy`` gave for this run and attribution recorded on its row (read once: the rules
        may change between two reads), inside the transaction that made ``attribution`` final. Raising rolls the
        attribution back (see the module docstring)."""
        ...


PanelSection = Callable[["HttpRequest", "InferenceRun"], str]  # (request, run) -> HTML
AttributionExtra = Callable[..., Any]  # extra(*, run: InferenceRun, user: User | AnonymousUser | None) -> data

_split: Slot[FeeSplit] = Slot("a fee split")
_sections: Registry[PanelSection] = Registry()
_extras: dict[str, AttributionExtra] = {}


def fee_split_register(split: FeeSplit) -> None:
    """Make ``split`` split the fee of every run attributed from now on; a fee is split once, so one split."""
    _split.set(split)


def fee_split() -> FeeSplit | None:
    """The registered split; None when no app splits fees (runs are then attributed and nothing is paid)."""
    return _split.get()


def panel_section_register(section: PanelSection) -> None:
    """Add ``section(request, run)``, which returns HTML, to the ancestry panel of a final attribution (once per
    section)."""
    _sections.add(section)


def panel_sections() -> tuple[PanelSection, ...]:
    return _sections.all()


def attribution_extra_register(name: str, extra: AttributionExtra) -> None:
    """Serve ``extra(run=, user=)`` under ``name`` in the run API's ``attribution`` of a final attribution; a name is
    one app's."""
    if _extras.get(name, extra) is not extra:
        raise ImproperlyConfigured(f"the attribution extra {name!r} is registered already: {_extras[name]!r}")
    _extras[name] = extra


def attribution_extras() -> dict[str, AttributionExtra]:
    return dict(_extras)
