"""The published results sgan_keras reproduces, and the training command of each run.

Each experiment is a training command at the source's full budget, the
number its source reports (the paper or tutorial named in ``published``), and
the supervised-only baseline (the same discriminator on the same labels,
``--supervised_only``) it is run beside. Names say the configuration:
``<preset>_<labels>`` plus any variant (``cifar10_dcgan_4000``: the SVHN
DCGAN networks on CIFAR-10, ``<dataset>_<networks>_<labels>``).
"""

import os
import sys

from absl import flags

from sgan_keras import config as config_lib
from sgan_keras import presets as presets_lib

EXPERIMENTS = {
    "mnist_blog_4000": {
        "flags": {"dataset": "mnist", "preset": "mnist_blog", "labels": 4000},
        "published": "98.9% test accuracy after 100 epochs (MNIST blog post)",
        "published_accuracy": 0.989,
    },
    "svhn_dcgan_1000": {
        "flags": {"dataset": "svhn", "preset": "svhn_dcgan", "labels": 1000},
        "published": "peak test accuracy a little above 71% (Udacity notebook; first "
                     "1,000 images, half the test split); 67-68% (SVHN write-up)",
        "published_accuracy": 0.71,
    },
    "mnist_gans_in_action_100": {
        "flags": {"dataset": "mnist", "preset": "mnist_gans_in_action", "labels": 100},
        "published": "about 89% test accuracy against about 70% supervised-only "
                     "(GANs in Action, 8,000 iterations)",
        "published_accuracy": 0.89,
    },
    "mnist_gans_in_action_100_unified": {
        "flags": {"dataset": "mnist", "preset": "mnist_gans_in_action", "labels": 100,
                  "procedure": "unified"},
        "published": "about 89% test accuracy against about 70% supervised-only "
                     "(GANs in Action, 8,000 iterations)",
        "published_accuracy": 0.89,
    },
    "mnist_blog_4000_unified": {
        "flags": {"dataset": "mnist", "preset": "mnist_blog", "labels": 4000,
                  "procedure": "unified"},
        "published": "98.9% test accuracy after 100 epochs (MNIST blog post)",
        "published_accuracy": 0.989,
    },
    "mnist_improved_gan_100": {
        # The source's procedure (presets.py): sigmoid generator, improved-gan's
        # Adam, weight-norm init on 500 images, lr 3e-3, EMA 0.9999.
        "flags": {"dataset": "mnist", "preset": "mnist_improved_gan", "labels": 100},
        "published": "93 +- 6.5 test errors of 10,000, i.e. 0.93% error (Salimans et al. 2016)",
        "published_accuracy": 1 - 0.0093,
    },
    "mnist_improved_gan_100_softplus": {
        # An earlier variant: the generator's output softplus instead of the
        # source's sigmoid (Sleepychord/ImprovedGAN-pytorch's choice).
        "flags": {"dataset": "mnist", "preset": "mnist_improved_gan", "labels": 100,
                  "generator_activation": "softplus"},
        "published": "93 +- 6.5 test errors of 10,000, i.e. 0.93% error (Salimans et al. 2016)",
        "published_accuracy": 1 - 0.0093,
    },
    "svhn_improved_gan_1000": {
        "flags": {"dataset": "svhn", "preset": "svhn_improved_gan", "labels": 1000},
        "published": "8.11 +- 1.3% test error (Salimans et al. 2016)",
        "published_accuracy": 1 - 0.0811,
    },
    "svhn_lecouat_1000": {
        "flags": {"dataset": "svhn", "preset": "svhn_lecouat", "labels": 1000},
        "published": "4.51 +- 0.22% test error (Lecouat et al. 2018)",
        "published_accuracy": 1 - 0.0451,
    },
    "cifar10_lecouat_4000": {
        "flags": {"dataset": "cifar10", "preset": "cifar10_lecouat", "labels": 4000},
        "published": "14.45 +- 0.21% test error (Lecouat et al. 2018)",
        "published_accuracy": 1 - 0.1445,
    },
    "cifar10_dcgan_4000": {
        # The svhn_dcgan networks (Udacity SVHN notebook / SVHN write-up) on real
        # CIFAR-10, with the preset's procedure, the notebook's: the first 4,000
        # images labeled and masked within one batch, both updates from one
        # forward pass, lr x 0.9 each epoch. No SVHN can be downloaded where this
        # package is developed, so this is the closest real-data check of the
        # SVHN tutorials' code path.
        "flags": {"dataset": "cifar10", "preset": "svhn_dcgan", "labels": 4000},
        "published": "no published CIFAR-10 figure for these networks; the SVHN "
                     "tutorials report about 71% on SVHN with 1,000 labels",
        "published_accuracy": None,
    },
    "cifar10_dcgan_4000_unified": {
        # The same networks with the package's unified procedure (balanced
        # labels, a separate labeled batch, sequential updates): the first
        # runs, made before the preset took the notebook's own procedure.
        "flags": {"dataset": "cifar10", "preset": "svhn_dcgan", "labels": 4000,
                  "procedure": "unified"},
        "published": "no published CIFAR-10 figure for these networks; the SVHN "
                     "tutorials report about 71% on SVHN with 1,000 labels",
        "published_accuracy": None,
    },
    "cifar10_improved_gan_4000": {
        "flags": {"dataset": "cifar10", "preset": "cifar10_improved_gan", "labels": 4000},
        "published": "18.63 +- 2.32% test error (Salimans et al. 2016)",
        "published_accuracy": 1 - 0.1863,
    },
}


def run_directory(runs_dir, name, kind, seed, budget):
    """Where a run trains: by experiment, kind and seed, and for a shortened
    budget by that budget too, so that a finished run is reused only for the
    budget it ran (``run.py`` does not train a run that has its export).
    A run's name leaves out the flags it does not train with
    (:func:`flags_not_trained`), so a GAN-only override reuses its baseline,
    and a baseline-only one its SGAN run."""
    dropped = flags_not_trained(supervised_only=kind == "baseline")
    budget = {key: value for key, value in budget.items() if key not in dropped}
    leaf = f"{kind}_seed{seed}"
    if budget:
        leaf += "".join(f"_{key}{value}" for key, value in budget.items()).replace(os.sep, "-")
    return os.path.join(runs_dir, name, leaf)


# The trainer flags run.py sets itself for each run: --overrides cannot change them.
RUNNER_FLAGS = ("seed", "output_dir", "supervised_only", "data_dir")


def split_overrides(name, overrides):
    """``{flag: value}`` of ``--overrides`` -> (the ones that shape the run,
    the run-only ones: ``config.option(run_only=True)``, e.g.
    ``checkpoint_every_steps``). Only the first count as the budget and name
    the run's directory: the others change nothing a run computes, so a
    resumed run may change them. Raises ``ValueError`` for a name that is
    no trainer flag, one the experiment or the runner sets, or ``overwrite``."""
    options = {option.flag: option for option in config_lib.OPTIONS.values() if option.flag}
    shaping, run_only = {}, {}
    for flag, value in overrides.items():
        if flag not in options:
            raise ValueError(f"--overrides={flag}=...: the trainer has no --{flag}")
        if flag == "overwrite":     # each resume would remove the run and start it again
            raise ValueError("--overrides=overwrite=...: run.py resumes a stopped run with the "
                             "same command; move the run away to train it anew")
        if flag in RUNNER_FLAGS or flag in EXPERIMENTS[name]["flags"]:
            raise ValueError(f"--overrides={flag}=...: --{flag} is set by the experiment "
                             "or the runner (see experiments/definitions.py)")
        (run_only if options[flag].run_only else shaping)[flag] = value
    return shaping, run_only


def trainer_config(argv):
    """The :class:`~sgan_keras.config.Config` ``python -m sgan_keras.train``
    resolves from ``argv`` (a :func:`training_command`), read with the
    trainer's own flags (in a flag set of their own: run.py's share names)."""
    parsed = flags.FlagValues()
    config_lib.define_flags(parsed, preset_names=sorted(presets_lib.PRESETS))
    parsed(["sgan_keras.train", *argv[3:]])
    values = {name: parsed[name].value for name in config_lib.flag_names()}
    # As the trainer reads them (train.resolve_config): a leading ~ is the home directory.
    values.update({name: os.path.expanduser(values[name]) for name in ("data_dir", "output_dir")
                   if values.get(name)})
    return presets_lib.resolve(config_lib.overrides_from_flags(values))


def flags_not_trained(supervised_only):
    """The flags a run of one kind does not train with: the baseline drops those
    that only shape the GAN (``config.gan_only_flags()``), the SGAN those that
    act only on the baseline (``config.baseline_only_flags()``, e.g.
    ``baseline_epochs``), which the trainer refuses without ``--supervised_only``."""
    return config_lib.gan_only_flags() if supervised_only else config_lib.baseline_only_flags()


def training_command(name, seed, supervised_only, output_dir, budget, data_dir):
    """The ``python -m sgan_keras.train`` argv of one run of experiment ``name``.

    ``budget`` holds extra flags (``epochs``, ``steps_per_epoch``, overrides).
    Each kind drops the flags it does not train with (:func:`flags_not_trained`).
    """
    run_flags = dict(EXPERIMENTS[name]["flags"], seed=seed, output_dir=output_dir, **budget)
    dropped = flags_not_trained(supervised_only)
    run_flags = {key: value for key, value in run_flags.items() if key not in dropped}
    if supervised_only:
        run_flags["supervised_only"] = True
    if data_dir:
        run_flags["data_dir"] = data_dir
    argv = [sys.executable, "-m", "sgan_keras.train"]
    for key, value in run_flags.items():
        argv.append(f"--{key}" if value is True else f"--{key}={value}")
    return argv
