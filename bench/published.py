"""AUROCs that papers and reference repositories report, with their exact sources, for the reproduction table
(`bench/reproduction.py`). Only numbers read in the source are here; where a number was looked for and not
found, `auroc` is None and `source` says where it was looked for. "secondary" marks a number that another
paper's table quotes for the method (its own table could not be read here); treat those with care.
"""

import dataclasses

LPATH = ("\"Inference, Fast and Slow: Reinterpreting VAEs for OOD Detection\" (LPath; anonymous ICLR submission), "
         "Table 1")
EIGENSCORE = "EigenScore (diffusion posterior-covariance OOD paper, 2025), Table 1 \"Main OOD detection results (AUROC)\""
MSMA_NOTEBOOK = "ahsanMah/msma `score_analyses/cifar10/cifar_vs_ood.ipynb`, saved output of `results[...][\"metrics\"]`, row SVHN, `roc_auc`"



def _lpath(row: str, column: str) -> str:
    """The source string of a number quoted in LPath's Table 1."""
    return f"secondary: {LPATH}, row \"{row}\", column {column}"


FMNIST_MNIST = "fashion_mnist→mnist"
FMNIST_HFLIP = "fashion_mnist→hflip"
FMNIST_VFLIP = "fashion_mnist→vflip"
CIFAR_SVHN = "cifar10→svhn"
PAIRS = (FMNIST_MNIST, FMNIST_HFLIP, FMNIST_VFLIP, CIFAR_SVHN)
# our OOD set (run_all's metrics.json key) for each pair that runs offline; CIFAR-10/SVHN need prepared TFDS copies
OUR_SET = {FMNIST_MNIST: "mnist", FMNIST_HFLIP: "fashion_mnist:test+hflip", FMNIST_VFLIP: "fashion_mnist:test+vflip"}


@dataclasses.dataclass(frozen=True)
class Method:
    """One detector of the design's table: the paper, and our (run_all entry, score) that implements it."""
    name: str
    paper: str
    entry: str | None            # bench.run_all entry whose model it runs on; None: not in the table
    score: str | None            # the score name in that entry's metrics.json


@dataclasses.dataclass(frozen=True)
class Published:
    method: str                  # Method.name
    pair: str                    # one of PAIRS
    auroc: float | None          # None: not found
    source: str                  # exact: paper + table + row, or repository + file; or where it was looked for


METHODS = (
    Method("log-likelihood", "Nalisnick et al. 2019", "vae", "log_likelihood"),
    Method("typicality (per example)", "Nalisnick et al. 2019b", "vae", "typicality"),
    Method("HVAE LLR^{>2}", "Havtorn et al. 2021", "hvae", "llr_k2"),
    Method("background likelihood ratio", "Ren et al. 2019", "pixelcnn", "background_ratio"),
    Method("full-vs-local ratio", "Zhang et al. 2021", "pixelcnn", "local_ratio"),
    Method("input complexity (PNG)", "Serrà et al. 2020", "pixelcnn", "input_complexity_png"),
    Method("layer-wise gradient norms", "Dauncey et al.", "vae", "grad_gaussian_log"),
    Method("MSMA, GMM", "Mahmood et al. 2021", "score_net", "msma_gmm"),
    Method("MSMA, 5-NN", "Mahmood et al. 2021", "score_net", "msma_knn"),
    Method("DDPM reconstruction", "Graham et al. 2023", "ddpm", "ddpm_reconstruction"),
    Method("likelihood regret", "Xiao et al. 2020", "vae", "likelihood_regret"),
    Method("WAIC, 5 members", "Choi et al. 2018", "vae_ensemble", "ensemble_waic"),
    Method("LL std over posterior samples", "Glazunov & Zarras 2022", "vae_ensemble", "ensemble_ll_std"),
)

_NOT_READ = "the paper's tables could not be read here (only its opening is stored); no results file in"

PUBLISHED = (
    Published("log-likelihood", FMNIST_MNIST, None,
              "not found: the paper reports histograms of bits/dim, no AUROC"),
    Published("typicality (per example)", FMNIST_MNIST, None, f"not found: {_NOT_READ} a reference repository"),
    Published("typicality (per example)", CIFAR_SVHN, 0.714, f"secondary: {EIGENSCORE}, row \"TT\", column C10 vs SVHN"),
    Published("HVAE LLR^{>2}", FMNIST_MNIST, 0.98,
              f"secondary: {LPATH}, row \"BIVA (Havtorn et al., 2021)\" (BIVA, not the 3-level HVAE), column "
              "FMNIST/MNIST; the HVAE's own table: not found (JakobHavtorn/hvae-oodd has no results files)"),
    Published("HVAE LLR^{>2}", CIFAR_SVHN, 0.89, f"secondary: {LPATH}, row \"BIVA (Havtorn et al., 2021)\", column "
                                                  "CIFAR10/SVHN"),
    Published("background likelihood ratio", FMNIST_MNIST, None,
              f"not found: {_NOT_READ} google-research/google-research `genomics_ood/images_ood` (eval.py prints "
              "the AUROC, stores none)"),
    Published("background likelihood ratio", CIFAR_SVHN, None, "not found: as for Fashion-MNIST"),
    Published("full-vs-local ratio", FMNIST_MNIST, None,
              f"not found: {_NOT_READ} zmtomorrow/NeLLoC (its notebooks report bits/dim only)"),
    Published("input complexity (PNG)", FMNIST_MNIST, None, f"not found: {_NOT_READ} any official repository"),
    Published("input complexity (PNG)", CIFAR_SVHN, None, "not found: as for Fashion-MNIST"),
    Published("layer-wise gradient norms", FMNIST_MNIST, None,
              f"not found: {_NOT_READ} SamD770/Generative-Models-Knowledge (README and plots/ scripts only)"),
    Published("MSMA, GMM", FMNIST_MNIST, None, "not found: ahsanMah/msma has CIFAR-10, SVHN and brain analyses only"),
    Published("MSMA, GMM", CIFAR_SVHN, 0.959, f"{MSMA_NOTEBOOK} of \"GMM\": 95.896 (%)"),
    Published("MSMA, 5-NN", FMNIST_MNIST, None, "not found: as for the GMM"),
    Published("MSMA, 5-NN", CIFAR_SVHN, 0.991, f"{MSMA_NOTEBOOK} of \"KD\" (5th-neighbour distance): 99.148 (%)"),
    Published("DDPM reconstruction", FMNIST_MNIST, 0.97,
              f"secondary: {LPATH}, row \"DDPM (Liu et al., 2023)\", column FMNIST/MNIST (the table's citations "
              "of the DDPM and LMD rows look swapped: LMD is Liu et al.'s); marksgraham/ddpm-ood stores no results"),
    Published("DDPM reconstruction", FMNIST_HFLIP, 0.65, _lpath("DDPM (Liu et al., 2023)", "FMNIST/Hflip")),
    Published("DDPM reconstruction", FMNIST_VFLIP, 0.89, _lpath("DDPM (Liu et al., 2023)", "FMNIST/Vflip")),
    Published("DDPM reconstruction", CIFAR_SVHN, 0.98, _lpath("DDPM (Liu et al., 2023)", "CIFAR10/SVHN")),
    Published("likelihood regret", FMNIST_MNIST, 0.99, _lpath("LR (Xiao et al., 2020)", "FMNIST/MNIST")),
    Published("likelihood regret", CIFAR_SVHN, 0.88, _lpath("LR (Xiao et al., 2020)", "CIFAR10/SVHN")),
    Published("WAIC, 5 members", FMNIST_MNIST, None, f"not found: {_NOT_READ} a reference repository"),
    Published("WAIC, 5 members", CIFAR_SVHN, 0.760, f"secondary: {EIGENSCORE}, row \"WAIC\", column C10 vs SVHN "
                                                     "(the ensemble behind it is not stated there)"),
    Published("LL std over posterior samples", FMNIST_MNIST, None,
              f"not found: {_NOT_READ} a code repository (none is in the index)"),
)
