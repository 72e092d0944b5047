"""The detector of spec section 6: its p-values against hand-counted values, a flag rate of alpha on
in-distribution draws (within binomial tolerance), both tails flagged, a K mismatch refused, the
reference file round trip, and the pixel maps that decompose the bound."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from biva_core.detect import (Detector, Reference, as_codecs, binomial_interval, build_reference,
                              combine, compressed_bits_per_dim, findings, tail_p, two_sided_p)

from conftest import images, live_model, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def synthetic_reference(n: int, seed: int, K: int = 1) -> Reference:
    rng = np.random.default_rng(seed)
    bpd, llr = rng.normal(4.0, 0.3, n), rng.normal(1000.0, 200.0, n)
    return Reference(split="valid", K=K, l0=-bpd, bpd=bpd, lk={1: -bpd - llr}, llr={1: llr}, k=1)


def test_p_values_count_the_reference_on_each_side():
    ref = np.arange(1.0, 100.0)                       # N = 99 values 1..99
    lo, hi = tail_p(ref, [50.0, 0.0, 1000.0, 1.0])
    assert lo.tolist() == [51 / 100, 1 / 100, 100 / 100, 2 / 100]
    assert hi.tolist() == [51 / 100, 100 / 100, 1 / 100, 100 / 100]
    assert two_sided_p(ref, [50.0, 0.0, 1000.0, 1.0, 10.0]).tolist() == pytest.approx([1.0, 0.02, 0.02, 0.04, 0.22])
    assert combine([0.02, 0.5], [0.3, 1.0]).tolist() == [0.04, 1.0]
    assert combine([0.02, 0.5], [0.3, 1.0], [0.9, 0.1]).tolist() == pytest.approx([0.06, 0.3])


def test_flag_rate_is_alpha_on_in_distribution_draws():
    """20k test draws from the reference's distribution (20k reference draws): flagged at alpha
    within 4 binomial standard deviations (the statistics are independent here, so the rate is
    1 - (1 - alpha/2)^2, alpha - alpha^2/4, well inside that)."""
    ref = synthetic_reference(20_000, seed=0)
    rng = np.random.default_rng(1)
    m = 20_000
    bpd, llr = rng.normal(4.0, 0.3, m), rng.normal(1000.0, 200.0, m)
    for alpha in (0.05, 0.1):
        v = Detector(ref, alpha=alpha).test(bpd, llr)
        lo, hi = binomial_interval(m, alpha)
        assert lo <= v.flagged.sum() <= hi, (alpha, v.flagged.sum(), lo, hi)
        # p is super-uniform: P(p <= a) <= a for every a
        for a in (0.01, 0.2, 0.5):
            assert (v.p <= a).mean() <= a + 4 * math.sqrt(a * (1 - a) / m)


def test_flag_rate_with_several_k_is_alpha_on_in_distribution_draws():
    """Bonferroni over bits/dim and two LLRs (three independent statistics here): the rate is
    1 - (1 - alpha/3)^3, within 4 binomial standard deviations of alpha; p is super-uniform."""
    rng = np.random.default_rng(0)
    n = m = 20_000
    bpd, llr1, llr5 = rng.normal(4.0, 0.3, n), rng.normal(1000.0, 200.0, n), rng.normal(50.0, 9.0, n)
    ref = Reference(split="valid", K=1, l0=-bpd, bpd=bpd, lk={1: -bpd - llr1, 5: -bpd - llr5},
                    llr={1: llr1, 5: llr5}, k=[1, 5])
    assert ref.default_ks == (1, 5)
    rng = np.random.default_rng(1)
    test = {"bpd": rng.normal(4.0, 0.3, m), 1: rng.normal(1000.0, 200.0, m), 5: rng.normal(50.0, 9.0, m)}
    for alpha in (0.05, 0.1):
        v = Detector(ref, alpha=alpha).test(test["bpd"], {1: test[1], 5: test[5]})
        assert v.ks == (1, 5)
        lo, hi = binomial_interval(m, alpha)
        assert lo <= v.flagged.sum() <= hi, (alpha, v.flagged.sum(), lo, hi)
        np.testing.assert_array_equal(v.p, np.minimum(1, 3 * np.minimum(v.p_bpd, np.minimum(v.p_llr[1], v.p_llr[5]))))
        for a in (0.01, 0.2, 0.5):
            assert (v.p <= a).mean() <= a + 4 * math.sqrt(a * (1 - a) / m)
    with pytest.raises(ValueError, match="pass llr as"):
        Detector(ref).test(test["bpd"], test[1])


def test_an_image_atypical_on_one_k_only_is_flagged_by_the_detector_with_both():
    """Small k and large k see different things: an image typical on LLR>1 but far out on LLR>5
    passes the k = 1 detector and is flagged by the one with k = 1 and 5."""
    rng = np.random.default_rng(2)
    bpd, llr1, llr5 = rng.normal(4.0, 0.3, 2000), rng.normal(1000.0, 200.0, 2000), rng.normal(50.0, 9.0, 2000)
    ref = Reference(split="valid", K=1, l0=-bpd, bpd=bpd, lk={1: -bpd - llr1, 5: -bpd - llr5},
                    llr={1: llr1, 5: llr5}, k=1)
    image = ([4.0], {1: [1000.0], 5: [500.0]})
    assert not Detector(ref).test(image[0], image[1][1]).flagged[0]
    v = Detector(ref, k=[1, 5]).test(*image)
    assert v.flagged[0] and v.tails(ref)[1] == {1: ["typical"], 5: ["high"]}
    assert v.p[0] == pytest.approx(3 * 2 / 2001)


@pytest.mark.parametrize("codec", ["png", "jpeg2000"])
def test_compressed_bits_per_dim_is_small_for_a_flat_image_and_about_8_for_noise(codec):
    flat = torch.full((1, 3, 64, 64), 0.5)
    noise = torch.randint(0, 256, (1, 3, 64, 64), generator=torch.Generator().manual_seed(0)).float() / 255
    digit = (torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    b = compressed_bits_per_dim(torch.cat([flat, noise]), codec)
    assert b.shape == (2,) and b[0] < 0.2 and 7.9 < b[1] < 9.5          # noise does not compress
    # one grey channel of Bernoulli(0.2) pixels: a lossless code needs at least their entropy, 0.72 bits
    # (PNG stays near it; JPEG 2000's wavelets spend 11 bits on binary noise)
    assert 0.72 < float(compressed_bits_per_dim(digit, codec)[0]) < (4.0 if codec == "png" else 16.0)
    with pytest.raises(ValueError, match="codec must be one of"):
        compressed_bits_per_dim(flat, "gif")


def complexity_reference(n: int, seed: int) -> Reference:
    rng = np.random.default_rng(seed)
    bpd, llr, png = rng.normal(4.0, 0.3, n), rng.normal(1000.0, 200.0, n), rng.normal(5.0, 0.5, n)
    return Reference(split="valid", K=1, l0=-bpd, bpd=bpd, lk={1: -bpd - llr}, llr={1: llr}, k=1,
                     compressed={"png": png}, complexity="png")


def test_with_complexity_the_flag_rate_stays_at_most_alpha_and_a_too_simple_texture_is_flagged():
    ref = complexity_reference(20_000, seed=0)
    rng = np.random.default_rng(1)
    m = 20_000
    bpd, llr, png = rng.normal(4.0, 0.3, m), rng.normal(1000.0, 200.0, m), rng.normal(5.0, 0.5, m)
    det = Detector(ref)
    assert det.complexity and det.statistics == 3
    v = det.test(bpd, llr, compressed=png)
    np.testing.assert_allclose(v.cc["png"], bpd - png)
    np.testing.assert_array_equal(v.p, np.minimum(1, 3 * np.minimum(np.minimum(v.p_bpd, v.p_llr[1]), v.p_cc["png"])))
    assert 0.5 * 0.05 * m <= v.flagged.sum() <= binomial_interval(m, 0.05)[1]
    # typical bits/dim and LLR, but PNG finds the image far simpler than any reference image
    v = det.test([4.0, 4.0], [1000.0, 1000.0], compressed={"png": [1.0, 5.0]})
    assert v.flagged.tolist() == [True, False] and v.tails(ref)[2] == {"png": ["high", "typical"]}
    assert not Detector(ref, complexity=False).test([4.0], [1000.0]).flagged[0]
    with pytest.raises(ValueError, match="pass compressed"):
        det.test([4.0], [1000.0])
    with pytest.raises(ValueError, match="holds no png sizes"):
        Detector(synthetic_reference(50, seed=0), complexity="png")
    with pytest.raises(ValueError, match="holds no jpeg2000 sizes"):
        Detector(ref, complexity="jpeg2000")
    with pytest.raises(ValueError, match="complexity must be one or more of"):
        Detector(ref, complexity="zip")
    assert as_codecs("jpeg2000, png") == as_codecs(["png", "jpeg2000"]) == ("png", "jpeg2000")
    assert as_codecs("off") == as_codecs(None) == as_codecs(False) == ()


def correlated_reference(n: int, seed: int, combine: str = "density") -> Reference:
    """bits/dim and two codec sizes: each codec's size far from bits/dim, the two codecs close to
    each other (as for faces), LLR independent."""
    rng = np.random.default_rng(seed)
    bpd, llr, c = rng.normal(4.0, 0.3, n), rng.normal(1000.0, 200.0, n), rng.normal(1.0, 0.5, n)
    png, j2k = bpd + c + rng.normal(0, 0.05, n), bpd + c - 0.5 + rng.normal(0, 0.05, n)
    return Reference(split="valid", K=1, l0=-bpd, bpd=bpd, lk={1: -bpd - llr}, llr={1: llr}, k=1,
                     compressed={"png": png, "jpeg2000": j2k}, complexity=["png", "jpeg2000"], combine=combine)


def test_density_combination_flags_alpha_of_in_distribution_draws():
    """The joint density's conformal p-value: 3000 reference and 20k test draws of four correlated
    statistics, flagged at alpha within 4 binomial standard deviations, p uniform at other levels;
    the reference's atypicalities leave each image out."""
    ref = correlated_reference(3000, seed=0)
    test = correlated_reference(20_000, seed=1)
    m = 20_000
    sizes = {c: test.compressed[c] for c in ("png", "jpeg2000")}
    for alpha in (0.05, 0.1):
        det = Detector(ref, alpha=alpha)
        assert det.combine == "density" and det.statistics == 4 and det.codecs == ("png", "jpeg2000")
        v = det.test(test.bpd, test.llr[1], compressed=sizes)
        lo, hi = binomial_interval(m, alpha)
        assert lo <= v.flagged.sum() <= hi, (alpha, v.flagged.sum(), lo, hi)
        for a in (0.01, 0.2, 0.5):
            assert abs((v.p <= a).mean() - a) <= 4 * math.sqrt(a * (1 - a) / m)
    # leave one out: each reference image against the other N - 1 is what a new draw meets
    joint = det.joint
    s = np.stack([ref.bpd, ref.llr[1], ref.bpd - ref.compressed["png"], ref.bpd - ref.compressed["jpeg2000"]], 1)
    x = (s[:5] - joint.mean) / joint.std
    d2 = ((x[:, None] - joint.r[None]) ** 2).sum(-1) / (2 * joint.h ** 2)
    by_hand = [-np.log(np.mean(np.exp(-np.delete(row, i)))) for i, row in enumerate(d2)]
    assert joint.ref_atypicality[:5] == pytest.approx(by_hand, rel=1e-9)
    assert joint.h == pytest.approx(3000 ** (-1 / 8))


def test_density_combination_flags_a_combination_no_reference_image_shows():
    """Each statistic typical alone, their combination not: PNG says "simpler than its bits/dim",
    JPEG 2000 "more complex". Bonferroni over the marginals passes it; the joint density flags it,
    and also flags far outliers on either side, with the smallest p-value 1 / (N + 1)."""
    ref = correlated_reference(2000, seed=2)
    image = dict(bpd=[4.0, 4.0, 1.0, 9.0], llr=[1000.0] * 4,
                 compressed={"png": [5.0 + 0.8, 5.0, 2.0, 10.0], "jpeg2000": [4.5 - 0.8, 4.5, 1.5, 9.5]})
    density = Detector(ref).test(image["bpd"], image["llr"], compressed=image["compressed"])
    bonferroni = Detector(ref, combine="bonferroni").test(image["bpd"], image["llr"], compressed=image["compressed"])
    assert density.flagged.tolist() == [True, False, True, True]
    assert bonferroni.flagged.tolist() == [False, False, True, True]
    assert density.p[[0, 2, 3]].tolist() == [1 / 2001] * 3 and density.atypicality[2] < density.atypicality[3]
    assert all(q > 0.05 for q in (density.p_bpd[0], density.p_llr[1][0], density.p_cc["png"][0], density.p_cc["jpeg2000"][0]))
    with pytest.raises(ValueError, match="combine must be one of"):
        Detector(ref, combine="fisher")
    with pytest.raises(ValueError, match=r"pass compressed=\{codec: bits/dim\}"):
        Detector(ref).test([4.0], [1000.0], compressed=[5.0])


def test_each_verdict_names_its_side_and_the_statistic_that_decided():
    """Beyond each tail of each statistic the words say which way; typical images are "typical face";
    an image flagged by the joint density while every statistic alone is typical is described as
    a combination, naming two statistics."""
    ref = correlated_reference(2000, seed=2)
    bpd = [4.0, 1.0, 9.0, 4.0, 4.0, 4.0]
    llr = [1000.0, 1000.0, 1000.0, 3000.0, 1000.0, 1000.0]
    png = [5.0, 2.0, 10.0, 5.0, 5.0 + 0.8, 1.0]
    jpeg = [4.5, 1.5, 9.5, 4.5, 4.5 - 0.8, 4.5]
    v = Detector(ref).test(bpd, llr, compressed={"png": png, "jpeg2000": jpeg})
    words = findings(v, ref, noun="face")
    assert [f.flagged for f in words] == v.flagged.tolist() == [False, True, True, True, True, True]
    assert words[0].words == "typical face" and words[0].statistic == ""
    assert (words[1].words, words[1].statistic, words[1].side) == ("atypically simple for this model", "bits/dim", "low")
    assert (words[2].words, words[2].statistic, words[2].side) == ("atypically complex for this model", "bits/dim", "high")
    assert (words[3].statistic, words[3].side) == ("LLR>1", "high") and "more detail in levels 1-1" in words[3].words
    assert words[4].side == "together" and "no face has them together" in words[4].words
    assert words[4].statistic == "bits/dim - png bits/dim with bits/dim - jpeg2000 bits/dim"
    # typical bits/dim, an image PNG finds far simpler than a face of those bits/dim
    assert (words[5].statistic, words[5].side) == ("bits/dim - png bits/dim", "high")
    assert words[5].words == "atypically complex for this model, for what PNG makes of it"


@pytest.mark.parametrize("prior", ["sample", "mode"])
def test_flag_rate_of_a_model_on_its_own_samples(prior):
    """The model's own samples are in distribution by definition: with a reference of 300 of them,
    600 others are flagged at about alpha (the reference's own randomness widens the tolerance)."""
    model = live_model(tiny_config())
    draw = lambda n, seed: model.sample(n, seed=seed, sample_pixels=True)  # noqa: E731
    ref = build_reference(model, draw(300, 1), [1, 2], 1, k=2, seed=10, prior=prior)
    assert ref.prior == prior
    det = Detector(ref, alpha=0.1)
    v = det.score(model, draw(600, 2), seed=20)
    assert 0.1 * 600 * 0.4 <= v.flagged.sum() <= 0.1 * 600 * 1.8


def test_simpler_and_more_complex_than_the_reference_are_both_flagged():
    ref = synthetic_reference(2000, seed=3)
    det = Detector(ref)
    v = det.test([1.0, 9.0, 4.0], [1000.0, 1000.0, 1000.0])   # far simpler, far more complex, typical
    assert v.flagged.tolist() == [True, True, False]
    assert v.tails(ref)[0] == ["low", "high", "typical"]
    assert v.p[0] == pytest.approx(4 / 2001) and v.score[0] == pytest.approx(-math.log10(4 / 2001))
    v = det.test([4.0, 4.0], [-5000.0, 5000.0])               # the LLR alone, on either side
    assert v.flagged.tolist() == [True, True] and v.tails(ref)[1] == {1: ["low", "high"]}


@pytest.mark.skipif(not (ROOT / "weights" / "celeba64" / "reference.json").is_file(), reason="no shipped face model")
def test_the_face_model_flags_a_digit_low_and_noise_high(tmp_path):
    """The shipped face model against its shipped reference: an MNIST digit is far simpler than a
    face (bits/dim below every reference image), uniform noise far more complex; faces pass."""
    from PIL import Image
    from studio.engine import Studio
    studio = Studio([ROOT / "weights" / "celeba64"], workdir=tmp_path / "out")
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(noise)
    ex = studio.examples("celeba64", ood=True)
    digit = [e for e in ex if "mnist" in e][0]
    faces = [e for e in ex if "celeba_test" in e]
    assert len(faces) == 6
    r = studio.anomaly("celeba64", [digit, str(noise), *faces], maps=False)
    verdicts = [row[1] for row in r.rows]
    assert verdicts[:2] == ["ANOMALY", "ANOMALY"]
    # about 6% of test faces are flagged (docs/detector.md): at most one of six (5% chance of two or more)
    assert verdicts[2:].count("ANOMALY") <= 1, verdicts
    assert "(low)" in r.rows[0][4] and "(high)" in r.rows[1][4]


@pytest.mark.skipif(not (ROOT / "weights" / "fashion_mnist_binary" / "reference.json").is_file(),
                    reason="no shipped binarized FashionMNIST model")
def test_the_binary_fashion_model_flags_its_digits_and_noise_and_passes_its_clothes(tmp_path):
    """The shipped detector (K = 16, LLR>4 with z_{<=4} at the prior mean, docs/detector.md) on the
    model's shipped examples: the MNIST digits and the noise image are flagged, the
    FashionMNIST test images are not."""
    from studio.engine import Studio
    studio = Studio([ROOT / "weights" / "fashion_mnist_binary"], workdir=tmp_path / "out")
    ref = studio.entries["fashion_mnist_binary"].reference
    assert (ref.K, ref.prior, ref.default_ks) == (16, "mode", (4,))
    ex = studio.examples("fashion_mnist_binary", ood=True)
    r = studio.anomaly("fashion_mnist_binary", ex, maps=False)
    verdicts = {row[0]: row[1] for row in r.rows}
    assert len(verdicts) == len(ex) >= 6
    for name, verdict in verdicts.items():
        assert verdict == ("ANOMALY" if name.startswith("ood_") else "typical"), (name, verdict)


def test_a_reference_of_another_K_is_refused():
    det = Detector(synthetic_reference(50, seed=0, K=4))
    det.check_K(4)
    with pytest.raises(ValueError, match="made with K=4 .* K=1 are not comparable"):
        det.check_K(1)
    model = live_model(tiny_config())
    with pytest.raises(ValueError, match="made with K=4"):
        det.score(model, images(model.config, 2), K=1)
    with pytest.raises(ValueError, match=r"holds LLR>k for k in \[1\], not k=\[2\]"):
        Detector(synthetic_reference(50, seed=0), k=2)


def test_a_reference_of_the_other_prior_is_refused(tmp_path):
    """LLR^{>k} with z_{<=k} drawn and at the prior mean are different statistics: a reference of
    one refuses scores of the other, and an older file (no "prior") reads as drawn."""
    model = live_model(tiny_config())
    ref = build_reference(model, images(model.config, 6), [1, 2], 1, k=2, prior="mode")
    det = Detector(Reference.read(ref.write(tmp_path)))
    assert det.ref.prior == "mode"
    det.check_prior("mode")
    with pytest.raises(ValueError, match='prior="mode"; scores made with prior="sample" are a different statistic'):
        det.score(model, images(model.config, 2), prior="sample")
    assert det.score(model, images(model.config, 2)).p.shape == (2,)     # default: the reference's prior
    data = json.loads((tmp_path / "reference.json").read_text())
    del data["prior"]
    (tmp_path / "reference.json").write_text(json.dumps({**data, "format_version": 2}))
    assert Reference.read(tmp_path).prior == "sample"
    with pytest.raises(ValueError, match="prior must be one of"):
        build_reference(model, images(model.config, 2), [1], 1, prior="median")


def test_reference_round_trip_and_errors(tmp_path):
    model = live_model(tiny_config())
    ref = build_reference(model, images(model.config, 6), [1, 2], 3, k=2, note="six images", seed=5)
    assert ref.K == 3 and ref.ks == [1, 2] and ref.default_ks == (2,) and ref.images == 6
    np.testing.assert_allclose(ref.llr[1], ref.l0 - ref.lk[1])
    back = Reference.read(ref.write(tmp_path))
    assert back.K == 3 and back.default_ks == (2,) and back.note == "six images" and back.seed == 5
    both = Reference.read(build_reference(model, images(model.config, 6), [1, 2], 3, k=[2, 1]).write(tmp_path / "2" / "reference.json"))
    assert both.default_ks == (1, 2) and json.loads((tmp_path / "2" / "reference.json").read_text())["detector"]["k"] == [1, 2]
    for a, b in ((ref.l0, back.l0), (ref.bpd, back.bpd), (ref.llr[2], back.llr[2])):
        np.testing.assert_array_equal(a, b)
    assert Reference.read(tmp_path / "nothing") is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "reference.json").write_text('{"K": 1, "bpd": [1, 2]}')
    with pytest.raises(ValueError, match="not a valid reference file"):
        Reference.read(tmp_path / "bad")
    data = json.loads((tmp_path / "reference.json").read_text())
    assert set(data["compressed_bpd"]) == {"png", "jpeg2000"} and "complexity" not in data["detector"]  # recorded only
    assert data["detector"]["combine"] == "bonferroni" and back.combine == "bonferroni"
    for codec in ("png", "jpeg2000"):
        np.testing.assert_array_equal(back.compressed[codec], ref.compressed[codec])
    cx = Reference.read(build_reference(model, images(model.config, 6), [1], 1, complexity="jpeg2000")
                        .write(tmp_path / "3" / "reference.json"))
    assert cx.complexity == ("jpeg2000",) and Detector(cx).codecs == ("jpeg2000",) and not Detector(cx, complexity="off").complexity
    two = Reference.read(build_reference(model, images(model.config, 6), [1], 1, complexity=["png", "jpeg2000"],
                                         combine="density").write(tmp_path / "4" / "reference.json"))
    assert two.complexity == ("png", "jpeg2000") and two.combine == "density" and Detector(two).joint is not None
    assert json.loads((tmp_path / "4" / "reference.json").read_text())["detector"]["complexity"] == ["png", "jpeg2000"]
    old = {**data, "detector": {"k": 1, "complexity": "png"}}          # references before commit e8d4e65: one codec as a string
    (tmp_path / "5").mkdir()
    (tmp_path / "5" / "reference.json").write_text(json.dumps(old))
    assert Reference.read(tmp_path / "5").complexity == ("png",) and Reference.read(tmp_path / "5").combine == "bonferroni"
    (tmp_path / "5" / "reference.json").write_text(json.dumps({**data, "detector": {"k": 1, "combine": "mean"}}))
    with pytest.raises(ValueError, match="combine must be one of"):
        Reference.read(tmp_path / "5")
    missing = {key: v for key, v in data.items() if key != "compressed_bpd"}
    (tmp_path / "bad" / "reference.json").write_text(json.dumps({**missing, "detector": {"k": 1, "complexity": "png"}}))
    with pytest.raises(ValueError, match="holds no compressed_bpd for it"):
        Reference.read(tmp_path / "bad")
    (tmp_path / "bad" / "reference.json").write_text(json.dumps({**data, "detector": {"k": [1, 7]}}))
    with pytest.raises(ValueError, match=r"k=\[1, 7\] has no LLR scores"):
        Reference.read(tmp_path / "bad")


@pytest.mark.parametrize("prior", ["sample", "mode"])
@pytest.mark.parametrize("kind", ["dmol", "bernoulli"])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_pixel_maps_sum_to_the_bound(kind, k, prior):
    """sum over pixels of -log2 p(x_ij | z) plus the KL terms above k = -log2 of the draw's weight:
    the ELBO for k = 0, the K = 1 estimate of L^{>k} otherwise (same seed, same draw)."""
    model = live_model(tiny_config(kind=kind))
    x = images(model.config, 3)
    m = model.pixel_map(x, k, seed=9, prior=prior)
    c, h, w = model.config.image_shape
    assert m["bits"].shape == (3, h, w) and (m["bits"] >= 0).all()
    total = m["bits"].sum((1, 2)) + m["kl_bits"]
    if k == 0:
        want = -model.elbo(x, seed=9)["elbo"] / math.log(2)
    else:
        with torch.no_grad():  # one draw of L^{>k}'s weight with the same seed
            want = -model.log_weight(x, k=k, generator=torch.Generator().manual_seed(9), prior=prior) / math.log(2)
    assert torch.allclose(total, want, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="k must be in"):
        model.pixel_map(x, model.config.L)
