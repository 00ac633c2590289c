"""The budget check: does the measured artifact fit, and which limit binds."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgegolf.recipe import Budget


@dataclass(frozen=True)
class LimitCheck:
    field: str
    label: str
    unit: str
    measured: float
    limit: float

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
        if self.fits:
            return (f"{self.label} {self.measured:.2f} {self.unit} <= {self.limit:g} {self.unit} "
                    f"({self.usage:.0%} of the limit)")
        over = self.measured - self.limit
        share = f", {over / self.limit:.0%} over" if self.limit else ""
        return (f"{self.label} {self.measured:.2f} {self.unit} exceeds {self.limit:g} {self.unit} "
                f"by {over:.2f} {self.unit}{share}")


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


def check_budget(budget: Budget, measured: dict[str, float]) -> Verdict:
    """`measured` holds the final artifact's numbers under the budget's field names."""
    checks = []
    limits = Budget.limits()  # each limit's label and unit, declared on the Budget's fields
    for field, limit in budget.to_dict().items():
        checks.append(LimitCheck(field, limits[field]["label"], limits[field]["unit"], float(measured[field]),
                                 float(limit)))
    return Verdict(tuple(checks))
