"""Money: amounts in other currencies converted to the base currency, exactly.

The rates come from a CSV file with the header ``date,currency,rate``, one
row per currency and day, where ``rate`` is units of the currency per one
unit of the base currency, as central banks publish them (the ECB's
reference rate for JPY on a day is the yen price of one euro). An amount is
converted with the latest rate on or before its event's UTC date, in decimal
arithmetic, and rounded once, at the end, to cents of the base currency
(half up, the rounding the euro conversion rules use).

>>> rates = parse_fx_rates(
...     "date,currency,rate\\n2026-01-02,JPY,160\\n2026-01-05,JPY,162.5\\n", base="EUR")
>>> jan_3 = 1_767_398_400_000  # 2026-01-03T00:00:00Z: the rate of 2026-01-02 applies
>>> rates.to_base(10_000.0, "JPY", jan_3), rates.to_base(12.5, "EUR", jan_3)
(Decimal('62.50'), Decimal('12.50'))
>>> rates.to_base(10.0, "USD", jan_3)
Traceback (most recent call last):
...
schemas.money.UnknownCurrencyError: no rate for USD: the rates file has none
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Protocol

from schemas.errors import ConfigError, SegstreamError

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
CENT = Decimal("0.01")
HEADER = ("date", "currency", "rate")
# Rounding to cents needs as many digits as the amount has before the point:
# enough for any float (a bound on the base amount is checked after).
_WIDE = Context(prec=400, rounding=ROUND_HALF_UP)
# How often (wall clock) a worker looks at the rates file's modification time.
RELOAD_CHECK_S = 60.0


class FxRatesError(ConfigError):
    """The rates file cannot be used; the message names the line."""


class UnknownCurrencyError(SegstreamError):
    """No rate converts this currency at this date."""


class Converter(Protocol):
    """Anything that converts an amount to the base currency (the decoder's view)."""

    @property
    def base(self) -> str:
        """ISO code of the base currency."""
        ...

    def to_base(self, amount: float, currency: str, ts_ms: int) -> Decimal:
        """``amount`` of ``currency`` at event time ``ts_ms``, in the base currency."""
        ...


@dataclass(frozen=True, slots=True)
class FxRates:
    """A rates table: per currency, its rate days (sorted) and rates.

    ``days`` are UTC day indices (days since 1970-01-01). Build it with
    :func:`parse_fx_rates` or :func:`load_fx_rates`.
    """

    base: str = "EUR"
    days: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    rates: Mapping[str, tuple[Decimal, ...]] = field(default_factory=dict)

    def rate(self, currency: str, ts_ms: int) -> Decimal:
        """Units of ``currency`` per unit of the base, on the event's UTC date.

        The latest rate on or before that date; 1 for the base currency.
        """
        if currency == self.base:
            return Decimal(1)
        days = self.days.get(currency)
        if days is None:
            raise UnknownCurrencyError(f"no rate for {currency}: the rates file has none")
        day = ts_ms // DAY_MS
        at = bisect.bisect_right(days, day) - 1
        if at < 0:
            first = date.fromordinal(days[0] + _EPOCH_ORDINAL).isoformat()
            raise UnknownCurrencyError(
                f"no rate for {currency} on or before {_iso_day(day)}: its first is {first}"
            )
        return self.rates[currency][at]

    def to_base(self, amount: float, currency: str, ts_ms: int) -> Decimal:
        """``amount`` of ``currency`` at ``ts_ms`` in the base currency, rounded to cents.

        ``str(amount)`` is the shortest text that reads back as the float, so
        ``0.1`` is converted as one tenth, not as its binary approximation.
        """
        exact = Decimal(str(amount)) / self.rate(currency, ts_ms)
        return exact.quantize(CENT, context=_WIDE)


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _iso_day(day: int) -> str:
    return date.fromordinal(day + _EPOCH_ORDINAL).isoformat()


def parse_fx_rates(text: str, base: str, source: str = "rates file") -> FxRates:
    """The rates table of a ``date,currency,rate`` CSV text.

    Blank lines are skipped. Raises :class:`FxRatesError` naming ``source``
    and the line of the first problem: a wrong header, a date that is not
    ``YYYY-MM-DD``, a currency that is not three letters, a rate that is not
    a positive finite number, a (date, currency) given twice, or a rate other
    than 1 for the base currency.

    >>> parse_fx_rates("date,currency,rate\\n2026-01-02,usd,0\\n", "EUR", "fx.csv")
    Traceback (most recent call last):
    ...
    schemas.money.FxRatesError: fx.csv:2: rate must be a positive number, got '0'
    """
    base = base.upper()
    lines = text.lstrip("\ufeff").splitlines()
    header = tuple(cell.strip().lower() for cell in lines[0].split(",")) if lines else ()
    if header != HEADER:
        raise FxRatesError(f"{source}:1: header must be 'date,currency,rate', got {header!r}")
    seen: dict[tuple[int, str], int] = {}
    rows: dict[str, list[tuple[int, Decimal]]] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != 3:
            raise FxRatesError(f"{source}:{number}: expected 3 fields, got {len(cells)}")
        day = _parse_day(cells[0], source, number)
        currency = cells[1].upper()
        if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
            raise FxRatesError(f"{source}:{number}: currency must be a 3-letter code")
        rate = _parse_rate(cells[2], source, number)
        if (day, currency) in seen:
            raise FxRatesError(
                f"{source}:{number}: {currency} on {cells[0]} is also on line "
                f"{seen[(day, currency)]}"
            )
        seen[(day, currency)] = number
        if currency == base:
            if rate != 1:
                raise FxRatesError(f"{source}:{number}: the base currency {base} has rate 1")
            continue
        rows.setdefault(currency, []).append((day, rate))
    for entries in rows.values():
        entries.sort()
    return FxRates(
        base=base,
        days={c: tuple(d for d, _ in entries) for c, entries in rows.items()},
        rates={c: tuple(r for _, r in entries) for c, entries in rows.items()},
    )


def _parse_day(text: str, source: str, number: int) -> int:
    problem = f"{source}:{number}: date must be YYYY-MM-DD, got {text[:20]!r}"
    try:
        parsed = date.fromisoformat(text)
    except ValueError as exc:
        raise FxRatesError(problem) from exc
    if len(text) != 10:  # fromisoformat also takes 20260102 and 2026-W01-5
        raise FxRatesError(problem)
    return parsed.toordinal() - _EPOCH_ORDINAL


def _parse_rate(text: str, source: str, number: int) -> Decimal:
    try:
        rate = Decimal(text)
    except InvalidOperation as exc:
        raise FxRatesError(f"{source}:{number}: rate is not a number: {text[:20]!r}") from exc
    if not rate.is_finite() or rate <= 0:
        raise FxRatesError(f"{source}:{number}: rate must be a positive number, got {text[:20]!r}")
    return rate


def load_fx_rates(path: Path, base: str) -> FxRates:
    """The rates table of a CSV file (see :func:`parse_fx_rates`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FxRatesError(f"{path}: cannot read the rates file: {exc}") from exc
    return parse_fx_rates(text, base, str(path))


class FxRatesFile:
    """The rates of a file, re-read when the file changes.

    At most every ``check_s`` seconds (wall clock) a conversion looks at the
    file's modification time; when it changed, the file is read again. A file
    that no longer parses is logged and ignored: the previous rates stay in
    use until a good file replaces it. The first load raises, so a worker
    does not start on a bad file.
    """

    def __init__(
        self,
        path: Path,
        base: str,
        check_s: float = RELOAD_CHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.check_s = check_s
        self._clock = clock
        self._mtime_ns = os.stat(path).st_mtime_ns if path.exists() else None
        self.table = load_fx_rates(path, base)
        self._checked = clock()

    @property
    def base(self) -> str:
        """ISO code of the base currency."""
        return self.table.base

    def to_base(self, amount: float, currency: str, ts_ms: int) -> Decimal:
        """As :meth:`FxRates.to_base`, with the file's current rates."""
        now = self._clock()
        if now - self._checked >= self.check_s:
            self._checked = now
            self._reload_if_changed()
        return self.table.to_base(amount, currency, ts_ms)

    def _reload_if_changed(self) -> None:
        try:
            mtime_ns = os.stat(self.path).st_mtime_ns
        except OSError as exc:
            log.error("fx_rates_unreadable path=%s error=%s", self.path, exc)
            return
        if mtime_ns == self._mtime_ns:
            return
        try:
            self.table = load_fx_rates(self.path, self.table.base)
        except FxRatesError as exc:
            log.error("fx_rates_rejected keeping=previous error=%s", exc)
            return
        finally:
            self._mtime_ns = mtime_ns
        log.info("fx_rates_reloaded path=%s currencies=%d", self.path, len(self.table.days))
