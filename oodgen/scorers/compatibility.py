"""Which scorer runs on which model: the table in the README, generated from the declarations.

  python -m oodgen.scorers.compatibility     # prints the Markdown table (tests check the README holds it)

A cell is "runs" when the model, with those settings, offers everything the scorer `requires`, else "—"
(refused in one line before any work).
"""

from oodgen.models import MODELS
from oodgen.models.capabilities import describe, missing
from oodgen.scorers import SCORERS

# (column label, model name, settings): every model, and each likelihood setting that changes what it offers.
MODEL_VARIANTS = (
    ("vae, bernoulli", "vae", {"likelihood": "bernoulli"}),
    ("vae, logistic", "vae", {"likelihood": "discretized_logistic_mixture"}),
    ("hvae, bernoulli", "hvae", {"likelihood": "bernoulli"}),
    ("hvae, logistic", "hvae", {"likelihood": "discretized_logistic_mixture"}),
    ("pixelcnn", "pixelcnn", {}),
    ("local_pixelcnn", "local_pixelcnn", {}),
    ("glow", "glow", {}),
    ("score_net", "score_net", {}),
    ("ddpm", "ddpm", {}),
)
NOTES = {
    "background_ratio": "and a reference model of the same data",
    "local_ratio": "and a local reference model of the same data",
    "ensemble": "trained with config.ensemble.size ≥ 2 or SWAG",
    "composed": "each feature's scorer must run on the model",
}


def compatibility() -> dict[str, dict[str, bool]]:
    """{scorer: {model column: whether the scorer runs on it}} from the declared requirements."""
    models = {label: MODELS[name](**settings) for label, name, settings in MODEL_VARIANTS}
    return {scorer: {label: not missing(cls.requires, model.capabilities) for label, model in models.items()}
            for scorer, cls in SCORERS.items()}


def markdown_table() -> str:
    """The README's scorer × model table: one row per scorer, what it needs, and a cell per model."""
    table = compatibility()
    labels = [label for label, _, _ in MODEL_VARIANTS]
    lines = ["| scorer | needs | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for scorer, cells in table.items():
        needs = "; ".join(describe(req) for req in SCORERS[scorer].requires) or "—"
        if scorer in NOTES:
            needs = f"{needs} ({NOTES[scorer]})" if SCORERS[scorer].requires else NOTES[scorer]
        lines.append(f"| `{scorer}` | {needs} | " + " | ".join("runs" if ok else "—" for ok in cells.values()) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
