"""Semi-supervised BIVA (spec section 5): the bounds' identities, the objective with one class, the
label draw, the operations of a model with classes, and a tiny model that learns to classify."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from biva_core import BIVA
from biva_core.io.checkpoint import load_pretrained, save_pretrained
from biva_core.train.semisupervised import consistency_term, draw_labels, error_rate, jitter, objective, unlabelled_bound
from biva_core.train.config import Consistency, SemiSupervised
from biva_core.train.trainer import TrainConfig, Trainer

from conftest import images, live_model, tiny_config

CLASSES = 3


def class_model(kind: str = "dmol", classes: int = CLASSES, variant: str = "biva") -> BIVA:
    return live_model(tiny_config(variant, kind).replace(classes=classes))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- the bounds

def test_unlabelled_bound_is_logsumexp_at_the_softmax_and_below_it_otherwise():
    g = gen(1)
    bounds_xy = 50 * torch.randn(6, 5, generator=g, dtype=torch.float64) - 300
    exact = torch.logsumexp(bounds_xy, -1)
    assert torch.allclose(unlabelled_bound(bounds_xy, bounds_xy), exact, rtol=0, atol=1e-9)
    for _ in range(5):
        other = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
        gap = exact - unlabelled_bound(bounds_xy, other)
        assert (gap > 0).all(), gap


@pytest.mark.parametrize("variant", ["biva", "lvae+", "lvae"])
def test_model_U_equals_log_sum_exp_of_class_bounds_when_q_is_their_softmax(variant):
    model = class_model(variant=variant)
    x = images(model.config, 4)
    with torch.no_grad():
        bounds_xy, logits = model.class_bounds(x, generator=gen(2))               # (4, C)
        assert bounds_xy.shape == logits.shape == (4, CLASSES)
        exact = torch.logsumexp(bounds_xy.double(), -1)
        assert torch.allclose(unlabelled_bound(bounds_xy.double(), bounds_xy.double()), exact, atol=1e-9)
        assert (unlabelled_bound(bounds_xy.double(), logits.double()) < exact).all()


@pytest.mark.parametrize("variant", ["biva", "lvae+"])
@torch.no_grad()
def test_every_class_is_scored_with_the_same_noise(variant):
    """class_bounds over all classes uses one draw for every class (common random numbers): column
    c is exactly L(x, c) with the same seed, and when the model ignores y all columns are equal
    (with independent draws they would differ by the draw: nats, not rounding)."""
    model = class_model(variant=variant)
    x = images(model.config, 4)
    every, _ = model.class_bounds(x, generator=gen(3))
    for c in range(CLASSES):
        given, _ = model.class_bounds(x, torch.full((4,), c), generator=gen(3))
        torch.testing.assert_close(every[:, c], given)
    zin = model.gen_zin[model.config.L - 2].proj
    zin.weight[:, -CLASSES:] = 0                                       # y's columns: y ignored
    every, _ = model.class_bounds(x, generator=gen(3))
    assert torch.allclose(every, every[:, :1].expand_as(every), atol=1e-4)
    td = lambda tie: model.top_down(model.bottom_up(model.prepare(x)[0], generator=gen(4)).repeat(2),  # noqa: E731
                                    generator=gen(5), y=torch.zeros(8, dtype=torch.long), tie=tie)
    for i in (1 if model.biva else 0, -1):  # level 1's top-down z and z_L: one draw per pair iff tied
        assert torch.equal(td(2).z[i][0::2], td(2).z[i][1::2]) and not torch.allclose(td(1).z[i][0::2], td(1).z[i][1::2])


@pytest.mark.parametrize("variant", ["biva", "lvae+"])
@torch.no_grad()
def test_y_joins_at_the_top_alone_and_the_top_posterior_does_not_read_it(variant):
    """Spec section 5: the top-down path starts from [z_L, y] and y enters nowhere else (only the
    input of the level below the top is wider than in a model without classes), and q(z_L | x) is
    one posterior for every class: the same image and bottom-up pass give the same q(z_L | x)."""
    model = class_model(variant=variant)
    plain = live_model(tiny_config(variant))
    L = model.config.L
    width = lambda m: [m.gen_zin[j].proj.weight.shape[1] for j in range(L - 1)] + [m.out_zin.proj.weight.shape[1]]  # noqa: E731
    assert [a - b for a, b in zip(width(model), width(plain))] == [0] * (L - 2) + [CLASSES] + [0]
    assert [p.shape for p in model.q_top_head.parameters()] == [p.shape for p in plain.q_top_head.parameters()]
    bu = model.bottom_up(model.prepare(images(model.config, 2))[0], generator=gen(6))
    tops = [model.top_down(bu, y=torch.full((2,), c), generator=gen(7)).q[-1][0] for c in range(CLASSES)]
    assert all(torch.equal(tops[0], t) for t in tops)


def test_with_one_class_the_objective_is_the_ordinary_elbo_and_its_free_bits_loss():
    from biva_core.model import bounds
    model = class_model(classes=1)
    x = images(model.config, 5)
    D = model.config.dims
    for free_bits in (0.0, 2.0):
        loss, stats = objective(model, x, n_unlabelled=5, alpha=123.0, free_bits=free_bits, generator=gen(4))
        log_px, kl = model(x, y=torch.zeros(5, dtype=torch.long), generator=gen(4))
        assert float(kl[-1].abs().max()) == 0.0                                 # log q(y) - log p(y) = log 1
        want = bounds.free_bits_loss(log_px, kl[:-1], free_bits).mean() / D
        assert torch.allclose(loss, want, rtol=1e-5), (float(loss), float(want))
        if free_bits == 0:
            assert torch.allclose(stats["U"], (log_px - sum(kl)).mean(), rtol=1e-5)


def test_objective_scales_each_part_to_its_set_and_weights_the_labels_by_alpha():
    model = class_model()
    x_u, x_l = images(model.config, 4, seed=1), images(model.config, 3, seed=2)
    y_l = torch.tensor([0, 2, 1])
    kw = dict(n_unlabelled=40, n_labelled=6, free_bits=0.0)
    loss0, _ = objective(model, x_u, x_l, y_l, alpha=0.0, generator=gen(5), **kw)
    loss1, st = objective(model, x_u, x_l, y_l, alpha=10.0, generator=gen(5), **kw)
    # the same draws: the difference is the classification term alone, (6 / 3) * 10 * sum log q
    log_q = -st["ce"] * 3
    assert torch.allclose((loss0 - loss1) * 46 * model.config.dims, 2 * 10 * log_q, rtol=1e-4)


# ---------------------------------------------------------------- consistency (beyond the spec)

def test_jitter_moves_binary_images_and_keeps_them_binary():
    x = (torch.rand(6, 1, 28, 28, generator=gen(0)) < 0.3).float()
    assert torch.equal(jitter(x, shift=0, rotate=0, generator=gen(1)), x)       # no move: the image itself
    moved = jitter(x, shift=3, rotate=15, generator=gen(1))
    assert moved.shape == x.shape and set(moved.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(moved, x) and torch.equal(moved, jitter(x, shift=3, rotate=15, generator=gen(1)))
    dot = torch.zeros(1, 1, 28, 28)
    dot[..., 14, 14] = 1
    # a shift alone (no rotation) moves a single pixel by at most 3 pixels each way, and keeps it
    y, x_ = torch.nonzero(jitter(dot, shift=3, rotate=0, generator=gen(2))[0, 0], as_tuple=True)
    assert len(y) == 1 and abs(int(y) - 14) <= 3 and abs(int(x_) - 14) <= 3


def test_elastic_jitter_bends_within_its_strength_and_keeps_images_binary():
    x = (torch.rand(6, 1, 28, 28, generator=gen(0)) < 0.3).float()
    bent = jitter(x, shift=0, rotate=0, elastic=8, sigma=3, generator=gen(1))
    assert bent.shape == x.shape and set(bent.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(bent, x) and torch.equal(bent, jitter(x, shift=0, rotate=0, elastic=8, sigma=3,
                                                                 generator=gen(1)))
    # the smoothed field is an average of noise in [-1, 1]: no pixel moves more than `elastic` pixels
    # each way (+ 1 for the nearest-neighbour rounding), and without a field nothing moves at all
    for seed in range(20):
        dot = torch.zeros(1, 1, 28, 28)
        dot[..., 14, 14] = 1
        ys, xs = torch.nonzero(jitter(dot, shift=0, rotate=0, elastic=4, sigma=2, generator=gen(seed))[0, 0],
                               as_tuple=True)
        assert len(ys) <= 4 and all(abs(int(a) - 14) <= 5 for a in torch.cat([ys, xs]))
    assert torch.equal(jitter(x, shift=0, rotate=0, elastic=0, generator=gen(1)), x)


def test_consistency_term_is_the_confident_pseudo_labels_log_q_and_trains_only_the_classifier():
    model = class_model()
    x = images(model.config, 5, seed=1)
    x_aug = jitter(x, shift=1, rotate=5, generator=gen(3))
    term, st = consistency_term(model, x, x_aug, threshold=1e-6, generator=gen(4))   # every image confident
    with torch.no_grad():
        y_hat = model.classify(x).argmax(-1)
        logits = model.class_logits(model.bottom_up(model.prepare(x_aug)[0], generator=gen(4)))
    assert torch.allclose(term, logits.log_softmax(-1).gather(1, y_hat[:, None]).squeeze(1), atol=1e-5)
    assert st["mask"] == 1.0
    none, st = consistency_term(model, x, x_aug, threshold=1.0, generator=gen(4))      # a 3-class q below 1
    assert torch.equal(none, torch.zeros(5)) and st["mask"] == 0.0
    x_u = images(model.config, 4, seed=2)
    term, _ = consistency_term(model, x, x_aug, threshold=1e-6, generator=gen(5))
    model.zero_grad(set_to_none=True)
    (-(term.mean())).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for n, p in model.named_parameters()
               if n.startswith(("gen_", "out_conv", "p_heads", "q_td_heads", "q_merge")))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.classifier.parameters())
    with pytest.raises(ValueError, match="needs labelled images"):
        objective(model, x_u, n_unlabelled=40, alpha=1.0, consistency=1.0, x_c=x, x_c_aug=x_aug)


def test_consistency_term_takes_its_pseudo_labels_from_the_teacher():
    """A teacher sure of class 2 for every image (its classifier's bias) sets every pseudo-label to
    2, whatever the student thinks: the term is the student's log q(2 | x_aug)."""
    model, teacher = class_model(), class_model()
    with torch.no_grad():
        teacher.classifier[-1].bias.copy_(torch.tensor([-50.0, -50.0, 50.0]))
    x = images(model.config, 5, seed=1)
    x_aug = jitter(x, shift=1, rotate=5, generator=gen(3))
    term, st = consistency_term(model, x, x_aug, threshold=0.99, teacher=teacher, generator=gen(4))
    with torch.no_grad():
        logits = model.class_logits(model.bottom_up(model.prepare(x_aug)[0], generator=gen(4)))
    assert st["mask"] == 1.0
    assert torch.allclose(term, logits.log_softmax(-1)[:, 2], atol=1e-5)
    assert not torch.allclose(term, consistency_term(model, x, x_aug, threshold=1e-6, generator=gen(4))[0])


def test_objective_adds_the_consistency_term_with_its_weight():
    """With the generator's draws the same, the objective with the term differs from the one
    without by consistency * alpha * n_labelled * mean(term) / (N D) exactly."""
    model = class_model()
    x, x_u = images(model.config, 5, seed=1), images(model.config, 4, seed=2)
    x_l, y_l = images(model.config, 3, seed=5), torch.tensor([0, 2, 1])
    x_aug = jitter(x, shift=1, rotate=5, generator=gen(3))
    kw = dict(n_unlabelled=40, n_labelled=6, alpha=10.0, x_l_aug=x_l, x_c=x, x_c_aug=x_aug, threshold=1e-6)
    g = gen(5)
    base, _ = objective(model, x_u, x_l, y_l, generator=g, **kw)
    term, _ = consistency_term(model, x, x_aug, threshold=1e-6, generator=g)   # the draws the term would take
    with_c, _ = objective(model, x_u, x_l, y_l, consistency=0.5, generator=gen(5), **kw)
    expected = base - 0.5 * 10.0 * 6 * term.mean() / (46 * model.config.dims)
    assert torch.allclose(with_c, expected, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- the labels

def test_label_draw_is_balanced_seeded_and_refuses_short_classes():
    labels = np.random.default_rng(0).integers(0, 10, 5000)
    a, b, c = draw_labels(labels, 10, seed=0), draw_labels(labels, 10, seed=0), draw_labels(labels, 10, seed=1)
    assert len(a) == 100 and len(set(a.tolist())) == 100
    assert np.bincount(labels[a], minlength=10).tolist() == [10] * 10
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="class 3 has 2 training images"):
        draw_labels(np.array([0] * 20 + [3] * 2), 5, seed=0)


# ---------------------------------------------------------------- operations with a class

@pytest.mark.parametrize("variant", ["biva", "lvae+"])
def test_operations_with_classes(variant):
    model = class_model(variant=variant)
    x = images(model.config, 2)
    probs = model.classify(x)
    assert probs.shape == (2, CLASSES) and torch.allclose(probs.sum(-1), torch.ones(2), atol=1e-6)
    # resampling at k = 0 is reconstruction, with the predicted class or a given one
    assert torch.allclose(model.resample(x, 0, 2, seed=0)[:, 0], model.reconstruct(x), atol=1e-6)
    assert torch.allclose(model.resample(x, 0, 2, seed=0, label=1)[:, 1], model.reconstruct(x, label=1), atol=1e-6)
    # the class changes what is drawn: the same seed, other classes, other images
    s0, s1 = model.sample(3, seed=0, label=0), model.sample(3, seed=0, label=2)
    assert s0.shape == (3, *model.config.image_shape) and not torch.allclose(s0, s1)
    assert torch.equal(model.sample(3, seed=0, label=[0, 0, 0]), s0)
    assert model.resample(x, model.config.L, 2, seed=0, label=[0, 1]).shape == (2, 2, *model.config.image_shape)
    assert model.interpolate(x[:1], x[1:], 1, steps=3).shape == (3, *model.config.image_shape)
    # the bound's last term is the class's: the list is one longer than the latents
    out = model.elbo(x, seed=0)
    assert out["kl"].shape == (2, model.config.n_latents + 1) and len(model.latent_names()) == out["kl"].shape[1]
    assert torch.isfinite(model.iw_bound(x, K=3, seed=0)).all()
    sc = model.scores(x, [1], seed=0)
    assert torch.isfinite(sc.llr[1]).all()
    with pytest.raises(ValueError, match=r"labels must be in 0..2"):
        model.sample(2, label=3)
    with pytest.raises(ValueError, match="expected 1 or 2 labels"):
        model.sample(2, label=[0, 1, 2])
    with pytest.raises(ValueError, match="no classes"):
        live_model(tiny_config()).sample(2, label=0)


@pytest.mark.parametrize("variant", ["biva", "lvae+"])
def test_a_model_with_classes_saves_and_loads_exactly(tmp_path, variant):
    model = class_model(variant=variant)
    save_pretrained(model, tmp_path)
    again = load_pretrained(tmp_path)
    x = images(model.config, 2)
    assert again.config == model.config and again.config.classes == CLASSES
    assert torch.equal(model.iw_bound(x, K=2, seed=1), again.iw_bound(x, K=2, seed=1))
    assert torch.equal(model.classify(x), again.classify(x))
    assert torch.equal(model.sample(2, seed=3, label=1), again.sample(2, seed=3, label=1))


# ---------------------------------------------------------------- training

def toy_set(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two separable classes of 1 x 8 x 8 binary images: the top or the bottom half mostly on."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    top = np.repeat(np.where(np.arange(8) < 4, 0.9, 0.1)[:, None], 8, axis=1)   # (8, 8)
    p = np.where(y[:, None, None] == 0, top, top[::-1])                         # class 1: bottom on
    return (rng.random((n, 1, 8, 8)) < p[:, None]).astype(np.uint8), y


def test_a_tiny_model_learns_to_classify_a_separable_toy_set_from_four_labels(tmp_path):
    cfg = tiny_config(kind="bernoulli").replace(classes=2)
    train, train_y = toy_set(400, 0)
    valid, valid_y = toy_set(200, 1)
    # alpha = 10 N: four labels among 400 images need a strong classification term (at the spec's
    # 0.1 N this toy stays at 25-40% error after 150 steps: measured)
    tc = TrainConfig(steps=60, batch_size=16, lr=3e-3, warmup=10, log_every=20, eval_every=30,
                     eval_images=200, ckpt_minutes=1e9, flip=False, num_threads=1, free_bits=0.0,
                     ssl=SemiSupervised(labels=4, labelled_batch=4, alpha=10.0))
    t = Trainer(cfg, tc, train, valid, tmp_path, log=lambda m: None, train_labels=train_y, valid_labels=valid_y)
    assert len(t.batches.labelled) == 4 and np.bincount(t.batches.labelled_y.numpy()).tolist() == [2, 2]
    assert len(t.batches.train) == 396                                     # the labelled four are kept apart
    before = error_rate(t.model, valid, valid_y)
    t.run(progress=False)
    after = error_rate(load_pretrained(tmp_path), valid, valid_y)
    assert before > 0.3 and after <= 0.05, (before, after)
    meta = json_of(tmp_path / "config.json")["training"]
    assert meta["best_valid_error"] == pytest.approx(after, abs=1e-9)      # chosen by valid error
    assert meta["labelled_index"] == t.batches.label_index.tolist() and len(meta["labelled_index"]) == 4


def test_training_with_the_consistency_term_logs_its_share_of_confident_images(tmp_path):
    cfg = tiny_config(kind="bernoulli").replace(classes=2)
    train, train_y = toy_set(100, 0)
    tc = TrainConfig(steps=4, batch_size=8, lr=3e-3, warmup=1, log_every=2, eval_every=4, eval_images=20,
                     ckpt_minutes=1e9, flip=False, num_threads=1, free_bits=0.0,
                     ssl=SemiSupervised(labels=4, labelled_batch=4, alpha=10.0, consistency=Consistency(
                         weight=1.0, threshold=0.5, batch=6, shift=1, rotate=0)))
    Trainer(cfg, tc, train, train[:20], tmp_path, log=lambda m: None, train_labels=train_y,
            valid_labels=train_y[:20]).run(progress=False)
    import json
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "train_mask" in r]
    assert len(logged) == 2 and all(0.0 <= r["train_mask"] <= 1.0 and 0.0 <= r["train_pseudo_agree"] <= 1.0
                                    for r in logged)
    # a two-class q always puts >= 0.5 on one class: every image is confident at threshold 0.5
    assert all(r["train_mask"] == 1.0 for r in logged)


def test_training_with_an_ema_teacher_elastic_views_and_the_whole_valid_split_for_its_error(tmp_path):
    cfg = tiny_config(kind="bernoulli").replace(classes=2)
    train, train_y = toy_set(100, 0)
    valid, valid_y = toy_set(50, 1)
    tc = TrainConfig(steps=2, batch_size=8, lr=3e-3, warmup=1, log_every=1, eval_every=2, eval_images=20,
                     eval_error_images=-1, ckpt_minutes=1e9, flip=False, num_threads=1, free_bits=0.0,
                     ssl=SemiSupervised(labels=4, labelled_batch=4, alpha=10.0, consistency=Consistency(
                         weight=1.0, threshold=0.5, batch=6, shift=1, rotate=0, elastic=2, teacher="ema")))
    t = Trainer(cfg, tc, train, valid, tmp_path, log=lambda m: None, train_labels=train_y, valid_labels=valid_y)
    t.run(progress=False)
    import json
    row = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
    assert row["valid_images"] == 20 and row["valid_error_images"] == 50 == row["raw_valid_error_images"]
    assert row["valid_error"] == pytest.approx(error_rate(t.ema, valid, valid_y), abs=1e-12)
    for bad, match in ((dict(teacher="mean"), "ssl.consistency.teacher="),
                       (dict(elastic=-1.0), "ssl.consistency.elastic="),
                       (dict(threshold=1.5), "ssl.consistency.threshold=")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(num_threads=1, ssl=SemiSupervised(labels=4, consistency=Consistency(weight=1.0, **bad)))


def json_of(path):
    import json
    return json.loads(path.read_text())


def test_labels_need_a_model_with_classes(tmp_path):
    x, y = toy_set(20, 0)
    with pytest.raises(ValueError, match="needs a model with classes"):
        Trainer(tiny_config(kind="bernoulli"), TrainConfig(ssl=SemiSupervised(labels=4), num_threads=1), x, x,
                tmp_path, log=lambda m: None, train_labels=y)
    with pytest.raises(ValueError, match=r"ssl.consistency.weight=1.0 needs labels \(ssl.labels, --labels N\)"):
        SemiSupervised(consistency=Consistency(weight=1.0))
    with pytest.raises(ValueError, match="ssl.labels=3 must be a multiple of the 2 classes"):
        Trainer(tiny_config(kind="bernoulli").replace(classes=2), TrainConfig(ssl=SemiSupervised(labels=3), num_threads=1),
                x, x, tmp_path, log=lambda m: None, train_labels=y)
