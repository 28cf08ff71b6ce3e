import jax
import numpy as np
import optax
import pytest

from oodgen.errors import OodgenError
from oodgen.models.likelihoods import bits_per_dim
from oodgen.models.hvae import HVAEModel
from oodgen.models.vae import VAEModel
from oodgen.scorers.regret import LikelihoodRegretScorer, optimise_encoder, regret_per_example, split_encoder
from oodgen.sharding import example_keys

VAE = VAEModel(image_shape=(8, 8, 1), latent_dim=3, channels=(4,))
HVAE = HVAEModel(image_shape=(8, 8, 1), width=4, dense_width=8, latent_channels=(2,), latent_units=(3, 2))
LR, WD = 1e-2, 5e-5  # a larger step than the reference's 2e-4, so a few steps move the bound


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 1)).astype(np.uint8)


@pytest.fixture(scope="module")
def vae_params():
    return jax.jit(VAE.init)(jax.random.key(0), _images(2))


# The inference networks' parameters, written out by hand: the bottom-up pass and the posterior heads.
VAE_ENCODER = {"encoder/Conv_0", "encoder/Dense_0"}
HVAE_ENCODER = {"encoder/down_0", "encoder/up_blocks_0_0", "encoder/down_to_dense", "encoder/to_dense",
                "encoder/up_dense_0", "encoder/up_dense_1", "encoder/posteriors_0", "encoder/posteriors_1",
                "encoder/posteriors_2"}
HVAE_GENERATIVE = {"decoder/priors_0", "decoder/priors_1", "decoder/z_in_0", "decoder/z_in_1", "decoder/z_in_2",
                   "decoder/down_blocks_0_0", "decoder/down_blocks_1_0", "decoder/down_blocks_2_0",
                   "decoder/upsample_0", "decoder/from_dense", "decoder/up_from_dense", "decoder/out"}


def _modules(tree) -> set[str]:
    """'group/module' of every leaf of a parameter tree."""
    return {"/".join(str(k.key) for k in path[:2]) for path, _ in jax.tree_util.tree_leaves_with_path(tree)}


def _random_hvae_params():
    shapes = jax.eval_shape(HVAE.init, jax.random.key(0), _images(2))  # random weights: HVAE init compiles slowly
    leaves, tree = jax.tree.flatten(shapes)
    rng = np.random.default_rng(0)
    return jax.tree.unflatten(tree, [0.1 * rng.standard_normal(a.shape).astype(np.float32) for a in leaves])


def loop_regret(model, num_steps, params, images, keys, num_samples):
    """One image at a time, as the reference: copy the encoder, Adam + L2 decay on its ELBO, bound again."""
    grad = jax.jit(jax.grad(lambda p, x, k: model.loss(p, x[None], k[None])[0]))
    bound = jax.jit(lambda p, x, k: model.log_prob(p, x[None], k[None], num_samples)[0])
    regrets = []
    for image, key in zip(images, keys):
        encoder = {"encoder": params["encoder"]}
        optimizer = optax.chain(optax.add_decayed_weights(WD), optax.adam(LR))
        state = optimizer.init(encoder)
        step_keys = jax.random.split(jax.random.fold_in(key, 1), num_steps)
        for t in range(num_steps):
            g = grad({**params, **encoder}, image, step_keys[t])
            updates, state = optimizer.update({n: g[n] for n in encoder}, state, encoder)
            encoder = optax.apply_updates(encoder, updates)
        regrets.append(float(bound({**params, **encoder}, image, key) - bound(params, image, key)))
    return np.asarray(regrets)


def test_vmapped_regret_equals_loop_over_examples(vae_params):
    images = _images(3, seed=1)
    keys = example_keys(jax.random.key(3), np.arange(3))
    got = regret_per_example(VAE, 4, LR, WD, 2, vae_params, images, keys)
    expected = loop_regret(VAE, 4, vae_params, images, keys, 2)
    assert np.abs(expected).max() > 1e-2  # the steps did move the bound
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=2e-4)


def test_hierarchical_vae():
    params = _random_hvae_params()
    regret = np.asarray(regret_per_example(HVAE, 3, LR, WD, 2, params, _images(3, seed=1),
                                           example_keys(jax.random.key(3), np.arange(3))))
    assert regret.shape == (3,) and np.all(np.isfinite(regret)) and np.abs(regret).max() > 1e-3


def test_regret_is_positive_on_average_and_zero_without_steps(vae_params):
    images = _images(16, seed=2)
    keys = example_keys(jax.random.key(4), np.arange(16))
    regret = np.asarray(regret_per_example(VAE, 20, 3e-3, WD, 16, vae_params, images, keys))
    assert np.all(np.isfinite(regret)) and regret.mean() > 0
    none = regret_per_example(VAE, 0, 3e-3, WD, 16, vae_params, images, keys)
    np.testing.assert_array_equal(none, np.zeros(16, np.float32))


def test_the_encoder_is_the_inference_network(vae_params):
    """The encoder partition equals the hand-written inference networks; the HVAE's top-down blocks
    (`decoder/down_blocks_*`, which a `down_` name prefix also caught) are generative."""
    encoder, frozen = split_encoder(VAE, vae_params)
    assert _modules(encoder) == VAE_ENCODER and _modules(frozen) == {"decoder/Conv_0", "decoder/Dense_0"}
    encoder, frozen = split_encoder(HVAE, _random_hvae_params())
    assert _modules(encoder) == HVAE_ENCODER and _modules(frozen) == HVAE_GENERATIVE


@pytest.mark.parametrize("model", [VAE, HVAE], ids=["vae", "hvae"])
def test_only_encoder_parameters_change(vae_params, model):
    """After the per-example optimisation every generative parameter is bit-identical to the trained one."""
    params = vae_params if model is VAE else _random_hvae_params()
    fit = jax.jit(optimise_encoder, static_argnums=(0, 1, 2, 3))
    fitted = fit(model, 3, LR, WD, params, _images(1)[0], jax.random.key(5))
    assert jax.tree.structure(fitted) == jax.tree.structure(dict(params))
    encoder_modules = VAE_ENCODER if model is VAE else HVAE_ENCODER
    changed = set()
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(fitted), jax.tree.leaves(params)):
        module = "/".join(str(k.key) for k in path[:2])
        if module in encoder_modules:
            changed |= {module} if not np.array_equal(a, b) else set()
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"generative parameter {jax.tree_util.keystr(path)} moved")
    assert changed == encoder_modules   # every part of the inference network was fitted


def test_scorer_scores_every_example_in_bits_per_dim(vae_params):
    images = _images(5, seed=3)
    scorer = LikelihoodRegretScorer(VAE, num_samples=2, batch_size=4, seed=7, num_steps=3, learning_rate=LR)
    scores = scorer.score_all(scorer.fit(vae_params, images), images)
    assert set(scores) == {"likelihood_regret", "regret_nll_before", "regret_nll_after"}
    assert all(v.shape == (5,) and np.all(np.isfinite(v)) for v in scores.values())
    keys = example_keys(jax.random.key(7), np.arange(5))
    before = bits_per_dim(-VAE.log_prob(vae_params, images, keys, 2), 64)
    np.testing.assert_allclose(scores["regret_nll_before"], before, rtol=1e-5)
    np.testing.assert_allclose(scores["likelihood_regret"], scores["regret_nll_before"] - scores["regret_nll_after"],
                               rtol=1e-6, atol=1e-7)


def test_models_without_an_encoder_are_refused(vae_params):
    from oodgen.models.pixelcnn import PixelCNNPPModel
    with pytest.raises(OodgenError, match="likelihood_regret needs an encoder .*this pixelcnn models 8-bit"):
        LikelihoodRegretScorer(PixelCNNPPModel(image_shape=(8, 8, 1)))
    with pytest.raises(OodgenError, match="likelihood_regret needs an encoder"):
        regret_per_example(PixelCNNPPModel(image_shape=(8, 8, 1)), 1, LR, WD, 1, vae_params, _images(1),
                           jax.random.split(jax.random.key(0), 1))
    with pytest.raises(OodgenError, match="no 'encoder' group"):
        split_encoder(VAE, {"inference": vae_params["encoder"], "decoder": vae_params["decoder"]})
    with pytest.raises(OodgenError, match="num_steps"):
        LikelihoodRegretScorer(VAE, num_steps=-1)
