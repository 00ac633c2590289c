"""The budget check: does the measured artifact fit, and which limit binds."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgegolf.errors import RecipeError
from edgegolf.recipe import RELATIVE, Budget


@dataclass(frozen=True)
class LimitCheck:
    field: str
    label: str
    unit: str
    measured: float
    limit: float
    # a limit relative to the fp32 export (unit "x"): the artifact's own ms and the export's ms
    absolute: float | None = None
    reference: float | None = None

    @property
    def fits(self) -> bool:
        return self.measured <= self.limit

    @property
    def usage(self) -> float:
        """measured / limit: above 1 misses the limit; the largest usage binds."""
        if self.limit == 0:
            return 0.0 if self.measured <= 0 else float("inf")
        return self.measured / self.limit

    def describe(self) -> str:
        if self.unit == RELATIVE:
            return self._describe_relative()
        if self.fits:
            return (f"{self.label} {self.measured:.2f} {self.unit} <= {self.limit:g} {self.unit} "
                    f"({self.usage:.0%} of the limit)")
        over = self.measured - self.limit
        share = f", {over / self.limit:.0%} over" if self.limit else ""
        return (f"{self.label} {self.measured:.2f} {self.unit} exceeds {self.limit:g} {self.unit} "
                f"by {over:.2f} {self.unit}{share}")


    def _describe_relative(self) -> str:
        """e.g. "p50 0.12x the fp32 export (5.1 ms of 42.3 ms) > 0.1x, 20% over"."""
        ms = (f" ({self.absolute:.3g} ms of {self.reference:.3g} ms)"
              if self.absolute is not None and self.reference is not None else "")
        said = f"{self.label} {self.measured:.3g}x the fp32 export{ms}"
        if self.fits:
            return f"{said} <= {self.limit:g}x ({self.usage:.0%} of the limit)"
        share = f", {self.usage - 1:.0%} over" if self.limit else ""
        return f"{said} > {self.limit:g}x{share}"


@dataclass(frozen=True)
class Verdict:
    checks: tuple[LimitCheck, ...]

    @property
    def has_budget(self) -> bool:
        return bool(self.checks)

    @property
    def fits(self) -> bool:
        return all(c.fits for c in self.checks)

    @property
    def binding(self) -> LimitCheck | None:
        """The limit closest to (or furthest past) its bound."""
        return max(self.checks, key=lambda c: c.usage, default=None)

    def summary(self) -> str:
        binding = self.binding
        if binding is None:
            return "no budget given: nothing to check"
        if self.fits:
            return f"FITS the budget; tightest limit: {binding.describe()}"
        missed = [c for c in self.checks if not c.fits]
        return f"DOES NOT FIT: {binding.describe()}" + (
            f" (and {len(missed) - 1} more limit{'s' if len(missed) > 2 else ''} missed)" if len(missed) > 1 else ""
        )

    def to_dict(self) -> dict:
        return {
            "fits": self.fits if self.checks else None,
            "binding": self.binding.field if self.binding else None,
            "summary": self.summary(),
            "checks": [{**asdict(c), "fits": c.fits} for c in self.checks],
        }


def check_budget(budget: Budget, measured: dict[str, float], fp32: dict[str, float] | None = None) -> Verdict:
    """`measured` holds the final artifact's numbers under the budget's field names (p50_ms,
    size_mb, ...); `fp32` the fp32 export's p50_ms and p95_ms, measured in the same run, which
    the limits relative to it (p50<=0.1x) divide by."""
    checks = []
    limits = Budget.limits()  # each limit's label and unit, declared on the Budget's fields
    for field, limit in budget.to_dict().items():
        label, unit = limits[field]["label"], limits[field]["unit"]
        if unit == RELATIVE:
            absolute_field = field.replace("_ratio", "_ms")  # p50_ratio divides p50_ms
            if not fp32 or not fp32.get(absolute_field):
                raise RecipeError(f"budget {limits[field]['term']}<={limit:g}{RELATIVE} needs the fp32 export's "
                                  "latency, and this run measured none")
            absolute, reference = float(measured[absolute_field]), float(fp32[absolute_field])
            checks.append(LimitCheck(field, label, unit, absolute / reference, float(limit), absolute, reference))
            continue
        checks.append(LimitCheck(field, label, unit, float(measured[field]), float(limit)))
    return Verdict(tuple(checks))
