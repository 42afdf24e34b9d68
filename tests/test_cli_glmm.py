"""`bigmixed fit --family binomial|poisson`: the GLMM from the command line."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import bigmixed as bm
from bigmixed.cli import EXIT_USAGE, main
from bigmixed.data_gen import generate_hdp


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("glmm") / "g.csv"
    df = generate_hdp(n_doctors=80, seed=3, binary=True, counts=True).data
    df.to_csv(path, index=False)
    return path, df


def test_binomial_fit_equals_the_api(data, tmp_path):
    path, df = data
    out = tmp_path / "fit.json"
    assert main(["fit", "--data", str(path), "--formula", "remission ~ age + sex + (1 | doctor)",
                 "--family", "binomial", "--link", "probit", "--out", str(out), "-q"]) == 0
    doc = json.loads(out.read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = bm.glmm("remission ~ age + sex + (1 | doctor)", df, link="probit").fit()
    got = np.array([r["estimate"] for r in doc["fixed_effects"]])
    np.testing.assert_allclose(got, fit.beta, rtol=1e-12)
    assert doc["statistics"]["logLik"] == pytest.approx(fit.llf, rel=1e-12)


def test_poisson_offset_and_many_responses(data, tmp_path):
    path, df = data
    out = tmp_path / "p.ndjson"
    assert main(["fit", "--data", str(path), "--formula", "~ age + (1 | doctor)",
                 "--responses", "n_events", "--family", "poisson", "--offset", "log(exposure)",
                 "--out", str(out), "-q"]) == 2  # offsets need one response for now
    assert main(["fit", "--data", str(path), "--formula", "n_events ~ age + (1 | doctor)",
                 "--family", "poisson", "--offset", "log(exposure)", "--out", str(out),
                 "--format", "ndjson", "-q"]) == 0
    line = json.loads(out.read_text().splitlines()[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = bm.glmm("n_events ~ age + (1 | doctor)", df, family="poisson",
                      offset="log(exposure)").fit()
    assert line["statistics"]["logLik"] == pytest.approx(fit.llf, rel=1e-12)


@pytest.mark.parametrize("extra", [["--link", "probit"], ["--nagq", "5"],  # (--weights: LMMs too)
                                   ["--family", "binomial", "--ml"],
                                   ["--family", "binomial", "--ar1", "age,doctor"]])
def test_options_that_do_not_apply_are_usage_errors(data, tmp_path, extra):
    path, _ = data
    assert main(["fit", "--data", str(path), "--formula", "remission ~ age + (1 | doctor)",
                 "--out", str(tmp_path / "x.json"), "-q", *extra]) == EXIT_USAGE
