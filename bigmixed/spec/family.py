"""GLMM families as the user gives them: ``bm.Binomial(link="probit")``, ``bm.Poisson()``, or
the strings "binomial" / "poisson"; what each accepts as a response, and R's starting values.

The numbers (links, variances, deviance residuals) are the compute kernels' (kernels/glm.py),
which reproduce lme4's glmFamily; a family here names them and checks the data against them.
"""
from __future__ import annotations

import numpy as np

from ..errors import FamilyError, ResponseSupportError

LINKS = {"binomial": ("logit", "probit", "cloglog"), "poisson": ("log",)}


class Family:
    """A GLM family with its link (the base of `Binomial` and `Poisson`)."""

    name = "family"
    canonical = ""

    def __init__(self, link: str | None = None):
        link = self.canonical if link is None else link
        if not isinstance(link, str) or link not in LINKS[self.name]:
            raise FamilyError(
                f"link {link!r} is not available for the {self.name} family; use one of "
                f"{', '.join(repr(x) for x in LINKS[self.name])}")
        self.link = link

    @property
    def ids(self) -> tuple:
        """(family id, link id) of the compute kernels (lme4's conventions)."""
        from ..kernels.glm import family_link_ids

        return family_link_ids(self.name, self.link)

    def describe(self) -> str:
        """As lme4's summary prints it: "binomial  ( logit )"."""
        return f"{self.name}  ( {self.link} )"

    def check_response(self, y: np.ndarray, weights: np.ndarray, what: str) -> None:
        """Raise ResponseSupportError (naming `what`) for a response outside the family's support."""
        raise NotImplementedError  # pragma: no cover - abstract

    def start_mu(self, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """R's family$initialize: the mean the iterations start from."""
        raise NotImplementedError  # pragma: no cover - abstract

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.link == self.link

    def __hash__(self) -> int:
        return hash((self.name, self.link))

    def __repr__(self) -> str:
        return f"bm.{type(self).__name__}(link={self.link!r})"


def _examples(values, mask, limit: int = 3) -> str:
    bad = np.unique(values[mask])[:limit]
    return ", ".join(f"{v:g}" for v in bad)


class Binomial(Family):
    """Binomial responses: 0/1 (or boolean), or a proportion of successes with ``weights=``
    the numbers of trials, or ``cbind(successes, failures)`` in the formula (as lme4)."""

    name = "binomial"
    canonical = "logit"

    def check_response(self, y, weights, what):
        out = (y < 0) | (y > 1)
        if out.any():
            raise ResponseSupportError(
                f"{what} must be in [0, 1] for the binomial family (0/1 outcomes or proportions "
                f"of successes with weights = trials), but it holds {int(out.sum())} value(s) "
                f"outside it, e.g. {_examples(y, out)}; for counts of successes use "
                "cbind(successes, failures) ~ ...")
        successes = y * weights
        frac = np.abs(successes - np.round(successes)) > 1e-7 * np.maximum(1.0, weights)
        if frac.any():
            raise ResponseSupportError(
                f"{what} times the weights (the numbers of trials) must be whole numbers of "
                f"successes, but {int(frac.sum())} row(s) are not (e.g. {_examples(successes, frac)})")

    def start_mu(self, y, weights):
        return (weights * y + 0.5) / (weights + 1.0)


class Poisson(Family):
    """Poisson counts (log link), with an offset such as ``offset(log(exposure))``."""

    name = "poisson"
    canonical = "log"

    def check_response(self, y, weights, what):
        neg = y < 0
        if neg.any():
            raise ResponseSupportError(
                f"{what} must be a non-negative count for the poisson family, but it holds "
                f"{int(neg.sum())} negative value(s), e.g. {_examples(y, neg)}")
        frac = y != np.round(y)
        if frac.any():
            raise ResponseSupportError(
                f"{what} must be whole counts for the poisson family, but it holds "
                f"{int(frac.sum())} non-integer value(s), e.g. {_examples(y, frac)}")

    def start_mu(self, y, weights):
        return y + 0.1


FAMILIES = {"binomial": Binomial, "poisson": Poisson}


def family_from(family, link: str | None = None) -> Family:
    """A Family from a Family object or a name ("binomial", "poisson"), with `link`."""
    if isinstance(family, Family):
        if link is not None and link != family.link:
            return type(family)(link)
        return family
    if isinstance(family, str) and family.lower() in FAMILIES:
        return FAMILIES[family.lower()](link)
    if isinstance(family, str) and family.lower() == "gaussian":
        raise FamilyError("family='gaussian' is the linear mixed model: use bm.lmm(...)")
    raise FamilyError(f"unknown family {family!r}: use 'binomial' or 'poisson' (or "
                      "bm.Binomial(link=...), bm.Poisson())")
