"""Saved models: fit.save / bm.load round trips (estimates, BLUPs, encodings of new data),
the format (zip of JSON + .npy, no pickle), versions, and tidy outputs."""
import json
import os
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
from bigmixed.spec.design import design_matrices_for_newdata
from bigmixed.io.modelfile import FORMAT_VERSION, META


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame({
        "x": rng.normal(size=n) + 3,
        "z": rng.uniform(1, 5, size=n),
        "f": rng.choice(["a", "b", "c"], n),
        "o": pd.Categorical(rng.choice(["lo", "mid", "hi"], n), categories=["lo", "mid", "hi"], ordered=True),
        "k": rng.integers(1, 6, n),
        "g": rng.integers(0, 30, n),
        "h": rng.choice(["p", "q", "r", "s"], n),
        "b": rng.random(n) < 0.5,
    })
    df["x2"] = 2 * df["x"]  # aliased: dropped as lme4 drops it
    df["y"] = rng.normal(size=n) + 0.3 * df.x + rng.normal(size=30)[df.g] + rng.normal(size=4)[df.h.map("pqrs".index)]
    df.loc[df.index[:5], "x"] = np.nan  # rows dropped
    return df


@pytest.fixture(scope="module")
def newdata(frame):
    new = frame.sample(60, random_state=1).copy()
    new.loc[new.index[:3], "g"] = 999  # a level not seen in the fit
    new.loc[new.index[3], "h"] = "zz"
    new.loc[new.index[4], "x"] = np.nan
    return new


FORMULAS = [
    "y ~ x + (1 | g)",
    "y ~ scale(x) + poly(z, 2) + f * x + o + log(z) + factor(k) + b + (1 + scale(x) | g) + (1 | h:g) + (1 | h)",
    "y ~ C(f, contr.sum) + x + (x || g)",
    "y ~ f + (0 + f | h) + (1 | g)",
    "y ~ x + I(x^2) + x2 + (1 | h/g)",
]


def fitted(formula, df):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bm.lmm(formula, df).fit()


@pytest.mark.parametrize("formula", FORMULAS)
def test_round_trip(formula, frame, newdata, tmp_path):
    fit = fitted(formula, frame)
    path = tmp_path / "m.bmfit"
    assert fit.save(path) == str(path)
    lf = bm.load(path)
    assert isinstance(lf, bm.LMMResults)
    # estimates, exactly
    for attr in ("theta", "beta", "vcov"):
        assert np.array_equal(getattr(fit, attr), getattr(lf, attr))
    for attr in ("sigma", "objective", "llf", "aic", "bic", "deviance", "nobs", "n_dropped", "reml",
                 "converged", "is_singular", "formula"):
        assert getattr(fit, attr) == getattr(lf, attr), attr
    assert lf.fixed_names == fit.fixed_names and lf.n_groups == fit.n_groups
    pd.testing.assert_frame_equal(lf.fixed_effects, fit.fixed_effects)
    pd.testing.assert_frame_equal(lf.variance_components, fit.variance_components)
    # BLUPs and their conditional covariances, exactly
    for g, df in fit.ranef().items():
        pd.testing.assert_frame_equal(lf.ranef()[g], df)
        pd.testing.assert_frame_equal(lf.coef()[g], fit.coef()[g])
        assert np.array_equal(lf.conditional_variances()[g], fit.conditional_variances()[g])
    pd.testing.assert_frame_equal(bm.tidy.ranef(lf), bm.tidy.ranef(fit))
    # new data are encoded identically
    X1, t1 = design_matrices_for_newdata(fit.design, newdata)
    X2, t2 = design_matrices_for_newdata(lf.design, newdata)
    assert np.array_equal(X1, X2, equal_nan=True)
    for (c1, z1), (c2, z2) in zip(t1, t2):
        assert np.array_equal(c1, c2) and c1.dtype == c2.dtype
        assert np.array_equal(z1, z2, equal_nan=True)
    assert [type(w) for w in lf.warnings] == [type(w) for w in fit.warnings]
    assert [str(w) for w in lf.warnings] == [str(w) for w in fit.warnings]
    assert lf.summary() == fit.summary()
    if hasattr(fit, "predict"):
        assert np.array_equal(lf.predict(newdata), fit.predict(newdata), equal_nan=True)
    # a loaded fit saves again to the same content
    lf.save(tmp_path / "again.bmfit")
    lf2 = bm.load(tmp_path / "again.bmfit")
    assert np.array_equal(lf2.beta, fit.beta) and lf2.summary() == fit.summary()


def test_rank_deficient_columns_survive(frame, tmp_path):
    fit = fitted("y ~ x + x2 + (1 | g)", frame)
    assert fit.design.dropped_fixed == ["x2"]
    fit.save(tmp_path / "m.bmfit")
    lf = bm.load(tmp_path / "m.bmfit")
    assert lf.design.dropped_fixed == ["x2"] and lf.fixed_names == ["(Intercept)", "x"]
    X1, _ = design_matrices_for_newdata(fit.design, frame.head(20))
    X2, _ = design_matrices_for_newdata(lf.design, frame.head(20))
    assert X2.shape[1] == 2 and np.array_equal(X1, X2, equal_nan=True)


def test_format_is_zip_of_json_and_npy(frame, tmp_path):
    fit = fitted(FORMULAS[1], frame)
    path = tmp_path / "m.bmfit"
    fit.save(path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert names[0] == META
        assert all(n.startswith("arrays/") and n.endswith(".npy") for n in names[1:])
        meta = json.loads(zf.read(META))
        for n in names[1:]:  # every array reads without pickle
            with zf.open(n) as fh:
                np.lib.format.read_array(fh, allow_pickle=False)
    # a fit without a residual structure is written as version 1 (readable by older bigmixed)
    assert meta["format"] == "bigmixed.model" and meta["format_version"] == 1 <= FORMAT_VERSION
    assert meta["formula"] == FORMULAS[1] and meta["response"] == "y"
    kinds = {v["name"]: v for v in meta["variables"]}
    assert kinds["o"]["levels"] == ["lo", "mid", "hi"] and kinds["o"]["ordered"]
    assert kinds["f"]["levels"] == ["a", "b", "c"] and kinds["x"]["kind"] == "numeric"
    assert meta["summary"]["statistics"]["nobs"] == fit.nobs
    assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


def _rewrite(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == META:
                meta = json.loads(data)
                edit(meta)
                data = json.dumps(meta).encode()
            zout.writestr(item, data)


def test_newer_format_version_is_a_clear_error(frame, tmp_path):
    fit = fitted(FORMULAS[0], frame)
    fit.save(tmp_path / "m.bmfit")
    _rewrite(tmp_path / "m.bmfit", tmp_path / "new.bmfit",
             lambda m: m.update(format_version=FORMAT_VERSION + 1, bigmixed_version="9.0"))
    newer = f"format version {FORMAT_VERSION + 1}.*up to {FORMAT_VERSION}.*upgrade"
    with pytest.raises(bm.ModelFormatError, match=newer) as info:
        bm.load(tmp_path / "new.bmfit")
    assert info.value.format_version == FORMAT_VERSION + 1
    assert info.value.supported_version == FORMAT_VERSION
    assert isinstance(info.value, bm.BigmixedError)


def test_not_a_model(frame, tmp_path):
    (tmp_path / "junk.bmfit").write_text("hello")
    with pytest.raises(bm.ModelFormatError, match="not a zip"):
        bm.load(tmp_path / "junk.bmfit")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as zf:
        zf.writestr("x.txt", "x")
    with pytest.raises(bm.ModelFormatError, match="no bigmixed-model.json"):
        bm.load(tmp_path / "empty.zip")
    fit = fitted(FORMULAS[0], frame)
    fit.save(tmp_path / "m.bmfit")
    _rewrite(tmp_path / "m.bmfit", tmp_path / "other.bmfit", lambda m: m.update(format="something.else"))
    with pytest.raises(bm.ModelFormatError, match="not a saved bigmixed model"):
        bm.load(tmp_path / "other.bmfit")
    # a missing array
    with zipfile.ZipFile(tmp_path / "m.bmfit") as zin, zipfile.ZipFile(tmp_path / "cut.bmfit", "w") as zout:
        for item in zin.namelist():
            if item != "arrays/beta.npy":
                zout.writestr(item, zin.read(item))
    with pytest.raises(bm.ModelFormatError, match="'beta'"):
        bm.load(tmp_path / "cut.bmfit")


def test_loaded_fit_has_no_data(frame, tmp_path):
    fit = fitted(FORMULAS[0], frame)
    fit.save(tmp_path / "m.bmfit", condvar=False)
    lf = bm.load(tmp_path / "m.bmfit")
    with pytest.raises(AttributeError, match="data are not saved"):
        _ = lf.fittedvalues
    with pytest.raises(AttributeError, match="not saved"):
        lf.ranef()  # condvar=True needs the conditional covariances
    pd.testing.assert_frame_equal(lf.ranef(condvar=False)["g"], fit.ranef(condvar=False)["g"])
    with pytest.raises(AttributeError, match="loaded model"):
        _ = lf.model.system


def test_failed_save_leaves_nothing(frame, tmp_path):
    fit = fitted(FORMULAS[0], frame)
    with pytest.raises(OSError):
        fit.save(tmp_path / "missing_dir" / "m.bmfit")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        fit.save(blocker / "m.bmfit")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_to_dict_and_tidy(frame):
    fit = fitted(FORMULAS[3], frame)
    doc = fit.to_dict()
    text = json.dumps(doc, allow_nan=False)  # strict JSON: NaN became null
    assert json.loads(text)["format"] == "bigmixed.fit" and doc["format_version"] == bm.tidy.DOCUMENT_VERSION == 2
    assert [r["estimate"] for r in doc["fixed_effects"]] == list(fit.beta)
    assert doc["statistics"]["nobs"] == fit.nobs and doc["statistics"]["AIC"] == fit.aic
    assert set(doc["versions"]) >= {"bigmixed", "numpy", "scipy", "numba", "scikit-sparse", "formulaic", "python"}
    vc = bm.tidy.variance_components(fit)
    pd.testing.assert_frame_equal(vc, fit.variance_components)
    td = bm.tidy.tidy(fit)
    assert list(td.columns) == ["effect", "group", "term", "estimate", "std_error", "t_value"]
    assert td[td.term == "sd__Observation"].estimate.item() == fit.sigma
    # BLUPs in long form: as lme4's as.data.frame(ranef(fit)): group, then term, then level
    rl = bm.tidy.ranef(fit)
    assert list(rl.columns) == ["group", "level", "term", "estimate", "cond_sd"]
    h = fit.ranef()["h"]
    sub = rl[(rl.group == "h") & (rl.term == "fb")]
    assert list(sub.level) == [str(x) for x in h.index]
    np.testing.assert_array_equal(sub.estimate.to_numpy(), h["fb"].to_numpy())
    np.testing.assert_array_equal(sub.cond_sd.to_numpy(), h["fb_sd"].to_numpy())
    assert len(rl) == sum(df.shape[0] * len(f.column_names)
                          for df, f in zip(fit.ranef().values(), fit.structure.factors))


# ---- #17 item 4: a loaded model answers fixed_effects_test, anova_terms, Wald confint ------


def _close(a, b, tol=1e-10):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    assert np.array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(a)
    np.testing.assert_allclose(a[ok], b[ok], rtol=tol, atol=0)


@pytest.mark.parametrize("formula", [FORMULAS[0], FORMULAS[2], FORMULAS[4],
                                     "y ~ f * x + z + (1 + x | g) + (1 | h)"])
def test_a_loaded_model_answers_satterthwaite_tests_as_the_live_fit(formula, frame, tmp_path):
    live = fitted(formula, frame)
    live.save(tmp_path / "m.bmfit")
    with zipfile.ZipFile(tmp_path / "m.bmfit") as zf:
        meta = json.loads(zf.read(META))
        names = zf.namelist()
    assert meta["format_version_minor"] == 1 and meta["inference"]["satterthwaite"] is not None
    assert "arrays/inference/hessian.npy" in names and "arrays/inference/jacobian.npy" in names
    m = bm.load(tmp_path / "m.bmfit")
    assert m._model is None  # a loaded fit: no model, no data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        a, b = live.fixed_effects_test(), m.fixed_effects_test()
        assert list(a["term"]) == list(b["term"])
        for c in ("estimate", "std_error", "df", "t_value", "p_value"):
            _close(a[c], b[c])
        for kind in (3, 1, "marginal"):
            try:
                ta = live.anova_terms(type=kind)
            except NotImplementedError:  # Type III of a transformed / aliased design
                with pytest.raises(NotImplementedError):
                    m.anova_terms(type=kind)
                continue
            tb = m.anova_terms(type=kind)
            assert list(ta["term"]) == list(tb["term"])
            for c in ("sum_sq", "mean_sq", "num_df", "den_df", "F_value", "p_value"):
                _close(ta[c], tb[c])
        for method in ("wald", "satterthwaite"):
            ca, cb = live.confint(method=method), m.confint(method=method)
            _close(ca[["lower", "upper"]], cb[["lower", "upper"]])
        assert live.summary(ddf="satterthwaite") == m.summary(ddf="satterthwaite")
        assert m.to_dict()["inference"]["ddf"] == "satterthwaite"
        _close([r["df"] for r in m.to_dict()["fixed_effects"] if not r["aliased"]], a["df"])
    # saved again from the loaded fit: the section is kept
    m.save(tmp_path / "again.bmfit")
    again = bm.load(tmp_path / "again.bmfit")
    _close(again.fixed_effects_test()["df"], a["df"], tol=0)


def test_a_residual_structure_model_keeps_its_satterthwaite_inputs(tmp_path):
    from bigmixed.data_gen import generate_longitudinal

    df = generate_longitudinal(30, 5, residual="ar1", seed=32).data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        live = bm.lmm("y ~ time * treat + (1 | patient)", df,
                      residual=bm.AR1(time="visit", group="patient")).fit()
    live.save(tmp_path / "ar.bmfit")
    m = bm.load(tmp_path / "ar.bmfit")
    a, b = live.fixed_effects_test(), m.fixed_effects_test()
    _close(a["df"], b["df"])
    _close(live.anova_terms()["den_df"], m.anova_terms()["den_df"])


def test_a_damaged_inference_section_is_a_format_error(frame, tmp_path):
    fit = fitted(FORMULAS[0], frame)
    path = tmp_path / "m.bmfit"
    fit.save(path)
    bad = tmp_path / "bad.bmfit"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "arrays/inference/hessian.npy":
                import io as _io

                buf = _io.BytesIO()
                np.save(buf, np.zeros((1, 1)))
                data = buf.getvalue()
            dst.writestr(item, data)
    with pytest.raises(bm.ModelFormatError, match="Satterthwaite section has inconsistent shapes"):
        bm.load(bad)


def test_a_file_without_the_section_loads_and_names_what_is_missing(frame, tmp_path):
    fit = fitted(FORMULAS[0], frame)
    path = tmp_path / "m.bmfit"
    fit.save(path)
    old = tmp_path / "old.bmfit"  # as written before format minor 1: no "inference" section
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            if item.filename.startswith("arrays/inference/"):
                continue
            data = src.read(item.filename)
            if item.filename == META:
                meta = json.loads(data)
                del meta["inference"], meta["format_version_minor"]
                data = json.dumps(meta).encode()
            dst.writestr(item, data)
    m = bm.load(old)
    np.testing.assert_array_equal(m.beta, fit.beta)
    _close(m.confint()["upper"], fit.confint()["upper"])  # Wald needs nothing more
    for call in (m.fixed_effects_test, m.anova_terms, lambda: m.summary(ddf="satterthwaite")):
        with pytest.raises(bm.SavedSectionMissingError, match=r"old\.bmfit.*model format 1\.0.*save it again") as e:
            call()
        assert e.value.section.startswith("inference.")
        assert isinstance(e.value, AttributeError) and isinstance(e.value, bm.ModelFormatError)
    assert m.to_dict()["inference"]["ddf"] == "none"  # the document says what it holds
    with pytest.raises(bm.SavedSectionMissingError):
        bm.tidy.fit_document(m, ddf="satterthwaite")


def test_saving_without_the_satterthwaite_section(frame, tmp_path):
    from bigmixed.io.modelfile import save

    fit = fitted(FORMULAS[0], frame)
    save(fit, tmp_path / "m.bmfit", satterthwaite=False)
    m = bm.load(tmp_path / "m.bmfit")
    with pytest.raises(bm.SavedSectionMissingError, match="satterthwaite=False"):
        m.fixed_effects_test()
    np.testing.assert_array_equal(m.confint()["lower"], fit.confint()["lower"])
