"""bench/msma_steps.py: stages resume, and the per-noise-level and log-norm AUROCs it tables are those of the
features (checked here with scikit-learn on the model's own features)."""

import json

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from bench import msma_steps
from oodgen.evaluation.harness import load_eval_sets, load_fit_images
from oodgen.training.restore import load_trained_model

TINY = ("--config.model.num_filters=4", "--config.model.num_sigmas=3", "--config.train.batch_size=8",
        "--config.train.warmup_steps=1", "--config.train.checkpoint_every=2", "--config.train.log_every=2",
        "--config.data.max_train_examples=256", "--config.data.num_validation=64", "--config.eval.max_examples=24",
        "--config.eval.max_fit_examples=40", "--config.eval.batch_size=24",
        "--config.eval.msma.density_options.gmm.n_components=[1,2]", "--config.eval.msma.density_options.gmm.folds=2",
        "--config.eval.ood=mnist,constant")


def test_stages_table_per_sigma_and_log_norm_aurocs(tmp_path, monkeypatch):
    written = {}
    monkeypatch.setattr(msma_steps, "write_section", lambda name, body: written.update({name: body}))
    argv = ["msma_steps", "--steps", "2,4", "--workdir", str(tmp_path), "--section", "mine",
            *(f"--override={o}" for o in TINY)]
    monkeypatch.setattr("sys.argv", argv)
    msma_steps.main()
    body = written["mine"]
    assert "--override=--config.model.num_filters=4" in body

    stored = json.loads((tmp_path / "eval_4" / "feature_aurocs.json").read_text())
    config = msma_steps.stage_config(4, TINY)
    _, model, params = load_trained_model(tmp_path)
    sets = load_eval_sets(config)
    test, mnist = (np.asarray(model.msma_features(params, sets[k])) for k in (config.data.test, "mnist"))
    for i, value in enumerate(stored["per_sigma"].values()):
        assert abs(value - roc_auc_score(np.r_[np.zeros(len(test)), np.ones(len(mnist))],
                                         np.r_[test[:, i], mnist[:, i]])) < 1e-6
    fit = np.log(np.asarray(model.msma_features(params, load_fit_images(config, tmp_path))))
    mean, std = fit.mean(axis=0), fit.std(axis=0)
    index = NearestNeighbors(n_neighbors=5).fit((fit - mean) / std)
    knn = lambda f: index.kneighbors((np.log(f) - mean) / std)[0][:, -1]   # noqa: E731
    expected = roc_auc_score(np.r_[np.zeros(len(test)), np.ones(len(mnist))], np.r_[knn(test), knn(mnist)])
    assert abs(stored["log_knn"]["mnist"] - expected) < 1e-6
    last_row = next(line for line in body.splitlines() if line.startswith("| 4 |") and "| mnist |" in line)
    assert last_row.rstrip(" |").endswith(f"{expected:.3f}")

    # a second run trains and scores nothing: every stage's results are read back
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    msma_steps.main()
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == mtimes
